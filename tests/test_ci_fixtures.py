"""CI refuses to pass green without the shared fixtures: with CI=true and no fixtures folder the run fails, naming it."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pytest(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": ci, "W0SIM_SHARED": str(tmp_path / "no-shared")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "tests/test_layers.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_ci_without_the_shared_fixtures_fails_naming_the_folder(tmp_path):
    done = _pytest(tmp_path, "true")
    assert done.returncode != 0
    assert f"{tmp_path / 'no-shared' / 'fixtures'} is absent" in done.stdout + done.stderr


def test_outside_ci_the_same_run_passes(tmp_path):
    assert _pytest(tmp_path, "").returncode == 0
