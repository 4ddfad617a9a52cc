"""One-shot evaluation pinned in full: each scene's row (valid and failed, every failure reason), the rows and CSV an
evaluation writes, its manifest, v2.2's two-frame comfort pairing, and the summary and its markdown table."""
from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest

import w0sim.one_shot as one_shot
from agents.base import Agent, SensorConfig
from agents.registry import AgentSpec
from scenarios.generator import generate_scene
from scenarios.splits import SceneRef, SplitError, resolve_split
from sim.envs.scene_scoring import SceneScorer
from sim.state import StateIndex, Trajectory
from tests.w0sim.records import comparable, latency
from w0sim.one_shot import (
    check_version,
    csv_columns,
    evaluate_scene,
    evaluate_split,
    one_shot_manifest,
    summarize,
    summary_markdown,
    with_extended_comfort,
    write_csv,
)
from w0sim.runner import RunError, max_workers

V11 = ["no_at_fault_collisions", "drivable_area_compliance", "ego_progress", "time_to_collision_within_bound", "comfort",
       "driving_direction_compliance"]
V22 = ["no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance", "traffic_light_compliance",
       "ego_progress", "time_to_collision_within_bound", "lane_keeping", "history_comfort", "two_frame_extended_comfort"]
POSES = [[3.0 * i, 0.0, 0.0] for i in range(1, 9)]
V11_HEADER = ("token,valid,no_at_fault_collisions,drivable_area_compliance,ego_progress,time_to_collision_within_bound,"
              "comfort,driving_direction_compliance,score\r\n")
V22_HEADER = ("token,valid,no_at_fault_collisions,drivable_area_compliance,driving_direction_compliance,"
              "traffic_light_compliance,ego_progress,time_to_collision_within_bound,lane_keeping,history_comfort,"
              "two_frame_extended_comfort,score\r\n")


def test_the_csv_columns_are_navsims_for_each_version():
    assert csv_columns("v1.1") == ["token", "valid", *V11, "score"]
    assert csv_columns("v2.2") == ["token", "valid", *V22, "score"]


def test_a_pdm_version_other_than_v1_1_and_v2_2_is_refused_listing_both():
    check_version("v1.1")
    check_version("v2.2")
    with pytest.raises(RunError) as info:
        check_version("v2")
    assert str(info.value) == "--pdm-version 'v2' is not a PDM score version; expected one of v1.1, v2.2"


def test_an_evaluation_with_a_bad_version_or_worker_count_is_refused_before_it_makes_its_folder(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RunError) as info:
        evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), out, "v3", limit=1, workers=1)
    assert str(info.value) == "--pdm-version 'v3' is not a PDM score version; expected one of v1.1, v2.2"
    with pytest.raises(RunError) as info:
        evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), out, limit=1, workers=0)
    assert str(info.value) == (f"--workers 0: expected 1 to {max_workers()} (4 per CPU core, at most 256; this machine "
                               f"has {os.cpu_count()} cores)")
    with pytest.raises(SplitError) as info:  # the split options reach the split
        evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), out, limit=1, workers=1,
                       split_options={"scene_filter": str(tmp_path / "filter.yaml")})
    assert str(info.value) == "a scene filter applies to navsim: splits only, not to 'builtin:navtest'"
    assert not out.exists()


def manifest(version, limit, human_filter, split_options=None) -> dict:
    return {"format": "w0sim eval run manifest 1", "w0sim_version": "0.1.0", "mode": "one_shot",
            "agent": "constant_velocity", "agent_class": "agents.constant_velocity:ConstantVelocityAgent",
            "checkpoint": None, "checkpoint_sha256": None, "seed": 0, "device": "cpu", "dtype": "float32",
            "split": "builtin:navtest", "split_options": split_options or {}, "limit": limit, "repetitions": 1,
            "pdm_version": version, "human_filter": human_filter}


def test_the_manifest_records_the_version_limit_and_options_and_the_human_filter_for_v2_2_only(tmp_path):
    spec = AgentSpec("constant_velocity")
    options = {"town_dir": str(tmp_path / "towns"), "navsim_logs": None}
    assert one_shot_manifest(spec, "builtin:navtest", "v1.1", 3, False, options) == manifest(
        "v1.1", 3, None, {"town_dir": str(tmp_path / "towns")})
    assert one_shot_manifest(spec, "builtin:navtest", "v2.2", None, False, None) == manifest("v2.2", None, False)
    assert one_shot_manifest(spec, "builtin:navtest", "v2.2", 7, True, {}) == manifest("v2.2", 7, True)


# ---- evaluate_scene ----------------------------------------------------------------------------------------------------

class FakeEnv:
    """A NavsimSceneEnv stand-in: records how it is made and driven; `result` is its step's info, `fail_at` the call
    that raises, `world` whether reset's info holds a world view."""

    log: list = []
    result: dict = {}
    fail_at: str | None = None
    world = True

    def __init__(self, **kwargs):
        FakeEnv.log.append(("init", {**kwargs, "scenes": [scene.token for scene in kwargs["scenes"]]}))
        if FakeEnv.fail_at == "init":
            raise ValueError("no lanes")

    def reset(self, **kwargs):
        FakeEnv.log.append(("reset", kwargs))
        if FakeEnv.fail_at == "reset":
            raise KeyError("route")
        return "observation", {"agent_input": "the agent input", **({"world": "the world view"} if FakeEnv.world else {})}

    def step(self, action):
        FakeEnv.log.append(("step", np.asarray(action).tolist()))
        if FakeEnv.fail_at == "step":
            raise FloatingPointError("overflow\n  in the tracker")
        return "observation", 0.0, True, False, FakeEnv.result


class Planner(Agent):
    """Plans POSES (or raises `error`); records what it was given."""

    def __init__(self, privileged=False, cameras=False, error=None):
        super().__init__()
        self.privileged, self.cameras, self.error, self.seen = privileged, cameras, error, []

    def get_sensor_config(self):
        return SensorConfig(cameras=self.cameras)

    def compute_trajectory(self, agent_input, world=None):
        self.seen.append((agent_input, world))
        if self.error is not None:
            raise self.error
        return Trajectory(np.array(POSES), self.trajectory_sampling)


@pytest.fixture
def fake_env(monkeypatch):
    monkeypatch.setattr("sim.envs.navsim_env.NavsimSceneEnv", FakeEnv)
    FakeEnv.log, FakeEnv.fail_at, FakeEnv.world = [], None, True
    FakeEnv.result = {"valid": True, "scores": {}, "simulated_states": [[0.0, 1.0]]}
    return FakeEnv


STRAIGHT_3 = SceneRef("ref_token", "straight", 3)


def test_a_scene_is_scored_in_an_env_of_its_own_scene_version_filter_and_the_agents_needs(fake_env):
    token = generate_scene("straight", 3).token
    fake_env.result = {"valid": True, "scores": {**dict.fromkeys(V22[:-1], 1.0), "ego_progress": 0.5, "score": 1},
                       "simulated_states": np.array([[1.0, 2.0], [3.0, 4.0]])}
    agent = Planner(privileged=True, cameras=True)
    row = evaluate_scene(STRAIGHT_3, 4, agent, "v2.2", human_filter=False)
    assert fake_env.log == [
        ("init", {"scenes": [token], "cameras": True, "pdm_version": "v2.2", "privileged": True, "human_filter": False}),
        ("reset", {"seed": 0}), ("step", POSES)]
    assert agent.seen == [("the agent input", "the world view")]
    assert comparable(row) == comparable({"token": token, "family": "straight", "valid": True, "reason": "",
                                          "latency": latency(1), **dict.fromkeys(V22, 1.0), "ego_progress": 0.5,
                                          "two_frame_extended_comfort": math.nan, "score": 1.0,
                                          "simulated_states": [[1.0, 2.0], [3.0, 4.0]]})
    assert type(row["score"]) is float


def test_a_v1_1_row_holds_the_six_sub_scores_and_no_simulated_states_and_the_defaults_are_v1_1_with_the_filter(fake_env):
    fake_env.world = False
    fake_env.result = {"valid": True, "scores": {"no_at_fault_collisions": 1, "drivable_area_compliance": 0.0,
                                                 "ego_progress": 0.25, "comfort": 1.0, "score": 0.0, "extra": 3.0},
                       "simulated_states": [[0.0]]}
    agent = Planner()
    row = evaluate_scene(STRAIGHT_3, 0, agent)
    token = generate_scene("straight", 3).token
    assert fake_env.log == [
        ("init", {"scenes": [token], "cameras": False, "pdm_version": "v1.1", "privileged": False, "human_filter": True}),
        ("reset", {"seed": 0}), ("step", POSES)]
    assert agent.seen == [("the agent input", None)]
    assert comparable(row) == comparable({"token": token, "family": "straight", "valid": True, "reason": "",
                                          "latency": latency(1), "no_at_fault_collisions": 1.0, "drivable_area_compliance": 0.0,
                                          "ego_progress": 0.25, "time_to_collision_within_bound": math.nan,
                                          "comfort": 1.0, "driving_direction_compliance": math.nan, "score": 0.0})
    assert type(row["no_at_fault_collisions"]) is float


@pytest.mark.parametrize("failure, reason", [
    ("the trajectory\n leaves   the map ", "the trajectory leaves the map"),
    (None, "invalid trajectory (no reason given)"),
    ("", "invalid trajectory (no reason given)"),
    (" \n ", "invalid trajectory (no reason given)"),
])
def test_an_invalid_result_is_a_failed_row_with_the_envs_reason_on_one_line(fake_env, failure, reason):
    fake_env.result = {"valid": False, "failure_reason": failure}
    row = evaluate_scene(STRAIGHT_3, 0, Planner(), "v2.2")
    assert row == {"token": generate_scene("straight", 3).token, "family": "straight", "valid": False, "reason": reason,
                   "latency": latency(1)}


def test_an_invalid_result_without_a_reason_at_all_says_none_was_given(fake_env):
    fake_env.result = {"valid": False}
    row = evaluate_scene(STRAIGHT_3, 0, Planner())
    assert row == {"token": generate_scene("straight", 3).token, "family": "straight", "valid": False,
                   "reason": "invalid trajectory (no reason given)", "latency": latency(1)}


@pytest.mark.parametrize("fail_at, reason", [
    ("init", "setting up the scene's environment: ValueError: no lanes"),
    ("reset", "setting up the scene's environment: KeyError: 'route'"),
    ("step", "scoring the planned trajectory: FloatingPointError: overflow in the tracker"),
])
def test_each_stage_that_raises_gives_a_failed_row_saying_what_was_being_done(fake_env, fail_at, reason):
    fake_env.fail_at = fail_at
    row = evaluate_scene(STRAIGHT_3, 0, Planner())
    planned = {"latency": latency(1)} if fail_at == "step" else {}  # the step scores a plan made
    assert row == {"token": generate_scene("straight", 3).token, "family": "straight", "valid": False, "reason": reason,
                   **planned}


def test_an_agent_that_raises_gives_a_failed_row_naming_the_agent(fake_env):
    row = evaluate_scene(STRAIGHT_3, 0, Planner(error=RuntimeError("policy exploded")))
    assert row == {"token": generate_scene("straight", 3).token, "family": "straight", "valid": False,
                   "reason": "agent Planner planning: RuntimeError: policy exploded"}


def test_a_scene_that_cannot_be_loaded_gives_a_failed_row_under_the_refs_token_and_family(tmp_path):
    path = tmp_path / "gone.npz"
    row = evaluate_scene(SceneRef("gone", "curve", path=path), 0, Planner())
    assert row == {"token": "gone", "family": "curve", "valid": False,
                   "reason": f"loading the scene: SceneFormatError: {path}: no such scene file"}


@pytest.mark.parametrize("version", ["v1.1", "v2.2"])
def test_the_real_environment_gives_the_scenes_scorer_values(version):
    """The row holds what the scene's scorer gives the planned poses (v2.2: the score before the two-frame EC)."""
    scene = generate_scene("straight", 3)
    rows, score = SceneScorer(scene, version).score(POSES, 0.5)
    row = evaluate_scene(STRAIGHT_3, 0, Planner(), version)
    expected = {"token": scene.token, "family": "straight", "valid": True, "reason": "", "latency": latency(1),
                **{c: float(getattr(rows, c)[0]) for c in (V11 if version == "v1.1" else V22)}, "score": score}
    if version == "v2.2":
        expected["simulated_states"] = rows.states[0].tolist()
    assert comparable(row) == comparable(expected)


# ---- with_extended_comfort ---------------------------------------------------------------------------------------------

def states(acceleration: float) -> list:
    """41 simulated states at a constant longitudinal acceleration (and nothing else)."""
    array = np.zeros((41, 11))
    array[:, StateIndex.ACCELERATION_X] = acceleration
    return array.tolist()


COLUMNS = {**dict.fromkeys(V22[:-1], 1.0), "driving_direction_compliance": 0.5, "ego_progress": 0.8,
           "two_frame_extended_comfort": math.nan}


def row(token, valid=True, score=0.4, acceleration=0.0) -> dict:
    if not valid:
        return {"token": token, "valid": False, "reason": "failed"}
    return {"token": token, "valid": True, **COLUMNS, "score": score, "simulated_states": states(acceleration)}


def without_states(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "simulated_states"}


def test_the_two_frame_comfort_compares_a_frame_with_the_previous_frame_of_its_log_and_rescores_it():
    """EC 1 for the same states half a second apart, 0 for a 3 m/s^2 jump; EPDMS = DDC 0.5 x (5 EP 0.8 + 5 + 2 + 2 +
    2 EC) / 16: 0.46875 with EC 1, 0.40625 with EC 0. Frames without a valid previous frame of their log keep theirs."""
    refs = [SceneRef("a0", "straight", 7, frame=0), SceneRef("a1", "straight", 7, frame=1),
            SceneRef("a3", "straight", 7, frame=3), SceneRef("b1", "curve", 7, frame=1),
            SceneRef("b2", "curve", 7, frame=2), SceneRef("c0", "curve", 8, frame=0), SceneRef("c1", "curve", 8, frame=1),
            SceneRef("d0", "curve", 9, frame=0), SceneRef("d1", "curve", 9, frame=1), SceneRef("x", path="x.npz")]
    rows = [row("a0"), row("a1"), row("a3"), row("b1"), row("b2", acceleration=3.0), row("c0", valid=False), row("c1"),
            row("d0"), row("d1", valid=False), row("x")]
    out = with_extended_comfort(refs, rows)
    expected = [without_states(r) for r in rows]
    expected[1] |= {"two_frame_extended_comfort": 1.0, "score": 0.46875}
    expected[4] |= {"two_frame_extended_comfort": 0.0, "score": 0.40625}
    assert comparable(out) == comparable(expected)
    assert "simulated_states" in rows[0]  # the rows given are left as they were


def test_the_previous_frame_is_found_wherever_it_stands_in_the_split():
    refs = [SceneRef("a1", "straight", 7, frame=1), SceneRef("a0", "straight", 7, frame=0)]
    out = with_extended_comfort(refs, [row("a1", acceleration=3.0), row("a0")])
    assert comparable(out) == comparable([without_states(row("a1")) | {"two_frame_extended_comfort": 0.0, "score": 0.40625},
                                          without_states(row("a0"))])


# ---- write_csv -------------------------------------------------------------------------------------------------------

def test_the_v1_1_csv_has_a_line_per_scene_and_the_average_of_the_finite_values_with_valid_all_valid(tmp_path):
    rows = [{"token": "s0", "family": "straight", "valid": True, "reason": "", "no_at_fault_collisions": 1.0,
             "drivable_area_compliance": 1.0, "ego_progress": 0.5, "time_to_collision_within_bound": 1.0, "comfort": 1.0,
             "driving_direction_compliance": 0.5, "score": 0.5},
            {"token": "s1", "family": "curve", "valid": False, "reason": "off the map"},
            {"token": "s2", "valid": True, "no_at_fault_collisions": 1.0, "drivable_area_compliance": 0.0,
             "ego_progress": 0.25, "time_to_collision_within_bound": 0.0, "comfort": math.inf,
             "driving_direction_compliance": 1.0, "score": 0.0}]
    path = tmp_path / "scores.csv"
    write_csv(rows, path, "v1.1")
    assert path.read_bytes().decode() == (V11_HEADER
                                          + "s0,True,1.0,1.0,0.5,1.0,1.0,0.5,0.5\r\n"
                                          + "s1,False,,,,,,,\r\n"
                                          + "s2,True,1.0,0.0,0.25,0.0,inf,1.0,0.0\r\n"
                                          + "average,False,1.0,0.5,0.375,0.5,inf,0.75,0.25\r\n")
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]  # no temporary file left beside it


def test_the_v2_2_csv_averages_all_frames_and_a_column_without_a_finite_value_averages_to_an_empty_cell(tmp_path):
    rows = [{"token": "t0", "valid": True, **dict.fromkeys(V22, 1.0), "two_frame_extended_comfort": math.nan, "score": 1.0},
            {"token": "t1", "valid": True, **dict.fromkeys(V22, 0.5), "two_frame_extended_comfort": math.inf, "score": 0.5}]
    path = tmp_path / "scores.csv"
    write_csv(rows, path, "v2.2")
    assert path.read_bytes().decode() == (V22_HEADER
                                          + "t0,True,1.0,1.0,1.0,1.0,1.0,1.0,1.0,1.0,,1.0\r\n"
                                          + "t1,True,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,inf,0.5\r\n"
                                          + "average_all_frames,True,0.75,0.75,0.75,0.75,0.75,0.75,0.75,0.75,,0.75\r\n")


# ---- evaluate_split ----------------------------------------------------------------------------------------------------

V11_ROWS = [
    {"token": "s0", "family": "straight", "valid": True, "reason": "", "no_at_fault_collisions": 1.0,
     "drivable_area_compliance": 1.0, "ego_progress": 0.5, "time_to_collision_within_bound": 1.0, "comfort": 1.0,
     "driving_direction_compliance": 0.5, "score": 0.5},
    {"token": "s1", "family": "straight", "valid": False, "reason": "off the map"},
    {"token": "s2", "family": "curve", "valid": True, "reason": "", "no_at_fault_collisions": 1.0,
     "drivable_area_compliance": 0.0, "ego_progress": 0.25, "time_to_collision_within_bound": 0.0, "comfort": 1.0,
     "driving_direction_compliance": 1.0, "score": 0.0},
]


def test_an_evaluation_writes_its_manifest_rows_and_csv_and_returns_the_rows_in_split_order(tmp_path, monkeypatch):
    calls = []

    def scene_row(ref, index, agent, version="v1.1", human_filter=True):
        calls.append((ref.token, index, type(agent).__name__, version, human_filter))
        return dict(V11_ROWS[index])

    monkeypatch.setattr(one_shot, "evaluate_scene", scene_row)
    refs = [ref.token for ref in resolve_split("builtin:navtest", 3)]
    progress = []
    out = tmp_path / "run"
    rows = evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), str(out), limit=3, workers=1,
                          progress=lambda done, total: progress.append((done, total)))
    assert calls == [(refs[k], k, "ConstantVelocityAgent", "v1.1", True) for k in range(3)]
    expected = [{"ref": refs[k], "index": k, **V11_ROWS[k]} for k in range(3)]
    assert rows == expected
    assert [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()] == expected
    assert progress == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert json.loads((out / "manifest.json").read_text()) == manifest("v1.1", 3, None)
    assert (out / "scores.csv").read_bytes().decode() == (V11_HEADER
                                                          + "s0,True,1.0,1.0,0.5,1.0,1.0,0.5,0.5\r\n"
                                                          + "s1,False,,,,,,,\r\n"
                                                          + "s2,True,1.0,0.0,0.25,0.0,1.0,1.0,0.0\r\n"
                                                          + "average,False,1.0,0.5,0.375,0.5,1.0,0.75,0.25\r\n")


def test_a_v2_2_evaluation_pairs_consecutive_frames_and_keeps_the_simulated_states_in_rows_jsonl_only(tmp_path, monkeypatch):
    """navtest's first four scenes: two frames of a straight log, then two of a curve log. The second frame of each is
    rescored with its EC: (5 x 0.5 + 5 + 2 + 2 + 2 EC) / 16 = 0.84375 with EC 1 (the same states), 0.71875 with EC 0."""
    columns = {**dict.fromkeys(V22, 1.0), "ego_progress": 0.5, "two_frame_extended_comfort": math.nan, "score": 0.8125}
    accelerations = [0.0, 0.0, 0.0, 3.0]
    seen = []

    def scene_row(ref, index, agent, version="v1.1", human_filter=True):
        seen.append((version, human_filter))
        return {"token": f"t{index}", "valid": True, **columns, "simulated_states": states(accelerations[index])}

    monkeypatch.setattr(one_shot, "evaluate_scene", scene_row)
    refs = [ref.token for ref in resolve_split("builtin:navtest", 4)]
    out = tmp_path / "run"
    rows = evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), out, "v2.2", limit=4, workers=1,
                          human_filter=False)
    assert seen == [("v2.2", False)] * 4
    expected = [{"ref": refs[k], "index": k, "token": f"t{k}", "valid": True, **columns} for k in range(4)]
    expected[1] |= {"two_frame_extended_comfort": 1.0, "score": 0.84375}
    expected[3] |= {"two_frame_extended_comfort": 0.0, "score": 0.71875}
    assert comparable(rows) == comparable(expected)
    assert [json.loads(line)["simulated_states"] for line in (out / "rows.jsonl").read_text().splitlines()] == [
        states(a) for a in accelerations]
    assert json.loads((out / "manifest.json").read_text()) == manifest("v2.2", 4, False)
    assert (out / "scores.csv").read_bytes().decode() == (
        V22_HEADER
        + "t0,True,1.0,1.0,1.0,1.0,0.5,1.0,1.0,1.0,,0.8125\r\n"
        + "t1,True,1.0,1.0,1.0,1.0,0.5,1.0,1.0,1.0,1.0,0.84375\r\n"
        + "t2,True,1.0,1.0,1.0,1.0,0.5,1.0,1.0,1.0,,0.8125\r\n"
        + "t3,True,1.0,1.0,1.0,1.0,0.5,1.0,1.0,1.0,0.0,0.71875\r\n"
        + "average_all_frames,True,1.0,1.0,1.0,1.0,0.5,1.0,1.0,1.0,0.5,0.796875\r\n")


def test_an_evaluation_hands_the_runner_its_scenes_agent_task_folder_workers_ray_address_and_progress(tmp_path, monkeypatch):
    """The manifest (with the split options) is written before the first row; the task is evaluate_scene with the
    version and filter."""
    asked = []

    def run_split(refs, spec, task, out_dir, workers, ray_address, progress):
        asked.append(([r.token for r in refs], spec, task.func, task.keywords, out_dir, workers, ray_address, progress))
        assert json.loads((out_dir / "manifest.json").read_text()) == manifest("v1.1", 2, None, {"town_dir": towns})
        return [{"token": "a", "valid": False, "reason": "r"}, {"token": "b", "valid": False, "reason": "r"}]

    monkeypatch.setattr(one_shot, "run_split", run_split)
    spec, report, towns = AgentSpec("constant_velocity"), print, str(tmp_path / "towns")
    rows = evaluate_split("builtin:navtest", spec, str(tmp_path), "v1.1", limit=2, workers=3, progress=report,
                          ray_address="ray://head:10001", split_options={"town_dir": towns})
    assert asked == [([r.token for r in resolve_split("builtin:navtest", 2)], spec, evaluate_scene,
                      {"version": "v1.1", "human_filter": True}, tmp_path, 3, "ray://head:10001", report)]
    assert rows == [{"token": "a", "valid": False, "reason": "r"}, {"token": "b", "valid": False, "reason": "r"}]
    assert (tmp_path / "scores.csv").read_bytes().decode() == (V11_HEADER + "a,False,,,,,,,\r\n"
                                                               + "b,False,,,,,,,\r\n"
                                                               + "average,False,,,,,,,\r\n")


# ---- summarize, summary_markdown -----------------------------------------------------------------------------------

SUMMARY_ROWS = [{"family": "straight", "valid": True, "score": 0.5}, {"family": None, "valid": True, "score": 1.0},
                {"family": "curve", "valid": False, "score": 0.0}, {"valid": True, "score": 0.25},
                {"family": "straight", "valid": True, "score": 0.0}, {"family": "", "valid": False, "score": math.nan}]


def test_the_summary_counts_scenes_and_failures_and_averages_valid_scores_overall_then_per_family_in_order():
    """all: (0.5 + 1 + 0.25 + 0) / 4; straight: (0.5 + 0) / 2; unknown (no family): (1 + 0.25) / 2; curve: none (NaN,
    without numpy's warning about the mean of nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = summarize(SUMMARY_ROWS)
    assert list(summary) == ["all", "straight", "unknown", "curve"]
    assert comparable(summary) == comparable({"all": {"scenes": 6, "failed": 2, "score": 0.4375},
                                              "straight": {"scenes": 2, "failed": 0, "score": 0.25},
                                              "unknown": {"scenes": 3, "failed": 1, "score": 0.625},
                                              "curve": {"scenes": 1, "failed": 1, "score": math.nan}})


@pytest.mark.parametrize("version, name", [("v1.1", "PDMS"), ("v2.2", "EPDMS")])
def test_the_summary_markdown_is_a_title_and_a_table_row_per_group(version, name):
    text = summary_markdown(summarize(SUMMARY_ROWS), "constant_velocity", "builtin:navtest", version)
    assert text == (f"# constant_velocity on builtin:navtest ({name} {version})\n"
                    "\n"
                    f"| scenes | count | failed | {name} |\n"
                    "|---|---|---|---|\n"
                    "| all | 6 | 2 | 0.4375 |\n"
                    "| straight | 2 | 0 | 0.2500 |\n"
                    "| unknown | 3 | 1 | 0.6250 |\n"
                    "| curve | 1 | 1 | nan |\n")
