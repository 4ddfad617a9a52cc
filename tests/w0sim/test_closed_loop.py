"""Closed-loop evaluation: Leaderboard results JSON per route split, route ids and repetitions as the Leaderboard's,
resume after a kill or from a Leaderboard results file, privileged drivers."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from agents.registry import AgentSpec
from metrics.leaderboard.results_io import CHECKPOINT_KEYS, TOP_LEVEL_KEYS, read_results
from scenarios.splits import SplitError, resolve_split
from tests.w0sim.wall_clock import records_without_wall_clock, without_wall_clock
from w0sim.closed_loop import evaluate_routes


def test_results_json_has_the_leaderboard_layout_and_resumes_to_the_same_file(tmp_path):
    full = evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), tmp_path / "full", limit=3, workers=1)
    data = read_results(tmp_path / "full" / "results.json")
    assert list(data) == list(TOP_LEVEL_KEYS) and list(data["_checkpoint"]) == list(CHECKPOINT_KEYS)
    records = data["_checkpoint"]["records"]
    assert [r["index"] for r in records] == [0, 1, 2] and data["_checkpoint"]["progress"] == [3, 3]
    assert len(data["values"]) == len(data["labels"]) == 15
    assert data["entry_status"] == "Finished" and data["eligible"] and data["sensors"] == ["sensor.speedometer"]
    # Killed after two routes, mid-way through writing the third row: running again drives the third only.
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "manifest.json").write_bytes((tmp_path / "full" / "manifest.json").read_bytes())  # written first
    lines = (tmp_path / "full" / "rows.jsonl").read_text().splitlines()
    (killed / "rows.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:30])
    again = evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), tmp_path / "killed", limit=3, workers=2)
    assert without_wall_clock(again) == without_wall_clock(full)
    assert again["_checkpoint"]["records"][:2] == full["_checkpoint"]["records"][:2]  # reused whole
    # The line cut short was ended before the third route's row: the log reads back whole.
    from w0sim.runner import read_rows

    assert sorted(read_rows(killed / "rows.jsonl")) == ["RouteScenario_0_rep0", "RouteScenario_1_rep0",
                                                        "RouteScenario_2_rep0"]


@pytest.mark.parametrize("agent", ["pdm_closed", "human"])
def test_privileged_agents_drive_from_the_live_simulation(tmp_path, agent):
    results = evaluate_routes("builtin:routes", AgentSpec(agent), tmp_path, limit=1, workers=1)
    record = results["_checkpoint"]["records"][0]
    assert record["scores"]["score_route"] > 0  # it moved along the route
    if agent == "pdm_closed":
        assert record["status"] in ("Perfect", "Completed")


def test_lane_following_pdm_completes_a_leaderboard_route_on_a_carla_town(tmp_path):
    """`w0sim eval --split carla:ROUTES.xml --town-dir DIR`: the first devtest route (Town01, 762 m, lights), driven
    cleanly by the lane-following planner (NAVSIM's PDM-Closed, which stops for red only, runs this red light)."""
    from tests.conftest import require_fixture

    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns (pip install 'w0sim[carla]')")
    routes = require_fixture("carla/routes/routes_devtest.xml")
    town_dir = require_fixture("carla/maps/Town01.xodr").parent
    results = evaluate_routes(f"carla:{routes}", AgentSpec("pdm_lane_following"), tmp_path, limit=1, workers=1,
                              split_options={"town_dir": town_dir})
    record = results["_checkpoint"]["records"][0]
    assert record["route_id"] == "RouteScenario_0_rep0" and record["scores"]["score_route"] == 100
    # The dense route is the Leaderboard's (CARLA's planner, tests/reference), its length measured as the LB does.
    from metrics.leaderboard.criteria import route_length
    from scenarios.leaderboard import densify, read_routes, town_for

    route = read_routes(routes)[0]
    dense = densify(town_for(str(town_dir), route.town), route)
    assert record["meta"]["route_length"] == round(route_length(dense.points), 3)
    assert not record["infractions"]["collisions_vehicle"] and not record["infractions"]["red_light"]


def test_a_route_that_cannot_run_is_listed_with_its_reason_and_the_run_exits_1(tmp_path):
    from typer.testing import CliRunner

    from scenarios.generator import generate_scene
    from scenarios.scene import save_scene
    from w0sim.cli import app

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    save_scene(generate_scene("straight", 1), scenes / "a.npz")
    (scenes / "b.npz").write_text("not a scene")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "--agent", "constant_velocity", "--split", str(scenes), "--closed-loop",
                                      "--workers", "1", "--out", str(out)])
    assert result.exit_code == 1, result.output
    # Routes are named by their place in the split, as the Leaderboard names them: a.npz is route 0, b.npz route 1.
    failed = json.loads((out / "failed_routes.json").read_text())
    assert [f["route_id"] for f in failed] == ["RouteScenario_1_rep0"] and "b.npz" in failed[0]["reason"]
    records = read_results(out / "results.json")["_checkpoint"]["records"]
    assert [r["route_id"] for r in records] == ["RouteScenario_0_rep0"]
    assert "failed RouteScenario_1_rep0" in " ".join(result.output.split())


def _markdown_tables(text: str) -> list[list[list[str]]]:
    """Each markdown table of `text` as rows of stripped cells, without its header separator line."""
    tables, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                rows.append([cell.strip() for cell in line.split("|")[1:-1]])
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def test_the_closed_loop_summary_has_a_mean_per_family_then_a_line_per_route(tmp_path):
    """summary.md: the families in the split's order, each with its route count; a family of one route has that
    route's driving score, route completion and penalty (builtin:routes' first two: one straight, one curve)."""
    from w0sim.evaluation import evaluate

    run = evaluate("builtin:routes", AgentSpec("constant_velocity"), tmp_path, limit=2, workers=1)
    assert (tmp_path / "summary.md").read_text() == run.summary
    assert (run.scores_file, run.total, run.unit) == (tmp_path / "results.json", 2, "routes")
    assert run.summary.splitlines()[0] == "# constant_velocity on builtin:routes (closed loop, Leaderboard 2.0 scoring)"
    by_family, by_route = _markdown_tables(run.summary)
    assert by_family[0] == ["family", "routes", "driving score", "route completion", "penalty"]
    assert by_route[0] == ["route", "status", "driving score", "route completion", "penalty"]
    assert [row[:2] for row in by_family[1:]] == [[ref.family, "1"] for ref in resolve_split("builtin:routes", 2)]
    assert [row[0] for row in by_route[1:]] == ["RouteScenario_0_rep0", "RouteScenario_1_rep0"]
    assert [row[2:] for row in by_family[1:]] == [row[2:] for row in by_route[1:]]


# ---- route ids, repetitions and resuming from a Leaderboard results file ------------------------------------------

PLAN_IDS = ["RouteScenario_0_rep0", "RouteScenario_0_rep1", "RouteScenario_1_rep0", "RouteScenario_1_rep1"]


@pytest.fixture(scope="module")
def two_routes_twice(tmp_path_factory):
    """builtin:routes, 2 routes x 2 repetitions, run whole (the reference for the resumed runs below)."""
    out = tmp_path_factory.mktemp("two_routes_twice")
    calls = []
    results = evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), out, limit=2, workers=2,
                              repetitions=2, progress=lambda done, total: calls.append((done, total)))
    return out, results, calls


def _rows(out):
    return [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]


def test_repetitions_run_in_the_leaderboards_order_under_its_ids(two_routes_twice):
    from w0sim.closed_loop import route_plan

    plan = route_plan("builtin:routes", limit=2, repetitions=3)
    assert [r.token for r in plan] == [f"RouteScenario_{i}_rep{k}" for i in (0, 1) for k in (0, 1, 2)]
    assert [r.repetition for r in plan] == [0, 1, 2, 0, 1, 2] and plan[0].seed == plan[2].seed != plan[3].seed
    out, results, calls = two_routes_twice
    records = results["_checkpoint"]["records"]
    assert [r["route_id"] for r in records] == PLAN_IDS and [r["index"] for r in records] == [0, 1, 2, 3]
    assert results["_checkpoint"]["progress"] == [4, 4] and results["entry_status"] == "Finished"
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]  # progress counts route x repetitions
    rows = {row["ref"]: row for row in _rows(out)}
    # Both repetitions drive the scene of the route (one generated scene token), with their own traffic.
    assert rows["RouteScenario_0_rep0"]["scene"] == rows["RouteScenario_0_rep1"]["scene"]
    assert rows["RouteScenario_0_rep0"]["scene"] != rows["RouteScenario_1_rep0"]["scene"]
    rep0, rep1 = (r.load() for r in route_plan("builtin:routes", limit=1, repetitions=2))
    assert rep0.route == rep1.route and not np.array_equal(rep0.agents.x, rep1.agents.x)
    assert np.array_equal(rep0.agents.x, resolve_split("builtin:routes", 1)[0].load().agents.x)


def test_a_driven_routes_row_names_its_route_and_the_scene_it_drove():
    """A route's row: the route id (repetition included) as its token, the family, and the token of the scene the
    route drove (one scene for every repetition of a route), beside the route's record under the same id."""
    from agents.constant_velocity import ConstantVelocityAgent
    from w0sim.closed_loop import drive_route, route_plan

    ref = route_plan("builtin:routes", limit=1, repetitions=2)[1]
    row = drive_route(ref, 1, ConstantVelocityAgent())
    assert (row["token"], row["family"]) == ("RouteScenario_0_rep1", ref.family)
    assert row["scene"] == ref.load().token == resolve_split("builtin:routes", 1)[0].load().token != row["token"]
    assert row["record"]["route_id"] == "RouteScenario_0_rep1" and row["record"]["index"] == 1


def test_a_carla_route_file_keeps_its_ids_and_draws_repetition_k_from_seed_k():
    from scenarios.splits import SceneRef, repeated

    ref = SceneRef("RouteScenario_7", "Town01", 0, route_file=Path("routes.xml"), route_id="7", town_dir=Path("."))
    assert [(r.token, r.seed) for r in (repeated(ref, k, f"RouteScenario_7_rep{k}") for k in (0, 1, 2))] == [
        ("RouteScenario_7_rep0", 0), ("RouteScenario_7_rep1", 1), ("RouteScenario_7_rep2", 2)]
    with pytest.raises(SplitError, match="fixed traffic"):
        repeated(SceneRef("a", path=Path("a.npz")), 1, "RouteScenario_0_rep1")


def test_repetitions_of_a_carla_route_file(tmp_path):
    from tests.conftest import require_fixture
    from w0sim.closed_loop import route_plan

    routes = require_fixture("carla/routes/routes_devtest.xml")
    plan = route_plan(f"carla:{routes}", limit=2, repetitions=2,
                      split_options={"town_dir": require_fixture("carla/maps/Town01.xodr").parent})
    assert [(r.token, r.route_id, r.seed) for r in plan] == [
        ("RouteScenario_0_rep0", "0", 0), ("RouteScenario_0_rep1", "0", 1),
        ("RouteScenario_1_rep0", "1", 0), ("RouteScenario_1_rep1", "1", 1)]


def test_carla_route_runs_are_named_by_the_route_files_ids_not_their_places(tmp_path):
    """The Leaderboard names a route by its id attribute: ids 12 and 5, in that order, give RouteScenario_12 and _5."""
    import re

    from tests.conftest import require_fixture
    from w0sim.closed_loop import route_plan

    text = require_fixture("carla/routes/routes_devtest.xml").read_text()
    ids = iter(["12", "5"])
    renamed = tmp_path / "renamed.xml"
    renamed.write_text(re.sub(r'(<route id=")(\d+)(")', lambda m: m[1] + next(ids, m[2]) + m[3], text))
    plan = route_plan(f"carla:{renamed}", limit=2,
                      split_options={"town_dir": require_fixture("carla/maps/Town01.xodr").parent})
    assert [(r.token, r.route_id) for r in plan] == [("RouteScenario_12_rep0", "12"), ("RouteScenario_5_rep0", "5")]


def _leaderboard_file(path, ids, done, total, entry_status="Started", crashed_last=False):
    """A results file as the Leaderboard writes it mid-run: the first `done` routes' records (here failed routes
    with nothing driven, which w0sim's constant-velocity driver never gives), progress [done, total]."""
    from metrics.leaderboard.results_io import build_results, write_results
    from metrics.leaderboard.route_record import build_route_record

    records = [build_route_record(i, ids[i], 0.0, 0.0, external_failure="Agent crashed") for i in range(done)]
    if crashed_last:
        records[-1] = build_route_record(done - 1, ids[done - 1], 0.0, 0.0, external_failure="Simulation crashed")
    results = build_results(records, total, progress=[done, total], validate=False)
    results.update(entry_status=entry_status, eligible=False, sensors=["carla_camera"])
    write_results(path, results)
    return records


@pytest.mark.parametrize("crashed", [False, True])
def test_a_run_resumes_from_a_leaderboard_results_file(tmp_path, two_routes_twice, crashed):
    """The Leaderboard's records are kept and only the remaining routes run (after a crash, the crashed one again)."""
    _, full, _ = two_routes_twice
    out = tmp_path / "out"
    out.mkdir()
    theirs = _leaderboard_file(out / "results.json", PLAN_IDS, 2, 4, "Crashed" if crashed else "Started", crashed)
    calls = []
    results = evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), out, limit=2, workers=1,
                              repetitions=2, progress=lambda done, total: calls.append((done, total)))
    kept = 1 if crashed else 2
    records = results["_checkpoint"]["records"]
    assert records[:kept] == theirs[:kept]
    assert records_without_wall_clock(records[kept:]) == records_without_wall_clock(full["_checkpoint"]["records"][kept:])
    assert calls == [(done, 4) for done in range(kept, 5)]  # only the remaining routes ran
    rows = _rows(out)
    assert [row["ref"] for row in rows] == PLAN_IDS[:kept] + PLAN_IDS[kept:]  # the adopted records became rows
    assert all(row["source"] == str(out / "results.json") for row in rows[:kept])


def test_our_partial_file_is_the_leaderboards_checkpoint_and_resumes_without_rows(tmp_path, two_routes_twice):
    """Killed after two routes: results.json holds them as the Leaderboard's checkpoint (Started, progress [2, 4]);
    with rows.jsonl gone, the run resumes from results.json alone and ends with the uninterrupted run's file."""
    from metrics.leaderboard.results_io import resume_check

    _, full, _ = two_routes_twice

    class Interrupted(Exception):
        pass

    def stop_after_two(done, total):
        if done == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), tmp_path, limit=2, workers=1,
                        repetitions=2, progress=stop_after_two)
    partial = read_results(tmp_path / "results.json")
    assert partial["entry_status"] == "Started" and partial["_checkpoint"]["progress"] == [2, 4]
    assert partial["eligible"] is False  # JSON false, as the Leaderboard writes a run in progress
    assert [r["route_id"] for r in partial["_checkpoint"]["records"]] == PLAN_IDS[:2]
    assert resume_check(partial, PLAN_IDS) == (2, "")
    (tmp_path / "rows.jsonl").unlink()
    again = evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), tmp_path, limit=2, workers=1,
                            repetitions=2)
    assert without_wall_clock(again) == without_wall_clock(full)


def test_more_repetitions_reuse_the_finished_routes_at_their_new_places(tmp_path, two_routes_twice):
    """rows.jsonl (the run's own log) is reused by route id whatever the plan; records take their place in the new
    run order (RouteScenario_1_rep0 was record 1 with one repetition, it is record 2 with two)."""
    _, full, _ = two_routes_twice
    once = evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), tmp_path, limit=2, workers=1)
    assert [r["route_id"] for r in once["_checkpoint"]["records"]] == ["RouteScenario_0_rep0", "RouteScenario_1_rep0"]
    calls = []
    twice = evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), tmp_path, limit=2, workers=1,
                            repetitions=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 4), (3, 4), (4, 4)] and without_wall_clock(twice) == without_wall_clock(full)


@pytest.mark.parametrize("change, message", [
    ({"total": 5}, "it plans 5 routes, this run 4"),
    ({"ids": ["RouteScenario_1_rep0", *PLAN_IDS[1:]]}, "record 0 is 'RouteScenario_1_rep0' where this run has "
                                                       "'RouteScenario_0_rep0'"),
    ({"entry_status": "Invalid"}, "its entry_status is Invalid"),
])
def test_a_results_file_of_other_routes_is_refused_and_left_alone(tmp_path, change, message):
    from typer.testing import CliRunner

    from w0sim.cli import app
    from w0sim.runner import RunError

    path = tmp_path / "results.json"
    _leaderboard_file(path, change.get("ids", PLAN_IDS), 2, change.get("total", 4), change.get("entry_status", "Started"))
    before = path.read_text()
    whole = f"{path} holds the results of another run: {message} (this run: {PLAN_IDS[0]} .. {PLAN_IDS[-1]}, 4 routes)"
    with pytest.raises(RunError, match=re.escape(whole)):
        evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), tmp_path, limit=2, workers=1, repetitions=2)
    result = CliRunner().invoke(app, ["eval", "--agent", "constant_velocity", "--split", "builtin:routes", "--limit",
                                      "2", "--repetitions", "2", "--workers", "1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert path.read_text() == before and not (tmp_path / "rows.jsonl").exists()


def test_repetitions_are_for_closed_loop_runs(tmp_path):
    from typer.testing import CliRunner

    from w0sim.cli import app

    def run(*args):
        result = CliRunner().invoke(app, ["eval", "--agent", "constant_velocity", "--workers", "1", "--out",
                                          str(tmp_path), *args])
        return result.exit_code, " ".join(result.output.split())

    code, output = run("--split", "builtin:navtest", "--limit", "1", "--repetitions", "2")
    assert code == 2 and "--repetitions 2: repetitions are closed-loop route runs" in output
    code, output = run("--split", "builtin:routes", "--limit", "1", "--repetitions", "0")
    assert code == 2 and "--repetitions" in output
    assert not list(tmp_path.iterdir())  # nothing ran


def test_records_carry_the_leaderboards_durations(two_routes_twice):
    """`duration_game`: the route's simulated seconds (decisions 0.5 s apart, the last one perhaps cut short);
    `duration_system`: its wall-clock seconds, the agent's planning included; the global record sums each."""
    import time

    from agents.constant_velocity import ConstantVelocityAgent
    from w0sim.closed_loop import drive_route, route_plan

    pause = 0.005

    class Slow(ConstantVelocityAgent):
        calls = 0

        def compute_trajectory(self, agent_input, world=None):
            Slow.calls += 1
            time.sleep(pause)
            return super().compute_trajectory(agent_input, world)

    start = time.monotonic()
    meta = drive_route(route_plan("builtin:routes", limit=1)[0], 0, Slow())["record"]["meta"]
    elapsed = time.monotonic() - start
    assert Slow.calls * pause <= meta["duration_system"] <= elapsed
    assert (Slow.calls - 1) * 0.5 < meta["duration_game"] <= Slow.calls * 0.5 + 1e-9
    _, results, _ = two_routes_twice
    records, total = results["_checkpoint"]["records"], results["_checkpoint"]["global_record"]["meta"]
    assert all(r["meta"]["duration_system"] > 0 and r["meta"]["duration_game"] > 0 for r in records)
    for key in ("duration_system", "duration_game"):
        assert total[key] == pytest.approx(sum(r["meta"][key] for r in records))
