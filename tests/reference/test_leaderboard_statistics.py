"""Reference suite: the Leaderboard's own code reads, merges, sorts and resumes from w0sim's results files, and
`w0sim eval` resumes from a results file the Leaderboard's code wrote.

Opt-in (`pytest -m carla_reference tests/reference`): it needs the venv made by `scripts/carla_reference_env.sh`,
named by W0SIM_CARLA_REFERENCE_PYTHON (skipped when it is unset, or when its python cannot import the Leaderboard's
`statistics_manager` and `checkpoint_tools` and scenario_runner's `traffic_events`; the resume tests also need the
Leaderboard's `route_indexer`, which imports scenario_runner's `srunner.scenarioconfigs`, so a full scenario_runner
checkout). The Leaderboard's checkout is named in the venv's `leaderboard-root` file. `leaderboard_harness.py` runs
its code, from a folder outside w0sim's checkout (w0sim's own `agents` package would shadow CARLA's).

The run: `w0sim eval --split builtin:routes --limit 2 --repetitions 2` (constant velocity, 4 route runs); then
- `scripts/merge_statistics.py` merges our results file (and our checkpoint of an interrupted run): it accepts them
  and its global record, values and records are ours;
- `StatisticsManager.sort_records` sorts our records (as we wrote them, and shuffled) into our order and indices;
- `RouteIndexer.validate_and_resume` accepts our checkpoint of an interrupted run and continues at the route we
  continue at (crafted checkpoints too: crashed, cut short, of other routes);
- a results file written by the Leaderboard's StatisticsManager as its evaluator writes it (2 of 4 routes, and a
  crashed run) makes `w0sim eval` keep its records and drive the remaining routes only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.w0sim.wall_clock import records_without_wall_clock

pytestmark = pytest.mark.carla_reference

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).with_name("leaderboard_harness.py")
PYTHON_VAR = "W0SIM_CARLA_REFERENCE_PYTHON"
ROUTES, REPETITIONS = 2, 2
IDS = [f"RouteScenario_{route}_rep{rep}" for route in range(ROUTES) for rep in range(REPETITIONS)]


def reference_env() -> dict:
    """The environment for the reference python: without PYTHONPATH, which could put w0sim's packages first."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """{"python", "root" (the Leaderboard checkout), "cwd" (outside w0sim), "route_indexer" (why not, or "")}."""
    python = os.environ.get(PYTHON_VAR)
    if not python:
        pytest.skip(f"{PYTHON_VAR} is not set: make the reference venv with scripts/carla_reference_env.sh and point "
                    f"{PYTHON_VAR} at its bin/python")
    cwd = tmp_path_factory.mktemp("leaderboard_cwd")
    try:
        check = subprocess.run([python, str(HARNESS), "imports"], capture_output=True, text=True, timeout=300,
                               cwd=cwd, env=reference_env())
    except OSError as err:
        pytest.skip(f"{PYTHON_VAR}={python} does not run: {err}")
    if check.returncode != 0:
        pytest.skip(f"{PYTHON_VAR}={python} cannot import the Leaderboard's statistics_manager and checkpoint_tools "
                    f"and scenario_runner's traffic_events: {check.stderr.strip().splitlines()[-1:]}")
    root_file = Path(python).parents[1] / "leaderboard-root"  # VENV/bin/python -> VENV (not the symlink's target)
    if not root_file.is_file():
        pytest.skip(f"{root_file} is absent: scripts/carla_reference_env.sh writes the Leaderboard checkout's path there")
    root = Path(root_file.read_text().strip())
    return {"python": python, "root": root, "cwd": cwd, **json.loads(check.stdout)}


def harness(reference: dict, *args) -> dict:
    done = subprocess.run([reference["python"], str(HARNESS), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=reference["cwd"], env=reference_env())
    assert done.returncode == 0, f"leaderboard_harness.py {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def needs_route_indexer(reference: dict) -> None:
    if reference["route_indexer"]:
        pytest.skip(f"the reference venv cannot import leaderboard.utils.route_indexer ({reference['route_indexer']}):"
                    " it needs a full scenario_runner checkout (v0.9.16) in scripts/carla_reference_env.sh")


def w0sim_eval(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "w0sim.cli", "eval", "--agent", "constant_velocity", "--split",
                           "builtin:routes", "--limit", str(ROUTES), "--repetitions", str(REPETITIONS), "--workers",
                           "2", "--out", str(out), *extra], capture_output=True, text=True, timeout=900, cwd=REPO)


def routes_xml(path: Path) -> Path:
    """A Leaderboard 2.x route file naming our routes (ids 0..ROUTES-1): RouteIndexer plans the runs from it."""
    routes = "".join(f'<route id="{i}" town="Town01"><waypoints><position x="0" y="{i}" z="0"/></waypoints>'
                     "<scenarios/></route>" for i in range(ROUTES))
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<routes>{routes}</routes>\n')
    return path


@pytest.fixture(scope="module")
def ours(tmp_path_factory, reference) -> dict:
    """Our whole run, and our checkpoint of the same run interrupted after two routes."""
    from agents.registry import AgentSpec
    from w0sim.closed_loop import evaluate_routes

    out = tmp_path_factory.mktemp("w0sim_eval")
    done = w0sim_eval(out)
    assert done.returncode == 0, f"w0sim eval failed:\n{done.stdout}\n{done.stderr}"
    interrupted = tmp_path_factory.mktemp("w0sim_interrupted")

    class Interrupted(Exception):
        pass

    def stop_after_two(count, total):
        if count == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), interrupted, limit=ROUTES, workers=1,
                        repetitions=REPETITIONS, progress=stop_after_two)
    return {"full": out / "results.json", "partial": interrupted / "results.json",
            "results": json.loads((out / "results.json").read_text())}


def test_our_ids_and_order_are_the_leaderboards(ours):
    records = ours["results"]["_checkpoint"]["records"]
    assert [r["route_id"] for r in records] == IDS and [r["index"] for r in records] == list(range(len(IDS)))


def test_merge_statistics_accepts_our_file_and_computes_our_global_record(reference, ours, tmp_path):
    merged = tmp_path / "merged.json"
    done = subprocess.run([reference["python"], str(reference["root"] / "scripts" / "merge_statistics.py"),
                           "-f", str(ours["full"]), "-e", str(merged)], capture_output=True, text=True, timeout=300,
                          cwd=reference["cwd"], env=reference_env())
    assert done.returncode == 0, f"merge_statistics.py failed:\n{done.stdout}\n{done.stderr}"
    theirs, results = json.loads(merged.read_text()), ours["results"]
    print(f"\nmerge_statistics.py on our file: entry {theirs['entry_status']}, progress "
          f"{theirs['_checkpoint']['progress']}, driving score {theirs['values'][0]} (ours {results['values'][0]})")
    assert theirs["_checkpoint"]["global_record"] == results["_checkpoint"]["global_record"]
    assert theirs["_checkpoint"]["records"] == results["_checkpoint"]["records"]
    assert theirs["_checkpoint"]["progress"] == results["_checkpoint"]["progress"] == [4, 4]
    assert (theirs["entry_status"], theirs["values"], theirs["labels"]) == ("Finished", results["values"],
                                                                           results["labels"])


def test_merge_statistics_accepts_our_checkpoint_of_an_interrupted_run(reference, ours, tmp_path):
    merged = tmp_path / "merged.json"
    done = subprocess.run([reference["python"], str(reference["root"] / "scripts" / "merge_statistics.py"),
                           "-f", str(ours["partial"]), "-e", str(merged)], capture_output=True, text=True,
                          timeout=300, cwd=reference["cwd"], env=reference_env())
    assert done.returncode == 0, f"merge_statistics.py failed:\n{done.stdout}\n{done.stderr}"
    theirs, partial = json.loads(merged.read_text()), json.loads(ours["partial"].read_text())
    assert theirs["entry_status"] == "Started" and theirs["_checkpoint"]["progress"] == [2, 4]
    assert theirs["_checkpoint"]["records"] == partial["_checkpoint"]["records"]


@pytest.mark.parametrize("seed", [-1, 0, 1])
def test_sort_records_keeps_our_order(reference, ours, seed):
    """As we wrote them (seed -1) and shuffled: the Leaderboard's sort gives our order and our indices."""
    sorted_records = harness(reference, "sort", ours["full"], seed)["records"]
    assert sorted_records == [[r["route_id"], r["index"]] for r in ours["results"]["_checkpoint"]["records"]]


def test_the_leaderboard_resumes_our_checkpoint_where_we_do(reference, ours, tmp_path):
    from metrics.leaderboard.results_io import resume_check

    needs_route_indexer(reference)
    routes = routes_xml(tmp_path / "routes.xml")
    partial = json.loads(ours["partial"].read_text())
    assert partial["entry_status"] == "Started" and partial["_checkpoint"]["progress"] == [2, 4]
    theirs = harness(reference, "resume", routes, REPETITIONS, ours["partial"])
    print(f"\nRouteIndexer on our checkpoint: {theirs}; ours: {resume_check(partial, IDS)}")
    assert theirs == {"accepted": True, "index": 2, "total": 4} and resume_check(partial, IDS) == (2, "")
    finished = harness(reference, "resume", routes, REPETITIONS, ours["full"])
    assert finished == {"accepted": True, "index": 4, "total": 4}
    assert resume_check(ours["results"], IDS) == (4, "")


@pytest.mark.parametrize("case", ["crashed", "cut_short", "other_routes", "other_count", "invalid"])
def test_our_resume_rule_is_the_route_indexers(reference, ours, tmp_path, case):
    """Checkpoints made from our interrupted run's: where the Leaderboard and w0sim continue, or that both refuse."""
    from metrics.leaderboard.results_io import resume_check

    needs_route_indexer(reference)
    data = json.loads(ours["partial"].read_text())
    checkpoint = data["_checkpoint"]
    if case == "crashed":
        data["entry_status"] = "Crashed"
    elif case == "cut_short":
        checkpoint["progress"] = [3, 4]
    elif case == "other_routes":
        checkpoint["records"][1]["route_id"] = "RouteScenario_1_rep0"
    elif case == "other_count":
        checkpoint["progress"] = [2, 6]
    else:
        data["entry_status"] = "Invalid"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data, indent=4))
    theirs = harness(reference, "resume", routes_xml(tmp_path / "routes.xml"), REPETITIONS, path)
    index, mismatch = resume_check(data, IDS)
    assert theirs["accepted"] == (not mismatch) and theirs["index"] == index
    assert case not in ("crashed", "cut_short") or (theirs["accepted"] and index == 1)


@pytest.mark.parametrize("crash", [False, True])
def test_w0sim_eval_resumes_from_a_file_the_leaderboard_wrote(reference, ours, tmp_path, crash):
    """The Leaderboard's StatisticsManager writes 2 of 4 routes (failed, nothing driven: records w0sim's run never
    gives); `w0sim eval` keeps them and drives the other routes (after a crash, the crashed route again)."""
    from metrics.leaderboard.results_io import resume_check

    out = tmp_path / "out"
    out.mkdir()
    written = harness(reference, "leaderboard-run", out / "results.json", len(IDS), 2, int(crash), *IDS)["records"]
    leaderboard_file = json.loads((out / "results.json").read_text())
    kept = 1 if crash else 2
    assert resume_check(leaderboard_file, IDS) == (kept, "")
    if not reference["route_indexer"]:
        their_index = harness(reference, "resume", routes_xml(tmp_path / "routes.xml"), REPETITIONS,
                              out / "results.json")["index"]
        assert their_index == kept
    done = w0sim_eval(out)
    # The kept records are failed routes ("Agent crashed"): the run says so and exits 1, as any run with failures.
    assert done.returncode == 1 and f"{kept} of {len(IDS)} routes failed" in done.stdout, \
        f"w0sim eval:\n{done.stdout}\n{done.stderr}"
    results = json.loads((out / "results.json").read_text())
    records = results["_checkpoint"]["records"]
    assert records[:kept] == written[:kept]  # the Leaderboard's records, as it wrote them
    assert records_without_wall_clock(records[kept:]) == records_without_wall_clock(
        ours["results"]["_checkpoint"]["records"][kept:])  # the routes w0sim drove
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [row["ref"] for row in rows if "source" in row] == IDS[:kept]
    assert sorted(row["ref"] for row in rows if "source" not in row) == IDS[kept:]  # only these were driven
    print(f"\nresumed from the Leaderboard's file ({'crashed' if crash else 'started'}): kept {IDS[:kept]}, drove "
          f"{IDS[kept:]}; entry {results['entry_status']}, driving score {results['values'][0]}")
