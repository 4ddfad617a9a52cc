"""Reference suite: the Leaderboard's own code reads the results files of `w0sim eval --backend carla` on the devtest
routes, driven against the fake CARLA server (tests/fakes/carla_server.py), with the server dying mid-route.

Opt-in (`pytest -m carla_reference tests/reference`), with the reference venv of `scripts/carla_reference_env.sh`
(W0SIM_CARLA_REFERENCE_PYTHON; see test_leaderboard_statistics.py). The run: the 4 devtest routes, the server dying
at tick 60 (route 0) and restarted by `--carla-restart`; then the same command again. Checked:
- the first run's file is the Leaderboard's checkpoint of a crashed run (records up to the crashed route, progress
  [1, 4], entry Crashed): `merge_statistics.py` accepts it and `RouteIndexer.validate_and_resume` continues at the
  crashed route, as w0sim does;
- the second run drives only that route and completes the file: `merge_statistics.py` accepts it, entry Finished,
  and its global record, values and records are ours.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from metrics.leaderboard.results_io import resume_check
from tests.conftest import REPO_ROOT, shared_dir
from tests.reference.test_leaderboard_statistics import harness, needs_route_indexer, reference, reference_env  # noqa: F401

pytestmark = pytest.mark.carla_reference
DEVTEST_IDS = [f"RouteScenario_{i}_rep0" for i in range(4)]


def fake_eval(out, marker, *extra: str) -> tuple[int, dict]:
    fixtures = shared_dir() / "fixtures" / "carla"
    command = [sys.executable, "-m", "tests.carla_server.run_with_fake", *extra, "--", "eval", "--agent",
               "tests.carla_server.agents:RouteTracerAgent", "--split",
               f"carla:{fixtures / 'routes' / 'routes_devtest.xml'}", "--town-dir", str(fixtures / "maps"), "--backend",
               "carla", "--carla-fixed-delta", "0.1", "--carla-timeout", "2", "--carla-restart", f"touch {marker}",
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def merged(reference, path, tmp_path) -> dict:  # noqa: F811 - the fixture imported above
    out = tmp_path / f"merged-{path.stat().st_mtime_ns}.json"
    done = subprocess.run([reference["python"], str(reference["root"] / "scripts" / "merge_statistics.py"), "-f",
                           str(path), "-e", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=reference["cwd"], env=reference_env())
    assert done.returncode == 0, f"merge_statistics.py failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(out.read_text())


def test_the_leaderboard_reads_a_crashed_carla_run_and_its_completion(reference, tmp_path):  # noqa: F811
    if not (shared_dir() / "fixtures" / "carla" / "routes" / "routes_devtest.xml").is_file():
        pytest.skip("the shared CARLA fixtures are absent (set W0SIM_SHARED)")
    out, marker = tmp_path / "out", tmp_path / "restart"
    code, server = fake_eval(out, marker, "--inject", "die:60", "--restart-marker", str(marker))
    assert code == 1
    assert {k: server[k] for k in ("exit", "raised", "clean", "synchronous", "tm_synchronous", "actors")} == {
        "exit": 1, "raised": None, "clean": "", "synchronous": False, "tm_synchronous": False, "actors": 0}
    crashed = json.loads((out / "results.json").read_text())
    records = crashed["_checkpoint"]["records"]
    assert (crashed["entry_status"], crashed["_checkpoint"]["progress"]) == ("Crashed", [1, 4])
    assert [(r["route_id"], r["status"]) for r in records] == [("RouteScenario_0_rep0", "Failed - Simulation crashed")]
    theirs = merged(reference, out / "results.json", tmp_path)
    assert theirs["_checkpoint"]["records"] == records and theirs["_checkpoint"]["progress"] == [1, 4]
    assert resume_check(crashed, DEVTEST_IDS) == (0, "")
    if not reference["route_indexer"]:
        # The devtest file has no <scenarios> elements, which the 2.x RouteIndexer requires: the same ids in a 2.x file.
        routes = "".join(f'<route id="{i}" town="Town01"><waypoints><position x="0" y="{i}" z="0"/></waypoints>'
                         "<scenarios/></route>" for i in range(len(DEVTEST_IDS)))
        (tmp_path / "routes.xml").write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<routes>{routes}</routes>\n')
        resumed = harness(reference, "resume", tmp_path / "routes.xml", 1, out / "results.json")
        assert resumed == {"accepted": True, "index": 0, "total": 4}
    else:
        needs_route_indexer(reference)

    code, server = fake_eval(out, marker)
    assert code == 0 and server["clean"] == ""
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert sorted(row["ref"] for row in rows) == sorted(DEVTEST_IDS + ["RouteScenario_0_rep0"])  # only the crashed again
    results = json.loads((out / "results.json").read_text())
    theirs = merged(reference, out / "results.json", tmp_path)
    assert results["entry_status"] == theirs["entry_status"] == "Finished"
    assert theirs["_checkpoint"]["progress"] == results["_checkpoint"]["progress"] == [4, 4]
    assert theirs["_checkpoint"]["records"] == results["_checkpoint"]["records"]
    assert theirs["_checkpoint"]["global_record"] == results["_checkpoint"]["global_record"]
    assert (theirs["values"], theirs["labels"]) == (results["values"], results["labels"])
    print(f"\ndevtest on the fake server: crashed run {crashed['entry_status']} {crashed['_checkpoint']['progress']}, "
          f"completed run driving score {results['values'][0]} (merge_statistics.py: {theirs['values'][0]})")
