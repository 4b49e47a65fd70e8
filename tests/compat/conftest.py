"""Compatibility suite: the real flightbear binary driven by clients we did not write.

Fixtures: the generated files with their independent expectations (``dataset``), one shared
server with every table (``server`` / ``uri``) and a factory for private servers (``launch``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.flight as flight
import pytest

# The shared test support (tests/support/flightbear_testing.py) is a plain module on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from compat_support import Dataset, build_dataset
from flightbear_testing import Server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes seconds to minutes (deselect: -m 'not slow')")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return build_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def server(dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server: every generated table, small batches so streams have many batches."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    running = Server([*dataset.args, "--batch-rows", "256", "--target-partitions", "4"], log)
    yield running
    alive = running.alive()
    running.stop()
    assert alive, f"the shared server died during the session:\n{running.log()}"


@pytest.fixture(scope="session")
def uri(server: Server) -> str:
    return server.uri


@pytest.fixture
def launch(dataset: Dataset, tmp_path: Path) -> Iterator[Any]:
    """Factory for private servers (tests that kill or signal them); all stopped at the end."""
    started: list[Server] = []

    def start(*extra: str, rust_log: str = "warn", tables: bool = True) -> Server:
        args = [*(dataset.args if tables else []), *extra]
        running = Server(args, tmp_path / f"server{len(started)}.log", rust_log=rust_log)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def flight_client(uri: str) -> Iterator[flight.FlightClient]:
    client = flight.FlightClient(uri)
    yield client
    client.close()
