"""Shared pytest fixtures: where the read-only test data of ../shared lives, and skips when it is absent."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared folder (specs, fixtures): $W0SIM_SHARED, else ../shared beside the checkout."""
    return Path(os.environ.get("W0SIM_SHARED", REPO_ROOT.parent / "shared"))


def require_fixture(relative: str) -> Path:
    """Path of a file under shared/fixtures, or skip the test saying where it was looked for."""
    path = shared_dir() / "fixtures" / relative
    if not path.exists():
        pytest.skip(f"fixture {path} is absent (set W0SIM_SHARED to the folder holding fixtures/)")
    return path


@pytest.fixture(scope="session")
def golden_v1_1() -> dict:
    return json.loads(require_fixture("navsim_golden/golden_v1_1.json").read_text())


@pytest.fixture(scope="session")
def golden_v2_2() -> dict:
    return json.loads(require_fixture("navsim_golden/golden_v2_2.json").read_text())
