"""`flightbear index` (issue 11): the .fai and .gzi it writes are the ones samtools writes.

The oracle is samtools itself (htslib, through pysam): ``pysam.faidx`` indexes a copy of each
file, and ``pysam.FastaFile`` reads regions through the index flightbear wrote.
"""

from __future__ import annotations

import gzip
import random
import shutil
import subprocess
from pathlib import Path

import pysam
import pytest

from flightbear_testing import random_bases, server_binary


def index(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(server_binary()), "index", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def samtools_fai(path: Path, scratch: Path) -> str:
    """The .fai samtools writes for a copy of ``path``."""
    copy = scratch / f"samtools-{path.name}"
    shutil.copyfile(path, copy)
    pysam.faidx(str(copy))
    return (scratch / f"{copy.name}.fai").read_text()


def genome(rng: random.Random, newline: str = "\n") -> tuple[str, dict[str, str]]:
    """FASTA text with fixed-width records of many sizes, an empty record and a repeated name."""
    records: dict[str, str] = {}
    parts = []
    for n in range(40):
        name = f"chr{n}"
        sequence = random_bases(rng, rng.choice([1, 59, 60, 61, 1000, 25_000]), "ACGTNacgt")
        width = rng.choice([50, 60, 80])
        lines = [sequence[i : i + width] for i in range(0, len(sequence), width)]
        parts.append(f">{name} description {n}{newline}" + "".join(x + newline for x in lines))
        records[name] = sequence
        if n == 7:
            parts.append(f">empty{newline}")
        if n == 9:
            parts.append(f">chr3 again{newline}ACGT{newline}{newline}")
    return "".join(parts), records


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_plain_fai_is_byte_for_byte_samtools(tmp_path: Path, newline: str) -> None:
    text, _ = genome(random.Random(5), newline)
    path = tmp_path / "genome.fa"
    path.write_bytes(text.encode())
    done = index(path)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "(40 records)" in done.stdout
    assert "1 records without bases" in done.stderr and "'chr3'" in done.stderr
    assert (tmp_path / "genome.fa.fai").read_text() == samtools_fai(path, tmp_path)


def test_bgzf_index_serves_samtools_region_reads(tmp_path: Path) -> None:
    text, records = genome(random.Random(6))
    plain = tmp_path / "plain.fa"
    plain.write_text(text)
    path = tmp_path / "genome.fa.gz"
    pysam.tabix_compress(str(plain), str(path))
    done = index(path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "genome.fa.gz.gzi").exists()
    assert (tmp_path / "genome.fa.gz.fai").read_text() == samtools_fai(plain, tmp_path)
    rng = random.Random(7)
    with pysam.FastaFile(str(path)) as fasta:  # reads flightbear's .fai and .gzi
        for name, sequence in records.items():
            start = rng.randrange(len(sequence))
            end = rng.randrange(start, len(sequence)) + 1
            assert fasta.fetch(name, start, end) == sequence[start:end], name
            assert fasta.fetch(name) == sequence


def test_unindexable_files_fail_with_a_reason(tmp_path: Path) -> None:
    gz = tmp_path / "plain.fa.gz"
    gz.write_bytes(gzip.compress(b">a\nACGT\n"))
    ragged = tmp_path / "ragged.fa"
    ragged.write_text(">a\nACG\nACGT\nA\n")
    good = tmp_path / "good.fa"
    good.write_text(">a\nACGT\n")
    done = index(gz, ragged, tmp_path / "missing.fa", good)
    assert done.returncode == 1
    assert "plain gzip" in done.stderr and "bgzip" in done.stderr
    assert "ragged.fa: line 3" in done.stderr
    assert "missing.fa" in done.stderr
    # The good file is indexed anyway; the others leave nothing behind.
    assert (tmp_path / "good.fa.fai").read_text() == "a\t4\t3\t4\t5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["plain.fa.gz", "ragged.fa", "good.fa", "good.fa.fai"]
    )
