"""The CARLA backend against a real server: run when W0SIM_CARLA_HOST (and W0SIM_CARLA_PORT, default 2000) point at
a running CARLA 0.9.15 / 0.9.16 server, skipped with the reason otherwise. The same checks as the fake's, so what the
fake stands in for is checked against the real thing wherever a server is at hand."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, shared_dir

HOST = os.environ.get("W0SIM_CARLA_HOST")
PORT = int(os.environ.get("W0SIM_CARLA_PORT", "2000"))
pytestmark = pytest.mark.skipif(not HOST, reason="no CARLA server: set W0SIM_CARLA_HOST (and W0SIM_CARLA_PORT) to run "
                                                  "these tests against one (README: 'On a CARLA server')")


@pytest.fixture(scope="module")
def carla_fixtures():
    root = shared_dir() / "fixtures" / "carla"
    if not (root / "routes" / "routes_devtest.xml").is_file():
        pytest.skip(f"{root} has no routes/routes_devtest.xml (set W0SIM_SHARED to the folder holding fixtures/)")
    return root


def test_the_environment_passes_gymnasiums_checker_on_the_server(carla_fixtures):
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import sim.envs  # noqa: F401 - registers the ids

    env = gym.make("w0sim/Carla-v0", split=f"carla:{carla_fixtures / 'routes' / 'routes_devtest.xml'}",
                   town_dir=carla_fixtures / "maps", host=HOST, port=PORT, timeout_s=60.0)
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_eval_on_the_server_writes_the_leaderboards_results_file(carla_fixtures, tmp_path):
    out = tmp_path / "lb"
    done = subprocess.run([sys.executable, "-m", "w0sim.cli", "eval", "--agent", "pdm_lane_following", "--split",
                           f"carla:{carla_fixtures / 'routes' / 'routes_devtest.xml'}", "--town-dir",
                           str(carla_fixtures / "maps"), "--limit", "1", "--backend", "carla", "--carla-host", HOST,
                           "--carla-port", str(PORT), "--out", str(out)], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=1800)
    assert done.returncode in (0, 1), done.stderr
    import json

    results = json.loads((out / "results.json").read_text())
    assert results["entry_status"] in ("Finished", "Crashed")
    assert results["_checkpoint"]["progress"] == [1, 1]
