"""The installed package: layout, type information that matches the runtime, lint."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import flightbear

CLIENT = Path(__file__).resolve().parents[1]


def test_native_module_is_private_and_abi3():
    native = flightbear._flightbear.__file__
    assert native is not None
    assert Path(native).name.startswith("_flightbear.abi3.")


def test_package_ships_type_information():
    package = Path(flightbear.__file__).parent
    assert (package / "py.typed").is_file()
    assert (package / "_flightbear.pyi").is_file()


def test_public_names_are_exported():
    for name in flightbear.__all__:
        assert hasattr(flightbear, name), name


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed")
def test_stubs_match_the_native_module():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "flightbear",
            "--mypy-config-file",
            str(CLIENT / "pyproject.toml"),
        ],
        capture_output=True,
        text=True,
        cwd=CLIENT / "tests",
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff not installed")
def test_python_code_is_ruff_clean():
    for command in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command], capture_output=True, text=True, cwd=CLIENT
        )
        assert done.returncode == 0, done.stdout + done.stderr
