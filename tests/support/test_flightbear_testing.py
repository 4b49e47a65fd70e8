"""The shared test support itself: the FASTA oracle follows the README, the server starts."""

from __future__ import annotations

import gzip
import random
import socket
from pathlib import Path

import pytest

import flightbear_testing
from flightbear_testing import (
    FastaRecord,
    Server,
    ServerError,
    fasta_text,
    make_records,
    parse_fasta,
    read_delimited,
    read_fasta,
    split_header,
    write_samples_csv,
)

# ---------------------------------------------------------------------------------------------
# The FASTA oracle: README "FASTA tables", by hand-written cases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("id description", ("id", "description")),
        ("id\tdescription", ("id", "description")),
        ("id \t description  ", ("id", "description")),
        ("id\t\tmany  words\tinside \t", ("id", "many  words\tinside")),
        ("id", ("id", None)),
        ("id \t ", ("id", None)),
        ("", ("", None)),
        (" description", ("", "description")),
        ("\tdescription", ("", "description")),
        ("id|x,y=z description", ("id|x,y=z", "description")),
        # Only ASCII space and tab end the id.
        ("id\u00a0still-id rest", ("id\u00a0still-id", "rest")),
    ],
    ids=repr,
)
def test_header_id_ends_at_first_space_or_tab_and_description_is_trimmed_rest(
    header: str, expected: tuple[str, str | None]
) -> None:
    assert split_header(header) == expected


@pytest.mark.parametrize("text", [">\nACGT\n", ">a\nAC\n> description only\nGG\n"])
def test_a_header_without_a_name_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="no name"):
        parse_fasta(text)


def test_tab_separated_headers_in_a_file() -> None:
    text = ">a\tfirst one\nAC\n>b \t second  \nGT\n>c\t\nTT\n"
    assert parse_fasta(text) == [
        FastaRecord("a", "first one", "AC"),
        FastaRecord("b", "second", "GT"),
        FastaRecord("c", None, "TT"),
    ]


def test_crlf_line_ends_and_blank_lines_are_not_part_of_the_record() -> None:
    text = ">a x y\r\nAC\r\n\r\ngt\r\n\r\n>b\tz \r\nNNRY\r\n"
    assert parse_fasta(text) == [FastaRecord("a", "x y", "ACgt"), FastaRecord("b", "z", "NNRY")]


def test_records_may_have_empty_sequences_and_no_final_newline() -> None:
    assert parse_fasta(">a\n>b\n\n>c d\nAC") == [
        FastaRecord("a", None, ""),
        FastaRecord("b", None, ""),
        FastaRecord("c", "d", "AC"),
    ]


def test_empty_text_has_no_records() -> None:
    assert parse_fasta("") == []


def test_sequence_before_the_first_header_is_an_error() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_fasta("\nACGT\n>a\nAC\n")


def test_multi_member_gzip_is_read_to_the_end(tmp_path: Path) -> None:
    path = tmp_path / "packed.fa"  # recognised by its bytes, not by its name
    path.write_bytes(gzip.compress(b">a one\nAC\n") + gzip.compress(b">b\tTWO\r\nGT\r\n"))
    assert read_fasta(path) == [FastaRecord("a", "one", "AC"), FastaRecord("b", "TWO", "GT")]


@pytest.mark.parametrize(("newline", "blank_lines"), [("\n", False), ("\r\n", True)])
def test_generated_fasta_reads_back_as_its_records(newline: str, blank_lines: bool) -> None:
    rng = random.Random(5)
    records = make_records(rng, "r", 300, 200, empty_every=17)
    text = fasta_text(records, rng, newline, blank_lines)
    assert "\t" in text  # some generated headers are tab-separated
    assert parse_fasta(text) == records


def test_generated_sample_sheet_reads_back_with_quoted_fields(tmp_path: Path) -> None:
    path = tmp_path / "samples.csv"
    write_samples_csv(path, random.Random(3), 200)
    rows = read_delimited(path)
    assert len(rows) == 200
    assert list(rows[0]) == ["sample_id", "species", "read_count", "score"]
    assert {'B. "subtilis"', "H. sapiens, cell line"} <= {row["species"] for row in rows}


# ---------------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------------


def test_missing_server_binary_names_every_place_looked_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLIGHTBEAR_BIN", str(tmp_path / "bin" / "flightbear"))
    monkeypatch.setenv("CARGO_TARGET_DIR", str(tmp_path / "target"))
    monkeypatch.setattr(flightbear_testing, "REPO", tmp_path / "repo")
    with pytest.raises(ServerError, match="FLIGHTBEAR_BIN") as info:
        flightbear_testing.server_binary()
    for place in ["bin", "target", "repo"]:
        assert str(tmp_path / place) in str(info.value)


def test_server_serves_on_loopback_until_the_block_ends(tmp_path: Path) -> None:
    with Server([], tmp_path / "server.log") as server:
        assert server.alive()
        assert server.uri == f"grpc://127.0.0.1:{server.port}"
    assert not server.alive()


def test_server_retries_on_another_port_when_its_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1], flightbear_testing.free_port()])
        monkeypatch.setattr(flightbear_testing, "free_port", lambda: next(ports))
        with Server([], tmp_path / "server.log") as server:
            assert server.port != taken.getsockname()[1]
            assert server.alive()
