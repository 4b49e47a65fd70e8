"""The code blocks of README.md and client-py/README.md, run against a live server.

Every ```python and ```sql block runs unless an HTML comment right above it says
``<!-- doc-test: skip (why) -->``; a ```sh block runs only when the comment says
``<!-- doc-test: run -->`` (most shell blocks build, install or start things). The server serves
the tables the examples use (``sequences`` and ``samples``: the sample data; ``genome``,
``reads`` (FASTQ), ``orfs``), has a data root holding the files the examples name under
``/data/`` and an ingest directory. The blocks are rewritten only where they name places:
``/data/`` becomes the data root, ``127.0.0.1:50051``/``localhost:50051`` the server's address.
SQL blocks run statement by statement through ADBC; Python blocks run with ``pyarrow_table`` (a
small table to ingest) defined; shell blocks run with the ``flightbear`` binary on ``PATH`` and
``FLIGHTBEAR_ADDR`` set.
"""

from __future__ import annotations

import gzip
import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pytest

from flightbear_testing import Server, random_bases, server_binary

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "client-py" / "README.md"]
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[A-Za-z]*)")
DIRECTIVE = re.compile(r"<!--\s*doc-test:\s*(?P<what>run|skip)\b(?P<why>[^>]*)-->")


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    body: str
    directive: str | None

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}"

    def runs(self) -> bool:
        if self.directive == "skip":
            return False
        if self.lang in ("python", "sql"):
            return True
        return self.lang == "sh" and self.directive == "run"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, lang = match["indent"], match["lang"]
        end = i + 1
        while end < len(lines) and not lines[end].startswith(indent + "```"):
            end += 1
        above = lines[i - 1] if i > 0 else ""
        directive = DIRECTIVE.search(above)
        body = "\n".join(line[len(indent) :] for line in lines[i + 1 : end])
        doc = str(path.relative_to(ROOT))
        found.append(Block(doc, i + 1, lang, body, directive["what"] if directive else None))
        i = end + 1
    return found


ALL = [block for doc in DOCS for block in blocks(doc)]


def test_every_skipped_block_says_why() -> None:
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            match = DIRECTIVE.search(line)
            if match and match["what"] == "skip":
                assert match["why"].strip(), f"{doc}: {line} gives no reason"


def test_the_docs_have_blocks_to_run() -> None:
    assert sum(block.runs() for block in ALL) >= 10


def fasta(records: list[tuple[str, str]]) -> str:
    return "".join(f">{name}\n" + "".join(f"{s[i:i + 60]}\n" for i in range(0, len(s), 60))
                   for name, s in records)  # fmt: skip


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("docs")
    data = root / "data"
    (data / "assembly").mkdir(parents=True)
    rng = random.Random(12)
    # The region example reads chr7:55,019,017-55,211,628 and chrM: a chr7 that long is a
    # 1 kbp pattern repeated (55 MB), indexed like any genome.
    chunk = random_bases(rng, 1000)
    genome = [
        ("chr1", random_bases(rng, 5000) + "GAATTC" + random_bases(rng, 300)),
        ("chr7", chunk * 55_300),
        ("chrM", random_bases(rng, 16_569)),
    ]
    (data / "genome.fa").write_text(fasta(genome))
    indexed = subprocess.run([str(server_binary()), "index", str(data / "genome.fa")],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert indexed.returncode == 0, indexed.stderr
    orfs = [(f"orf{n}", "ATG" + random_bases(rng, 297) + "TAA") for n in range(3)]
    (data / "orfs.fa").write_text(fasta(orfs))
    reads = []
    for sample in ("S01", "S02", "S03"):
        for n in range(4):
            bases = random_bases(rng, 60)
            reads.append(f"@{sample}_r{n}\n{bases}\n+\n{'I' * len(bases)}\n")
    (data / "reads.fq").write_text("".join(reads))
    (data / "run1").mkdir()
    (data / "run1" / "lane1.fastq.gz").write_bytes(gzip.compress("".join(reads).encode()))
    (data / "reads.fa.gz").write_bytes(gzip.compress(fasta([("r1", "ACGT" * 30)]).encode()))
    (data / "assembly" / "contigs.fa.gz").write_bytes(
        gzip.compress(fasta([("contig1", random_bases(rng, 200_000))]).encode())
    )
    (data / "runs.csv").write_text("run,sample_id\nR1,S01\nR2,S02\n")
    sample = ROOT / "src" / "sample"
    shutil.copy(sample / "sequences.fa", data / "sequences.fa")
    shutil.copy(sample / "samples.csv", data / "samples.csv")
    tables = ["sequences=sequences.fa", "samples=samples.csv", "genome=genome.fa",
              "reads=reads.fq", "orfs=orfs.fa"]  # fmt: skip
    args = []
    for table in tables:
        name, file = table.split("=")
        args += ["--table", f"{name}={data / file}"]
    args += ["--data-root", str(root), "--ingest-dir", str(root / "ingest")]
    server = Server(args, root / "server.log")
    yield server, root
    server.stop()


def rewrite(text: str, server: Server, root: Path) -> str:
    address = server.uri.removeprefix("grpc://")
    text = text.replace("127.0.0.1:50051", address).replace("localhost:50051", address)
    return text.replace("/data/", f"{root}/data/")


def statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    without_comments = "\n".join(lines)
    return [s.strip() for s in without_comments.split(";") if s.strip()]


@pytest.mark.parametrize("block", [b for b in ALL if b.runs()], ids=lambda b: b.name)
def test_block_runs(block: Block, docs_server: Any) -> None:
    server, root = docs_server
    body = rewrite(block.body, server, root)
    if block.lang == "sql":
        with flightsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
            for statement in statements(body):
                cur.execute(statement)
                if cur.description:
                    cur.fetchall()
    elif block.lang == "python":
        namespace = {"pyarrow_table": pa.table({"read_id": ["seq0001"], "weight": [1.5]})}
        exec(compile(body, block.name, "exec"), namespace)
    else:
        env = dict(os.environ)
        env["PATH"] = f"{server_binary().parent}{os.pathsep}{env['PATH']}"
        env["FLIGHTBEAR_ADDR"] = server.uri.removeprefix("grpc://")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, f"{block.name}:\n{done.stdout}\n{done.stderr}"
