"""Closed-loop evaluation: Leaderboard results JSON per route split, resume after a kill, privileged drivers."""

import json

import pytest

from agents.registry import AgentSpec
from metrics.leaderboard.results_io import CHECKPOINT_KEYS, TOP_LEVEL_KEYS, read_results
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
    lines = (tmp_path / "full" / "rows.jsonl").read_text().splitlines()
    (killed / "rows.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:30])
    again = evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), tmp_path / "killed", limit=3, workers=2)
    assert again == full


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
    assert record["route_id"] == "RouteScenario_0" and record["scores"]["score_route"] == 100
    # The dense route is the Leaderboard's (CARLA's planner, tests/reference), its length measured as the LB does.
    from scenarios.leaderboard import densify, read_routes, town_for

    route = read_routes(routes)[0]
    assert record["meta"]["route_length"] == round(densify(town_for(str(town_dir), route.town), route).length_m, 3)
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
    failed = json.loads((out / "failed_routes.json").read_text())
    assert [f["route_id"] for f in failed] == ["b"] and "b.npz" in failed[0]["reason"]
    records = read_results(out / "results.json")["_checkpoint"]["records"]
    assert [r["route_id"] for r in records] == ["a"]
    assert "failed b" in " ".join(result.output.split())
