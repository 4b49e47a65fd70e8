"""Sequence functions (issue 11): gc_content, reverse_complement, translate, kmers.

Every answer is checked against Biopython (``Bio.SeqUtils.gc_fraction``,
``Bio.Seq.reverse_complement``, ``Bio.Seq.translate``) or plain Python slicing and
``collections.Counter`` over the records the dataset's FASTA oracle reads, through clients we
did not write (pyarrow.flight and ADBC).
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from Bio import BiopythonWarning
from Bio.Data import CodonTable
from Bio.Seq import Seq, reverse_complement
from Bio.Seq import translate as bio_translate
from Bio.SeqUtils import gc_fraction

from compat_support import Dataset
from flightbear_testing import Server
from server_probes import MemoryWatch, grpc_status, run_sql

MIB = 1 << 20
IUPAC = "ACGTURYSWKMBDHVNacgturyswkmbdhvn"


def query(uri: str, sql: str) -> dict[str, list[Any]]:
    client = flight.FlightClient(uri)
    try:
        return run_sql(client, sql).to_pydict()
    finally:
        client.close()


def reads_by_id(dataset: Dataset) -> dict[str, str]:
    return {record.id: record.sequence for record in dataset.fasta["reads"]}


def biopython_translate(sequence: str, table: int) -> str:
    with warnings.catch_warnings():
        # Biopython warns about a trailing partial codon, which both ignore.
        warnings.simplefilter("ignore", BiopythonWarning)
        return bio_translate(sequence, table=table)


def test_gc_content_matches_biopython(uri: str, dataset: Dataset) -> None:
    answer = query(uri, "SELECT id, gc_content(sequence) AS gc FROM reads")
    expected = reads_by_id(dataset)
    assert sorted(answer["id"]) == sorted(expected)
    checked_null = 0
    for record_id, gc in zip(answer["id"], answer["gc"]):
        sequence = expected[record_id]
        bases = sum(sequence.upper().count(b) for b in "ACGTUSW")
        if bases == 0:
            # No base that is certainly strong or weak: NULL here, 0 in Biopython.
            assert gc is None and gc_fraction(sequence) == 0
            checked_null += 1
        else:
            assert gc == pytest.approx(gc_fraction(sequence), abs=1e-12), record_id
    assert checked_null > 0  # the dataset has empty sequences


def test_reverse_complement_matches_biopython(uri: str, dataset: Dataset) -> None:
    answer = query(uri, "SELECT id, reverse_complement(sequence) AS rc FROM reads")
    expected = reads_by_id(dataset)
    mismatches = [
        i for i, rc in zip(answer["id"], answer["rc"]) if rc != reverse_complement(expected[i])
    ]
    assert mismatches == []
    assert len(answer["id"]) == len(expected)
    # Twice is the identity, and every IUPAC letter in either case keeps its case.
    assert query(uri, f"SELECT reverse_complement('{IUPAC}') AS rc")["rc"] == [
        reverse_complement(IUPAC)
    ]


@pytest.mark.parametrize("table", [1, 2, 11])
def test_translate_of_every_read_matches_biopython(uri: str, dataset: Dataset, table: int) -> None:
    answer = query(uri, f"SELECT id, translate(sequence, {table}) AS protein FROM reads")
    expected = reads_by_id(dataset)
    for record_id, protein in zip(answer["id"], answer["protein"]):
        assert protein == biopython_translate(expected[record_id], table), record_id
    assert query(uri, "SELECT translate('ATGGCCTGA') AS p")["p"] == ["MA*"]


def test_ambiguous_codons_in_every_genetic_code_match_biopython(uri: str) -> None:
    rng = random.Random(11)
    # Every IUPAC letter except X (which Biopython refuses in some codons; flightbear reads N).
    sequence = "".join(rng.choices(IUPAC, k=3 * 600))
    for table in sorted(CodonTable.unambiguous_dna_by_id):
        answer = query(uri, f"SELECT translate('{sequence}', {table}) AS p")["p"]
        assert answer == [biopython_translate(sequence, table)], f"table {table}"


def test_kmers_and_their_counts_match_python(uri: str, dataset: Dataset) -> None:
    expected = reads_by_id(dataset)
    answer = query(uri, "SELECT id, kmers(sequence, 5) AS k FROM reads")
    for record_id, kmers in zip(answer["id"], answer["k"]):
        seq = Seq(expected[record_id])
        assert kmers == [str(seq[i : i + 5]) for i in range(len(seq) - 4)], record_id
    counts = query(
        uri,
        "SELECT kmer, count(*) AS n FROM "
        "(SELECT unnest(kmers(upper(sequence), 4)) AS kmer FROM reads) GROUP BY kmer",
    )
    oracle: Counter[str] = Counter()
    for sequence in expected.values():
        upper = sequence.upper()
        oracle.update(upper[i : i + 4] for i in range(len(upper) - 3))
    assert dict(zip(counts["kmer"], counts["n"])) == dict(oracle)


def test_functions_work_through_adbc_with_nulls(uri: str) -> None:
    with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT gc_content(s), reverse_complement(s), translate(s, 11), kmers(s, 3) "
            "FROM (VALUES ('ATGCGA'), (NULL)) AS t(s) ORDER BY s NULLS LAST"
        )
        rows = cur.fetchall()
    assert rows[0] == (gc_fraction("ATGCGA"), "TCGCAT", "MR", ["ATG", "TGC", "GCG", "CGA"])
    assert rows[1] == (None, None, None, None)


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("SELECT translate(sequence, 7) FROM reads", "no genetic code 7"),
        ("SELECT translate('ATGAC-GGG')", "codon 'AC-' at position 4"),
        # Three bytes of the codon end inside '€': the message names whole characters.
        ("SELECT translate('ATGé€A')", "codon 'é€' at position 4"),
        ("SELECT kmers(sequence, 0) FROM reads", "k must be at least 1"),
        ("SELECT gc_content(1.5)", "gc_content"),
    ],
)
def test_bad_arguments_are_invalid_argument(uri: str, sql: str, named: str) -> None:
    with pytest.raises(pa.ArrowException) as raised:
        query(uri, sql)
    status = grpc_status(raised.value)
    assert status.code == "INVALID_ARGUMENT", status
    assert named in status.message
    assert query(uri, "SELECT translate('ATG') AS p")["p"] == ["M"]


def assert_kmers_refused(server: Server, sql: str, peak_bound: int) -> None:
    """`sql` ends with RESOURCE_EXHAUSTED naming kmers(), the server's resident memory staying
    below `peak_bound` meanwhile."""
    with MemoryWatch(server.process.pid, 1024 * MIB) as watch:
        with pytest.raises(pa.ArrowException) as raised:
            query(server.uri, sql)
    watch.assert_peak_below(peak_bound)
    status = grpc_status(raised.value)
    assert status.code == "RESOURCE_EXHAUSTED", status
    assert "kmers()" in status.message


def test_kmers_of_a_long_record_are_held_to_the_memory_limit(launch: Any, dataset: Dataset) -> None:
    """k-mers of a 5 Mbp record with k=1000 would be 5 GB: refused before they are built."""
    server: Server = launch("--memory-limit", "64MiB")
    sql = "SELECT count(*) AS n FROM big_record WHERE kmers(sequence, 1000) IS NOT NULL"
    assert_kmers_refused(server, sql, peak_bound=512 * MIB)
    small = next(r.sequence for r in dataset.fasta["big_record"] if r.id == "small000001")
    answer = query(
        server.uri, "SELECT kmers(sequence, 50) AS k FROM big_record WHERE id = 'small000001'"
    )
    assert answer["k"] == [[small[i : i + 50] for i in range(len(small) - 49)]]


def test_unnested_kmers_are_held_to_the_memory_limit(launch: Any, dataset: Dataset) -> None:
    """k=15 on the 5 Mbp record: a 95 MB list, and `unnest` copies it. The list fits a 128 MiB
    pool once but not twice over: refused, where it took the server to about 300 MiB before."""
    server: Server = launch("--memory-limit", "128MiB")
    longest = max(len(r.sequence) for r in dataset.fasta["big_record"])
    assert longest >= 5_000_000
    sql = (
        "SELECT count(*) AS n FROM (SELECT unnest(kmers(sequence, 15)) AS kmer FROM big_record "
        f"WHERE length(sequence) = {longest})"
    )
    assert_kmers_refused(server, sql, peak_bound=224 * MIB)
    # Shorter records still unnest: counted against Python's own windows.
    small = next(r.sequence for r in dataset.fasta["big_record"] if r.id == "small000001")
    answer = query(
        server.uri,
        "SELECT count(*) AS n FROM (SELECT unnest(kmers(sequence, 15)) AS kmer FROM big_record "
        "WHERE id = 'small000001')",
    )
    assert answer["n"] == [max(len(small) - 14, 0)]
