"""A scene whose agent could not be reached (a policy server that never answered) fails with a row marked `rerun`,
in every task, and the next run into the folder runs exactly those scenes again."""
from __future__ import annotations

import json

from agents.base import AgentUnavailable
from agents.constant_velocity import ConstantVelocityAgent
from agents.registry import AgentSpec
from scenarios.splits import SceneRef
from tests.w0sim.records import latency
from w0sim.closed_loop import drive_route, route_plan
from w0sim.one_shot import evaluate_scene
from w0sim.runner import SceneFailure, failed_row, run_split, run_task

REF = SceneRef("tok", family="straight", seed=0)
UNREACHABLE = AgentUnavailable("policy service h:1: drive failed: UNAVAILABLE: connection refused")


def _raises(error):
    def task(ref, index, agent):
        raise error
    return task


def test_a_failed_row_is_marked_rerun_only_when_asked():
    assert failed_row(REF, 3, "gone", rerun=True) == {"ref": "tok", "index": 3, "token": "tok", "family": "straight",
                                                      "valid": False, "reason": "gone", "rerun": True}
    assert "rerun" not in failed_row(REF, 3, "gone")


def test_a_task_whose_agent_is_unreachable_gives_a_rerun_row_and_other_errors_do_not():
    spec, agent = AgentSpec("constant_velocity"), ConstantVelocityAgent()
    assert run_task(_raises(UNREACHABLE), spec, REF, 0, agent) == failed_row(
        REF, 0, f"running the scene: AgentUnavailable: {UNREACHABLE}", rerun=True)
    try:
        raise SceneFailure("building agent egodriver:h:1 in its worker: unreachable") from UNREACHABLE
    except SceneFailure as failure:
        assert run_task(_raises(failure), spec, REF, 0, agent)["rerun"] is True
    assert "rerun" not in run_task(_raises(RuntimeError("no plan")), spec, REF, 0, agent)
    assert "rerun" not in run_task(_raises(SceneFailure("no scene")), spec, REF, 0, agent)


class Unreachable(ConstantVelocityAgent):
    def compute_trajectory(self, agent_input, world=None):
        raise UNREACHABLE


def test_a_one_shot_scene_and_a_route_whose_agent_is_unreachable_are_marked_rerun():
    row = evaluate_scene(REF, 0, Unreachable())
    assert (row["valid"], row["rerun"], row["reason"]) == (
        False, True, f"agent Unreachable planning: AgentUnavailable: {UNREACHABLE}")
    route = drive_route(route_plan("builtin:routes", 1)[0], 0, Unreachable())
    assert (route["record"]["status"], route["rerun"], route["latency"]) == ("Failed - Agent crashed", True, latency(1))
    assert route["reason"] == f"agent Unreachable planning decision 0 (t = 0.0 s): AgentUnavailable: {UNREACHABLE}"


def _row(ref, index, agent):
    return {"token": ref.token, "valid": True, "score": 1.0}


def test_the_next_run_runs_the_rerun_rows_again_and_keeps_every_other_row(tmp_path):
    refs = [SceneRef(f"t{i}", family="straight", seed=i) for i in range(4)]
    earlier = [{"ref": "t0", "index": 0, "token": "t0", "valid": True, "score": 0.5},
               failed_row(refs[1], 1, "unreachable", rerun=True),
               failed_row(refs[2], 2, "the agent crashed")]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in earlier))
    rows = run_split(refs, AgentSpec("constant_velocity"), _row, tmp_path, workers=1)
    assert rows == [earlier[0], {"ref": "t1", "index": 1, "token": "t1", "valid": True, "score": 1.0}, earlier[2],
                    {"ref": "t3", "index": 3, "token": "t3", "valid": True, "score": 1.0}]
