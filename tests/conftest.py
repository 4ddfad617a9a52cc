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


def pytest_sessionstart(session) -> None:
    """Under CI (CI=true) the shared fixtures must be there: a run that skipped every test needing them would
    pass green without testing the official numbers."""
    fixtures = shared_dir() / "fixtures"
    if os.environ.get("CI", "").lower() == "true" and not fixtures.is_dir():
        pytest.exit(f"CI=true but the shared fixtures folder {fixtures} is absent: check out ../shared beside the "
                    "project (or point W0SIM_SHARED at the folder holding fixtures/)", returncode=2)


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
