"""Closed-loop glue pinned whole: each route's row and reason, the records adopted from a Leaderboard file, the partial
and final results.json, failed_routes.json, the manifest, the failures `w0sim eval` reports and the summary markdown."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from agents.base import Agent, SensorConfig
from agents.constant_velocity import ConstantVelocityAgent
from agents.registry import AgentSpec
from metrics.leaderboard.results_io import build_results, write_results
from metrics.leaderboard.route_record import build_route_record
from scenarios.splits import SplitError
from sim.state import Trajectory, TrajectorySampling
from tests.w0sim.records import latency, scored_record
from w0sim import __version__, closed_loop
from w0sim.closed_loop import (
    CRASH_STATUSES,
    agent_sensors,
    closed_loop_manifest,
    drive_route,
    evaluate_routes,
    results_to_adopt,
    route_failures,
    route_plan,
    routes_markdown,
)
from w0sim.runner import MANIFEST_FORMAT, RunError, SceneFailure

PLAN_IDS = ["RouteScenario_0_rep0", "RouteScenario_0_rep1", "RouteScenario_1_rep0", "RouteScenario_1_rep1"]
NO_INFRACTIONS = {key: [] for key in (
    "collisions_layout", "collisions_pedestrian", "collisions_vehicle", "red_light", "stop_infraction",
    "outside_route_lanes", "min_speed_infractions", "yield_emergency_vehicle_infractions", "scenario_timeouts",
    "route_dev", "vehicle_blocked", "route_timeout")}


class SensorAgent(Agent):
    """An agent that only says what it sees (`cameras`, `privileged` set per instance or subclass)."""

    cameras = False

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig(cameras=self.cameras)

    def compute_trajectory(self, agent_input, world=None):
        raise AssertionError("not driven in these tests")


class CameraPrivilegedAgent(SensorAgent):
    cameras = True
    privileged = True


def _agent(cameras: bool, privileged: bool) -> SensorAgent:
    agent = SensorAgent()
    agent.cameras, agent.privileged = cameras, privileged
    return agent


# ---- agent_sensors, route_plan, closed_loop_manifest ---------------------------------------------------------------

@pytest.mark.parametrize("cameras, privileged, sensors", [
    (False, False, ["sensor.speedometer"]),
    (True, False, ["sensor.speedometer", "sensor.camera.rgb"]),
    (False, True, ["sensor.speedometer", "sensor.opendrive_map"]),
    (True, True, ["sensor.speedometer", "sensor.camera.rgb", "sensor.opendrive_map"]),
])
def test_the_results_sensors_are_the_speedometer_then_the_camera_then_the_map(cameras, privileged, sensors):
    assert agent_sensors(_agent(cameras, privileged)) == sensors


@pytest.mark.parametrize("repetitions", [0, -2])
def test_fewer_than_one_repetition_is_refused_naming_the_count(repetitions):
    with pytest.raises(RunError) as err:
        route_plan("builtin:routes", 1, repetitions)
    assert str(err.value) == f"repetitions must be at least 1, got {repetitions}"


def test_a_plan_takes_every_route_of_the_split_once_by_default():
    plan = route_plan("builtin:routes")
    assert [ref.token for ref in plan] == [f"RouteScenario_{i}_rep0" for i in range(50)]
    assert [ref.repetition for ref in plan] == [0] * 50


def test_a_plan_runs_each_routes_repetitions_one_after_another_with_its_family_and_seed():
    plan = route_plan("builtin:routes", 2, 3)
    assert [(ref.token, ref.family, ref.seed, ref.repetition) for ref in plan] == [
        ("RouteScenario_0_rep0", "straight", 3000009, 0), ("RouteScenario_0_rep1", "straight", 3000009, 1),
        ("RouteScenario_0_rep2", "straight", 3000009, 2), ("RouteScenario_1_rep0", "curve", 3000010, 0),
        ("RouteScenario_1_rep1", "curve", 3000010, 1), ("RouteScenario_1_rep2", "curve", 3000010, 2)]


def test_the_split_options_reach_the_split():
    with pytest.raises(SplitError) as err:
        route_plan("builtin:routes", 1, 1, {"scene_filter": "filter.yaml"})
    assert str(err.value) == "a scene filter applies to navsim: splits only, not to 'builtin:routes'"


def test_carla_routes_are_named_by_their_file_ids_and_repetition_k_draws_seed_k(route_file):
    routes, towns = route_file
    plan = route_plan(f"carla:{routes}", None, 2, {"town_dir": towns})
    assert [(ref.token, ref.route_id, ref.seed, ref.repetition) for ref in plan] == [
        ("RouteScenario_12_rep0", "12", 0, 0), ("RouteScenario_12_rep1", "12", 1, 1),
        ("RouteScenario_5_rep0", "5", 0, 0), ("RouteScenario_5_rep1", "5", 1, 1)]


def manifest_of(split: str, limit, repetitions: int, split_options: dict, checkpoint=None) -> dict:
    return {"format": MANIFEST_FORMAT, "w0sim_version": __version__, "mode": "closed_loop",
            "agent": "constant_velocity", "agent_class": "agents.constant_velocity:ConstantVelocityAgent",
            "checkpoint": checkpoint, "checkpoint_sha256": None, "seed": 0, "device": "cpu", "dtype": "float32",
            "split": split, "split_options": split_options, "limit": limit, "repetitions": repetitions,
            "pdm_version": None, "human_filter": None}


def test_the_closed_loop_manifest_records_the_run_and_no_pdm_version(route_file):
    routes, towns = route_file
    manifest = closed_loop_manifest(AgentSpec("constant_velocity"), f"carla:{routes}", 3, 2, {"town_dir": towns})
    assert manifest == manifest_of(f"carla:{routes.resolve()}", 3, 2, {"town_dir": str(towns.resolve())})


def test_the_closed_loop_manifest_reads_the_checkpoint_of_the_agent_it_is_given(tmp_path):
    agent = ConstantVelocityAgent()
    agent.checkpoint = str(tmp_path / "absent.ckpt")
    manifest = closed_loop_manifest(AgentSpec("constant_velocity"), "builtin:routes", None, 1, None, agent)
    assert manifest == manifest_of("builtin:routes", None, 1, {}, checkpoint=str(tmp_path / "absent.ckpt"))


# ---- drive_route, on a scripted environment -------------------------------------------------------------------------

ENV_RECORD = {"index": 0, "route_id": "scene-token", "status": "Perfect", "num_infractions": 0,
              "scores": {"score_route": 100, "score_penalty": 1.0, "score_composed": 100.0},
              "meta": {"route_length": 120.0, "duration_game": 1.5, "duration_system": -1}}


def _scripted_env(monkeypatch, steps, *, fail_init=None, fail_reset=None):
    """Replace ClosedLoopEnv by one that plays `steps` (per decision: an exception to raise, or (terminated,
    truncated, info)); returns the log of what drive_route made and sent it."""
    log = {"made": [], "reset": [], "actions": [], "closed": 0}

    class Env:
        sampling = SimpleNamespace(num_poses=4)

        def __init__(self, **kwargs):
            log["made"].append(kwargs)
            if fail_init is not None:
                raise fail_init

        def reset(self, **kwargs):
            log["reset"].append(kwargs)
            if fail_reset is not None:
                raise fail_reset
            return None, {"agent_input": "input 0", "world": "world 0"}

        def step(self, action):
            log["actions"].append(action)
            outcome = steps[len(log["actions"]) - 1]
            if isinstance(outcome, Exception):
                raise outcome
            return None, 0.0, *outcome

        def close(self):
            log["closed"] += 1

    monkeypatch.setattr(closed_loop, "ClosedLoopEnv", Env)
    clock = iter([100.0, 102.3456])
    monkeypatch.setattr(closed_loop, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    return log


def _going(k: int) -> tuple:
    return False, False, {"agent_input": f"input {k}", "world": f"world {k}", "time_s": 0.5 * k}


def _ended(status: str = "Perfect", failure_reason=None, truncated: bool = False) -> tuple:
    info = {"time_s": 1.5, "route_record": dict(ENV_RECORD, status=status)}
    if failure_reason is not None:
        info["failure_reason"] = failure_reason
    return not truncated, truncated, info


class ScriptedAgent(Agent):
    """Plans `plans[k]` (poses, or an exception to raise) at decision k and remembers what it was given."""

    def __init__(self, plans, cameras=False, privileged=False):
        super().__init__()
        self.plans, self.cameras, self.privileged, self.seen = plans, cameras, privileged, []

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig(cameras=self.cameras)

    def compute_trajectory(self, agent_input, world=None):
        self.seen.append((agent_input, world))
        plan = self.plans[len(self.seen) - 1]
        if isinstance(plan, Exception):
            raise plan
        return SimpleNamespace(poses=plan)


class _Scene:
    token = "scene-token"


SCENE = _Scene()
ROUTE = SimpleNamespace(token="RouteScenario_3_rep1", family="curve", load=lambda: SCENE)


def _expected_record(status: str = "Perfect", index: int = 7) -> dict:
    return {"index": index, "route_id": "RouteScenario_3_rep1", "status": status, "num_infractions": 0,
            "scores": {"score_route": 100, "score_penalty": 1.0, "score_composed": 100.0},
            "meta": {"route_length": 120.0, "duration_game": 1.5, "duration_system": 2.346}}


@pytest.mark.parametrize("truncated", [False, True])
def test_a_driven_route_gives_its_row_with_the_record_under_its_route_id_place_and_wall_clock(monkeypatch, truncated):
    """Three decisions, the agent given each decision's input and world view, the environment its plans; the record
    (the environment's) takes the route's id and place, its duration_system the wall-clock seconds (rounded to ms)."""
    log = _scripted_env(monkeypatch, [_going(1), _going(2), _ended(truncated=truncated)])
    plans = [np.full((4, 3), float(k)) for k in range(3)]
    agent = ScriptedAgent(plans)
    row = drive_route(ROUTE, 7, agent)
    assert row == {"token": "RouteScenario_3_rep1", "family": "curve", "scene": "scene-token",
                   "record": _expected_record(), "latency": latency(3)}
    assert log["made"] == [{"scenes": [SCENE], "cameras": False, "privileged": False}]
    assert log["reset"] == [{"seed": 0}]
    assert agent.seen == [("input 0", "world 0"), ("input 1", "world 1"), ("input 2", "world 2")]
    assert len(log["actions"]) == 3 and all(a is p for a, p in zip(log["actions"], plans))


def test_a_camera_agent_with_privileges_gets_an_environment_with_cameras_and_the_world_view(monkeypatch):
    log = _scripted_env(monkeypatch, [_ended()])
    drive_route(ROUTE, 0, ScriptedAgent([np.zeros((4, 3))], cameras=True, privileged=True))
    assert [(made["cameras"], made["privileged"]) for made in log["made"]] == [(True, True)]


def test_an_agent_that_raises_plans_a_non_finite_trajectory_and_its_row_says_where_it_crashed(monkeypatch):
    """The third decision raises: the environment gets a (num_poses, 3) NaN trajectory, which ends the route as the
    Leaderboard's crash; the reason (the agent's, before the environment's) names the decision and its time."""
    log = _scripted_env(monkeypatch, [_going(1), _going(2), _ended("Failed - Agent crashed", "non-finite values")])
    agent = ScriptedAgent([np.zeros((4, 3)), np.zeros((4, 3)), RuntimeError("no plan\n  today")])
    row = drive_route(ROUTE, 7, agent)
    assert row == {"token": "RouteScenario_3_rep1", "family": "curve", "scene": "scene-token",
                   "record": _expected_record("Failed - Agent crashed"), "latency": latency(3),
                   "reason": "agent ScriptedAgent planning decision 2 (t = 1.0 s): RuntimeError: no plan today"}
    nan = log["actions"][2]
    assert nan.shape == (4, 3) and np.isnan(nan).all()


def test_an_agent_that_raises_at_the_first_decision_is_timed_at_zero_seconds(monkeypatch):
    _scripted_env(monkeypatch, [_ended("Failed - Agent crashed")])
    row = drive_route(ROUTE, 7, ScriptedAgent([ValueError("")]))
    assert row["reason"] == "agent ScriptedAgent planning decision 0 (t = 0.0 s): ValueError: (no message)"


@pytest.mark.parametrize("status", CRASH_STATUSES)
def test_a_crash_the_environment_reports_keeps_its_reason_on_one_line(monkeypatch, status):
    _scripted_env(monkeypatch, [_ended(status, "ClosedLoop-v0 trajectory action:\n   non-finite  values")])
    row = drive_route(ROUTE, 7, ScriptedAgent([np.zeros((4, 3))]))
    assert row == {"token": "RouteScenario_3_rep1", "family": "curve", "scene": "scene-token",
                   "record": _expected_record(status), "latency": latency(1),
                   "reason": "ClosedLoop-v0 trajectory action: non-finite values"}


@pytest.mark.parametrize("failure_reason", [None, " \n "])
def test_a_crash_without_a_reason_is_explained_by_its_status(monkeypatch, failure_reason):
    _scripted_env(monkeypatch, [_ended("Failed - Simulation crashed", failure_reason)])
    row = drive_route(ROUTE, 7, ScriptedAgent([np.zeros((4, 3))]))
    assert row["reason"] == "Failed - Simulation crashed"


def test_a_scene_that_does_not_load_fails_the_route_saying_so(monkeypatch):
    log = _scripted_env(monkeypatch, [])

    def load():
        raise OSError("no such\nfile")

    with pytest.raises(SceneFailure) as err:
        drive_route(SimpleNamespace(token="RouteScenario_0_rep0", family=None, load=load), 0, ScriptedAgent([]))
    assert str(err.value) == "loading the route's scene: OSError: no such file"
    assert log["made"] == []


@pytest.mark.parametrize("where", ["init", "reset"])
def test_an_environment_that_cannot_be_set_up_fails_the_route_saying_so(monkeypatch, where):
    problem = RuntimeError("no town")
    _scripted_env(monkeypatch, [], **{f"fail_{where}": problem})
    with pytest.raises(SceneFailure) as err:
        drive_route(ROUTE, 0, ScriptedAgent([]))
    assert str(err.value) == "setting up the route's environment: RuntimeError: no town"


def test_a_simulation_step_that_raises_fails_the_route_naming_the_decision_and_its_time(monkeypatch):
    log = _scripted_env(monkeypatch, [_going(1), KeyError("lane 4")])
    with pytest.raises(SceneFailure) as err:
        drive_route(ROUTE, 0, ScriptedAgent([np.zeros((4, 3))] * 2))
    assert str(err.value) == "simulating decision 1 of the route (t = 0.5 s): KeyError: 'lane 4'"
    assert log["closed"] == 1  # the environment is released however the route ends (a server backend cleans up)


def test_a_simulation_step_that_raises_at_once_is_timed_at_zero_seconds(monkeypatch):
    _scripted_env(monkeypatch, [KeyError("lane 4")])
    with pytest.raises(SceneFailure) as err:
        drive_route(ROUTE, 0, ScriptedAgent([np.zeros((4, 3))]))
    assert str(err.value) == "simulating decision 0 of the route (t = 0.0 s): KeyError: 'lane 4'"


class RaisingAgent(ConstantVelocityAgent):
    def compute_trajectory(self, agent_input, world=None):
        raise RuntimeError("no plan")


def test_the_real_environment_ends_a_route_whose_agent_raised_at_once_as_the_leaderboards_crash():
    """builtin:routes' first route (178 m), nothing driven: completion 0, no infractions, no simulated time."""
    row = drive_route(route_plan("builtin:routes", 1)[0], 4, RaisingAgent())
    wall_clock = row["record"]["meta"].pop("duration_system")
    assert isinstance(wall_clock, float) and 0 <= wall_clock < 5
    assert row == {"token": "RouteScenario_0_rep0", "family": "straight", "scene": row["scene"],
                   "record": {"index": 4, "route_id": "RouteScenario_0_rep0", "status": "Failed - Agent crashed",
                              "num_infractions": 0, "infractions": NO_INFRACTIONS,
                              "scores": {"score_route": 0.0, "score_penalty": 1.0, "score_composed": 0.0},
                              "meta": {"route_length": 178.0, "duration_game": 0.0}}, "latency": latency(1),
                   "reason": "agent RaisingAgent planning decision 0 (t = 0.0 s): RuntimeError: no plan"}


class WrongShapeAgent(ConstantVelocityAgent):
    """Plans five poses at 0.5 s where the evaluation asks for eight (it says it plans eight)."""

    def compute_trajectory(self, agent_input, world=None):
        return Trajectory(np.zeros((5, 3)), TrajectorySampling(num_poses=5, interval=0.5))


def test_a_trajectory_of_the_wrong_shape_is_the_agents_crash_not_a_route_that_could_not_run():
    """The environment refuses a (5, 3) trajectory as a programming error; in an evaluation it is the agent's failure:
    the route keeps its record, "Failed - Agent crashed" as for an agent that raised, and the row says why."""
    row = drive_route(route_plan("builtin:routes", 1)[0], 0, WrongShapeAgent())
    assert row["record"]["status"] == "Failed - Agent crashed" and row["record"]["scores"]["score_composed"] == 0.0
    assert row["reason"] == ("agent WrongShapeAgent planning decision 0 (t = 0.0 s): InvalidActionError: ClosedLoop-v0 "
                             "trajectory action: action has shape (5, 3), expected (8, 3)")


# ---- results_to_adopt ----------------------------------------------------------------------------------------------

def _record(index: int, route_id: str, completion: float = 50.0) -> dict:
    return build_route_record(index, route_id, 120.0, completion, duration_game=6.0, duration_system=2.0)


def _leaderboard_file(path: Path, records: list[dict], total: int, entry_status: str = "Started") -> None:
    results = build_results(records, total, progress=[len(records), total], validate=False)
    results.update(entry_status=entry_status, eligible=False)
    write_results(path, results)


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


PLAN = route_plan("builtin:routes", 2, 2)


def test_a_folder_without_results_adopts_nothing(tmp_path):
    assert results_to_adopt(tmp_path, PLAN) == []


def test_a_results_file_that_is_not_the_leaderboards_is_refused_naming_it(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[]")
    with pytest.raises(RunError) as err:
        results_to_adopt(tmp_path, PLAN)
    assert str(err.value) == (f"{path}: top level is list, expected an object: not a Leaderboard results file this run "
                              f"can resume from; evaluate into another --out folder or remove {path}")


def test_the_leaderboards_finished_routes_become_rows_at_their_places_naming_the_file(tmp_path):
    """Their records keep all but the index (the Leaderboard file's 5 and 6 become their places 0 and 1)."""
    path = tmp_path / "results.json"
    first, second = _record(5, PLAN_IDS[0], 30.0), _record(6, PLAN_IDS[1], 40.0)
    _leaderboard_file(path, [first, second], 4)
    assert results_to_adopt(tmp_path, PLAN) == [
        {"ref": PLAN_IDS[0], "index": 0, "token": PLAN_IDS[0], "family": "straight", "record": dict(first, index=0),
         "source": str(path)},
        {"ref": PLAN_IDS[1], "index": 1, "token": PLAN_IDS[1], "family": "straight", "record": dict(second, index=1),
         "source": str(path)}]


def test_a_route_with_the_same_record_in_rows_jsonl_is_not_adopted_again(tmp_path):
    path = tmp_path / "results.json"
    first, second = _record(0, PLAN_IDS[0], 30.0), _record(1, PLAN_IDS[1], 40.0)
    _leaderboard_file(path, [first, second], 4)
    _write_rows(tmp_path / "rows.jsonl", [{"ref": PLAN_IDS[0], "record": dict(first, index=3)}])
    assert results_to_adopt(tmp_path, PLAN) == [
        {"ref": PLAN_IDS[1], "index": 1, "token": PLAN_IDS[1], "family": "straight", "record": second,
         "source": str(path)}]


def test_our_own_file_whose_records_are_all_rows_adopts_nothing_whatever_the_plan(tmp_path):
    """The file of this folder's run (every record a row alike but for its index): nothing to adopt, and no resume
    check against the plan, which another limit changes."""
    _leaderboard_file(tmp_path / "results.json", [_record(0, PLAN_IDS[0]), _record(1, PLAN_IDS[2])], 2, "Finished")
    _write_rows(tmp_path / "rows.jsonl", [{"ref": PLAN_IDS[0], "record": _record(4, PLAN_IDS[0])},
                                          {"ref": PLAN_IDS[2], "record": _record(1, PLAN_IDS[2])}])
    assert results_to_adopt(tmp_path, PLAN) == []


def test_a_results_file_and_rows_that_disagree_are_refused_naming_both_and_the_route(tmp_path):
    path = tmp_path / "results.json"
    _leaderboard_file(path, [_record(0, PLAN_IDS[0], 30.0), _record(1, PLAN_IDS[1])], 4)
    _write_rows(tmp_path / "rows.jsonl", [{"ref": PLAN_IDS[0], "record": _record(0, PLAN_IDS[0], 31.0)}])
    with pytest.raises(RunError) as err:
        results_to_adopt(tmp_path, PLAN)
    assert str(err.value) == (f"{path} and {tmp_path / 'rows.jsonl'} hold different records of RouteScenario_0_rep0; "
                              "evaluate into another --out folder or remove one of them")


def test_a_results_file_of_another_plan_is_refused_naming_this_runs_first_and_last_route_and_count(tmp_path):
    path = tmp_path / "results.json"
    _leaderboard_file(path, [_record(0, PLAN_IDS[0])], 5)
    with pytest.raises(RunError) as err:
        results_to_adopt(tmp_path, PLAN)
    assert str(err.value) == (f"{path} holds the results of another run: it plans 5 routes, this run 4 (this run: "
                              "RouteScenario_0_rep0 .. RouteScenario_1_rep1, 4 routes); evaluate into another --out "
                              f"folder or remove {path}")


# ---- evaluate_routes and its results files, the runner replaced -----------------------------------------------------

def _spy_runner(monkeypatch, out: Path, finishing: list[dict]):
    """Replace run_split by one that hands back `finishing` rows in that order, calling on_row after each, and keeps
    its arguments, rows.jsonl as it found it and results.json after each row."""
    seen = {"partials": []}

    def run_split(refs, spec, task, out_dir, workers=None, ray_address=None, progress=None, on_row=None):
        seen.update(refs=[ref.token for ref in refs], spec=spec, task=task, out_dir=out_dir, workers=workers,
                    ray_address=ray_address, progress=progress,
                    rows_before=(out / "rows.jsonl").read_text() if (out / "rows.jsonl").exists() else None)
        done = {}
        for row in finishing:
            done[row["ref"]] = row
            on_row(dict(done))
            seen["partials"].append(json.loads((out / "results.json").read_text()))
        return [done[ref.token] for ref in refs if ref.token in done]

    monkeypatch.setattr(closed_loop, "run_split", run_split)
    return seen


SENSORS = ["sensor.speedometer", "sensor.camera.rgb", "sensor.opendrive_map"]
CAMERA_SPEC = AgentSpec("tests.w0sim.test_closed_loop_records:CameraPrivilegedAgent")
THREE = ["RouteScenario_0_rep0", "RouteScenario_1_rep0", "RouteScenario_2_rep0"]


def _row(ref: str, record: dict) -> dict:
    return {"ref": ref, "index": 0, "token": ref, "family": "x", "scene": "s", "record": record}


FAILED_ROW = {"ref": THREE[1], "index": 1, "token": THREE[1], "family": "curve", "valid": False,
              "reason": "loading the route's scene: OSError: gone"}


def _partial(records: list[dict], total: int) -> dict:
    return {**build_results(records, total, sensors=SENSORS, validate=False), "entry_status": "Started", "eligible": False}


def test_the_routes_run_as_planned_and_results_json_is_the_leaderboards_checkpoint_while_routes_are_left(tmp_path,
                                                                                                         monkeypatch):
    """Rows finish as a pool hands them back (route 2, route 0, then route 1 which could not run): results.json holds
    the routes done before the first one left (none, then route 0), entry status Started, eligible false; the end
    file holds every record at its place in the plan, progress [records, planned]; failed_routes.json the failure."""
    out = tmp_path / "out"
    progress = print
    first, third = _record(8, THREE[0], 100.0), _record(9, THREE[2], 20.0)
    seen = _spy_runner(monkeypatch, out, [_row(THREE[2], third), _row(THREE[0], first), FAILED_ROW])
    results = evaluate_routes("builtin:routes", CAMERA_SPEC, out, limit=3, workers=2, progress=progress,
                              ray_address="ray://head:10001")
    assert (seen["refs"], seen["spec"], seen["task"], seen["out_dir"], seen["workers"], seen["ray_address"],
            seen["progress"]) == (THREE, CAMERA_SPEC, drive_route, out, 2, "ray://head:10001", print)
    first_at_0, third_at_2 = dict(first, index=0), dict(third, index=2)
    assert seen["partials"] == [_partial([], 3), _partial([first_at_0], 3), _partial([first_at_0], 3)]
    assert [p["_checkpoint"]["progress"] for p in seen["partials"]] == [[0, 3], [1, 3], [1, 3]]
    assert results["_checkpoint"]["records"] == [first_at_0, third_at_2]
    assert results["_checkpoint"]["progress"] == [2, 3]
    assert (results["entry_status"], results["eligible"], results["sensors"]) == ("Invalid", False, SENSORS)
    assert results == build_results([first_at_0, third_at_2], 3, sensors=SENSORS)
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "failed_routes.json").read_text() == (
        '[\n {\n  "route_id": "RouteScenario_1_rep0",\n  "reason": "loading the route\'s scene: OSError: gone"\n }\n]')
    assert json.loads((out / "manifest.json").read_text()) == manifest_of("builtin:routes", 3, 1, {}) | {
        "agent": CAMERA_SPEC.name, "agent_class": CAMERA_SPEC.target}


def test_a_run_without_failures_leaves_no_failed_routes_file_even_when_resumed_from_one(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "failed_routes.json").write_text("[]")
    _spy_runner(monkeypatch, out, [_row(THREE[0], _record(0, THREE[0], 100.0))])
    results = evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), out, limit=1)
    assert not (out / "failed_routes.json").exists()
    assert (results["entry_status"], results["_checkpoint"]["progress"]) == ("Finished", [1, 1])


def test_a_run_plans_one_repetition_of_every_route_by_default(tmp_path, monkeypatch):
    seen = _spy_runner(monkeypatch, tmp_path, [])
    evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), tmp_path)
    assert seen["refs"] == [f"RouteScenario_{i}_rep0" for i in range(50)]
    assert (seen["workers"], seen["ray_address"], seen["progress"]) == (None, None, None)


def test_a_carla_runs_manifest_records_the_route_file_and_the_town_folder(tmp_path, monkeypatch, route_file):
    routes, towns = route_file
    seen = _spy_runner(monkeypatch, tmp_path / "out", [])
    evaluate_routes(f"carla:{routes}", AgentSpec("constant_velocity"), tmp_path / "out", split_options={"town_dir": towns})
    assert seen["refs"] == ["RouteScenario_12_rep0", "RouteScenario_5_rep0"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest_of(
        f"carla:{routes.resolve()}", None, 1, {"town_dir": str(towns.resolve())})


def test_the_leaderboards_records_become_rows_before_the_routes_left_run(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    record = _record(0, PLAN_IDS[0], 100.0)
    _leaderboard_file(out / "results.json", [record], 4)
    seen = _spy_runner(monkeypatch, out, [])
    evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), out, limit=2, repetitions=2)
    assert seen["refs"] == PLAN_IDS
    assert [json.loads(line) for line in seen["rows_before"].splitlines()] == [
        {"ref": PLAN_IDS[0], "index": 0, "token": PLAN_IDS[0], "family": "straight", "record": record,
         "source": str(out / "results.json")}]


def test_a_worker_count_out_of_range_is_refused_before_anything_is_written(tmp_path):
    cores = os.cpu_count()
    with pytest.raises(RunError) as err:
        evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), tmp_path / "out", limit=1, workers=0)
    assert str(err.value) == (f"--workers 0: expected 1 to {min(4 * cores, 256)} (4 per CPU core, at most 256; this "
                              f"machine has {cores} cores)")
    assert not (tmp_path / "out").exists()


def test_the_split_options_reach_the_plan_of_a_run(tmp_path):
    with pytest.raises(SplitError) as err:
        evaluate_routes("builtin:routes", AgentSpec("constant_velocity"), tmp_path / "out", limit=1,
                        split_options={"scene_filter": "f.yaml"})
    assert str(err.value) == "a scene filter applies to navsim: splits only, not to 'builtin:routes'"


# ---- route_failures -------------------------------------------------------------------------------------------------

def test_the_failed_routes_are_those_that_could_not_run_and_those_that_crashed_in_plan_order(tmp_path):
    plan = route_plan("builtin:routes", 4, 2)
    crashed = _record(0, "x") | {"status": "Failed - Simulation crashed"}
    rows = [
        {"ref": "RouteScenario_0_rep1", "reason": "loading the route's scene: OSError: gone"},
        {"ref": "RouteScenario_1_rep0"},
        {"ref": "RouteScenario_1_rep1", "reason": ""},
        {"ref": "RouteScenario_2_rep0", "record": crashed, "reason": "simulating decision 3", "source": "/lb/r.json"},
        {"ref": "RouteScenario_2_rep1", "record": crashed | {"status": "Failed - Agent crashed"}},
        {"ref": "RouteScenario_3_rep0", "record": crashed | {"status": "Failed - Agent couldn't be set up"},
         "reason": "no weights", "source": ""},
        {"ref": "RouteScenario_3_rep1", "record": crashed | {"status": "Failed"}, "reason": "timed out"},
        {"ref": "RouteScenario_9_rep0", "reason": "not in this plan"},
    ]
    _write_rows(tmp_path / "rows.jsonl", rows[::-1])
    assert route_failures(str(tmp_path), plan) == [
        ("RouteScenario_0_rep1", "loading the route's scene: OSError: gone"),
        ("RouteScenario_1_rep0", "the route could not run (no reason recorded)"),
        ("RouteScenario_1_rep1", "the route could not run (no reason recorded)"),
        ("RouteScenario_2_rep0", "Failed - Simulation crashed: simulating decision 3 (a record adopted from /lb/r.json)"),
        ("RouteScenario_2_rep1", "Failed - Agent crashed: no reason recorded"),
        ("RouteScenario_3_rep0", "Failed - Agent couldn't be set up: no weights"),
    ]


def test_a_folder_without_rows_has_no_failed_routes(tmp_path):
    assert route_failures(tmp_path, PLAN) == []


# ---- routes_markdown ------------------------------------------------------------------------------------------------

MARKDOWN_RESULTS = {"_checkpoint": {
    "global_record": {"scores_mean": {"score_composed": 61.234, "score_route": 80.5, "score_penalty": 0.7256}},
    "progress": [3, 4],
    "records": [scored_record("RouteScenario_0_rep0", "Perfect", 100.0, 100, 1.0),
                scored_record("RouteScenario_1_rep0", "Completed", 40.0, 100, 0.4),
                scored_record("RouteScenario_2_rep0", "Failed - Agent crashed", 10.5, 21.0, 0.5)]}}
HEADER = ("# pdm on builtin:routes (closed loop, Leaderboard 2.0 scoring)\n"
          "\n"
          "driving score 61.23, route completion 80.50, infraction penalty 0.726 over 4 routes\n")
ROUTE_TABLE = ("\n"
               "| route | status | driving score | route completion | penalty |\n"
               "|---|---|---|---|---|\n"
               "| RouteScenario_0_rep0 | Perfect | 100.00 | 100.00 | 1.000 |\n"
               "| RouteScenario_1_rep0 | Completed | 40.00 | 100.00 | 0.400 |\n"
               "| RouteScenario_2_rep0 | Failed - Agent crashed | 10.50 | 21.00 | 0.500 |\n")


def test_the_summary_has_the_global_scores_then_each_familys_means_then_each_route():
    """Families in their first route's order, a family's cells the means of its routes' scores; a family without a
    finished route (junction) has no line."""
    families = {"RouteScenario_0_rep0": "straight", "RouteScenario_1_rep0": "curve",
                "RouteScenario_2_rep0": "straight", "RouteScenario_3_rep0": "junction"}
    assert routes_markdown(MARKDOWN_RESULTS, "pdm", "builtin:routes", families) == (
        HEADER
        + "\n"
        "| family | routes | driving score | route completion | penalty |\n"
        "|---|---|---|---|---|\n"
        "| straight | 2 | 55.25 | 60.50 | 0.750 |\n"
        "| curve | 1 | 40.00 | 100.00 | 0.400 |\n"
        + ROUTE_TABLE)


@pytest.mark.parametrize("families", [None, {}])
def test_the_summary_without_families_has_no_family_table(families):
    assert routes_markdown(MARKDOWN_RESULTS, "pdm", "builtin:routes", families) == HEADER + ROUTE_TABLE
