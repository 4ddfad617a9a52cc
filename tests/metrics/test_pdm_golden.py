"""Golden tests of the NAVSIM scorer re-implementation: PDMS v1.1 and EPDMS v2.2 against the original code's outputs."""
from __future__ import annotations

import numpy as np
import pytest

from metrics.comfort import comfort_checks, two_frame_extended_comfort
from metrics.golden_scene import initial_state, pdm_reference, scoring_context
from metrics.pdm import PDMRows, apply_human_filter, final_score, score_states
from metrics.pdm_agent import score_agent
from sim.dynamics import interpolate_trajectory_states, simulate, track_trajectories

# v2.2 cases carry no poses; these two were reconstructed in tests/sim/test_dynamics.py from their names and
# match the golden simulated states to ~1e-13. The others are scored from their golden simulated states.
_INFERRED_V2_POSES = {
    "hard_brake_rear_hit": ([[10 * t - 3 * t * t, 0.0, 0.0] for t in np.minimum(np.arange(1, 9) * 0.5, 10 / 6)], 0.5),
    "short_horizon_2s": ([[5.0, 0.0, 0.0], [10.0, 0.0, 0.0], [15.0, 0.0, 0.0], [20.0, 0.0, 0.0]], 0.5),
}
V1_RESULT = ("no_at_fault_collisions", "drivable_area_compliance", "ego_progress", "time_to_collision_within_bound",
             "comfort", "driving_direction_compliance", "score")


def _float32(poses) -> np.ndarray:
    return np.asarray(poses, dtype=np.float32).astype(np.float64)  # NAVSIM's Trajectory holds float32 poses


def _pipeline_states(golden: dict, poses, interval: float) -> np.ndarray:
    """[PDM-Closed, agent] simulated together, as NAVSIM's pdm_score does."""
    scene, ref = golden["scene"], pdm_reference(golden)
    agent = interpolate_trajectory_states(initial_state(scene), _float32(poses), interval, t0_us=scene["t0_us"])
    return simulate(initial_state(scene), np.concatenate([ref.reference_states[None], agent]))


def _idx(values) -> list:
    return [None if np.isinf(v) else int(v) for v in values]


def _v1_fields(rows: PDMRows) -> dict:
    return {
        "ego_areas": rows.ego_areas.astype(int).tolist(),
        "multi_metrics": [rows.no_at_fault_collisions.tolist(), rows.drivable_area_compliance.tolist()],
        "comfort_checks_per_row": rows.comfort_checks.astype(int).tolist(),
        "collision_time_idx": _idx(rows.collision_time_idx),
        "ttc_time_idx": _idx(rows.ttc_time_idx),
        "ttc_c_ddc": [rows.time_to_collision_within_bound.tolist(), rows.comfort.tolist(),
                      rows.driving_direction_compliance.tolist()],
    }


def _golden_v1_fields(case: dict) -> dict:
    return {k: case[k] for k in ("ego_areas", "multi_metrics", "comfort_checks_per_row", "collision_time_idx",
                                 "ttc_time_idx")} | {"ttc_c_ddc": case["weighted_metrics"][1:]}


# ---------------------------------------------------------------------------------------------------------
# v1.1


def test_v1_golden_states_score_exactly(golden_v1_1):
    """Scoring the golden simulated states reproduces every field bit for bit."""
    context = scoring_context(golden_v1_1)
    for case in golden_v1_1["cases"]:
        rows = score_states(np.array(case["simulated_states_41x11"]), context, "v1.1")
        assert _v1_fields(rows) == _golden_v1_fields(case), case["name"]
        assert rows.progress_raw.tolist() == case["progress_raw"], case["name"]
        assert rows.ego_progress.tolist() == case["weighted_metrics"][0], case["name"]
        assert rows.result(1) == case["result"], case["name"]


def test_v1_poses_through_pipeline(golden_v1_1):
    """Poses -> sampled references -> LQR + bicycle -> scores: states to 1e-6, flags and sub-scores exact."""
    context = scoring_context(golden_v1_1)
    reference = pdm_reference(golden_v1_1)
    for case in golden_v1_1["cases"]:
        states = _pipeline_states(golden_v1_1, case["poses"], case["interval"])
        assert np.abs(states - np.array(case["simulated_states_41x11"])).max() < 1e-6, case["name"]
        rows = score_states(states, context, "v1.1")
        assert _v1_fields(rows) == _golden_v1_fields(case), case["name"]
        np.testing.assert_allclose(rows.progress_raw, case["progress_raw"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(rows.ego_progress, case["weighted_metrics"][0], rtol=0, atol=1e-12)
        # The one-call agent path gives the same row.
        agent = score_agent(case["poses"], case["interval"], reference, context, "v1.1")
        assert agent.valid.tolist() == [True] and agent.reason == [""]
        result = agent.result(0)
        for name in V1_RESULT:
            assert result[name] == pytest.approx(case["result"][name], abs=1e-9), (case["name"], name)
            if name not in ("ego_progress", "score"):
                assert result[name] == case["result"][name], (case["name"], name)


# ---------------------------------------------------------------------------------------------------------
# v2.2


def _v2_states(golden_v2_2: dict, golden_v1_1: dict) -> dict[str, np.ndarray]:
    """Golden simulated states of every case we know (v2.2 cases, else the identical v1.1 simulation)."""
    states = {c["name"]: np.array(c["simulated_states_41x11"]) for c in golden_v2_2["cases"]
              if "simulated_states_41x11" in c}
    for case in golden_v1_1["cases"]:
        states.setdefault(case["name"], np.array(case["simulated_states_41x11"]))
    return states


def _human_rows(golden: dict, context, poses) -> PDMRows:
    scene = golden["scene"]
    states = track_trajectories(initial_state(scene), _float32(poses), 0.5, t0_us=scene["t0_us"])
    return score_states(states, context, "v2.2", with_history=False)


def test_v2_golden_states_score_exactly(golden_v2_2, golden_v1_1):
    """Every v2.2 case, human filter on and off: scorer row, comfort checks and final EPDMS with EC."""
    context = scoring_context(golden_v2_2)
    states = _v2_states(golden_v2_2, golden_v1_1)
    human = _human_rows(golden_v2_2, context, golden_v2_2["human_poses"])
    assert human.result(0)["pdm_score"] == 1.0  # the logged human drives cleanly: the filter changes nothing
    for case in golden_v2_2["cases"]:
        rows = score_states(states[case["name"]], context, "v2.2")
        if case["human_penalty_filter"]:
            rows = apply_human_filter(rows, human)
        assert rows.result(1) == case["result"], case["name"]
        if "comfort_checks_v2_41" in case:
            assert comfort_checks(states[case["name"]], "v2.2").astype(int).tolist() == case["comfort_checks_v2_41"]
        ec = two_frame_extended_comfort(states[case["name"]][1], states["cv_10mps"][1])
        assert ec == golden_v2_2["extended_comfort_vs_cv_prev"][case["name"]]
        score = final_score(rows.take([1]), ec)[0]
        assert score == pytest.approx(case["final_score_with_ec_vs_cv_prev"], abs=1e-9), case["name"]


def test_v2_poses_through_pipeline(golden_v2_2, golden_v1_1):
    """Cases with known poses: simulated states to 1e-6, then the same row as from the golden states."""
    context = scoring_context(golden_v2_2)
    reference = pdm_reference(golden_v2_2)
    known = {c["name"]: (c["poses"], c["interval"]) for c in golden_v1_1["cases"]} | _INFERRED_V2_POSES
    checked = set()
    for case in golden_v2_2["cases"]:
        if case["name"] not in known:
            continue
        poses, interval = known[case["name"]]
        states = _pipeline_states(golden_v2_2, poses, interval)
        assert np.abs(states - np.array(case.get("simulated_states_41x11", states))).max() < 1e-6
        human_poses = golden_v2_2["human_poses"] if case["human_penalty_filter"] else None
        row = score_agent(poses, interval, reference, context, "v2.2", human_poses=human_poses)
        result, expected = row.result(0), case["result"]
        for name, value in expected.items():
            np.testing.assert_allclose(result[name], value, rtol=0, atol=1e-9, err_msg=f"{case['name']} {name}")
            if name not in ("ego_progress", "weighted_metrics", "pdm_score"):
                assert result[name] == value, (case["name"], name)
        checked.add(case["name"])
    assert {"cv_10mps", "hard_brake_rear_hit", "short_horizon_2s"} <= checked


def test_v2_extended_comfort_of_every_known_case(golden_v2_2, golden_v1_1):
    states = _v2_states(golden_v2_2, golden_v1_1)
    expected = golden_v2_2["extended_comfort_vs_cv_prev"]
    known = [name for name in expected if name in states]
    assert len(known) >= 10
    for name in known:
        assert two_frame_extended_comfort(states[name][1], states["cv_10mps"][1]) == expected[name], name


def test_v2_human_filter_demo(golden_v2_2, golden_v1_1):
    """A human driving into the oncoming lane resets DDC / LK to 1; the product is recomputed, pdm_score stale."""
    context = scoring_context(golden_v2_2)
    states = _v2_states(golden_v2_2, golden_v1_1)
    demo = golden_v2_2["human_filter_demo"]
    human = _human_rows(golden_v2_2, context, demo["human_poses"])
    assert human.driving_direction_compliance[0] == 0.0 and human.lane_keeping[0] == 0.0
    for case in demo["cases"]:
        rows = score_states(states[case["name"]], context, "v2.2")
        if case["human_penalty_filter"]:
            rows = apply_human_filter(rows, human)
        assert rows.result(1) == case["result"], (case["name"], case["human_penalty_filter"])


def test_v2_history_is_fourteen_states_without_the_last_sample(golden_v2_2):
    history = scoring_context(golden_v2_2).history_states
    assert history.shape == (14, 11)
    np.testing.assert_allclose(history[:, 0], np.arange(-15.0, -1.0), atol=1e-12)  # -1.5 s .. -0.2 s at 10 m/s


def test_the_benchmarks_golden_world_is_the_scene_at_time_zero(golden_v1_1):
    """benchmarks/scoring_throughput.py plans on the golden scene: its objects are those present at t = 0 with the
    fixture's boxes and speeds (the one appearing at 1 s is not), and its lanes run +x on the route and -x against it,
    joined where one ends and the next begins."""
    from metrics.golden_scene import golden_objects, golden_road_map
    from sim.state import AgentType

    scene = golden_v1_1["scene"]
    objects = golden_objects(scene)
    present = [o for o in scene["objects"] if o["t_start"] <= 0.0]
    assert objects.track_ids == [o["token"] for o in present] and "veh_appears_late" not in objects.track_ids
    for field, key in (("x", "x0"), ("y", "y0"), ("heading", "heading"), ("vx", "vx"), ("vy", "vy"),
                       ("length", "length"), ("width", "width"), ("height", "height")):
        np.testing.assert_array_equal(getattr(objects, field), [o[key] for o in present], err_msg=field)
    assert [AgentType(t).name for t in objects.agent_type] == [o["type"] for o in present] and objects.valid.all()

    road_map = golden_road_map(scene)
    route = set(scene["route_lane_ids"])
    lanes = {lane.id: lane for lane in road_map.lanes}
    assert set(lanes) == {r["token"] for r in scene["map_polygons"] if r["type"] in ("LANE", "LANE_CONNECTOR")}
    for lane in lanes.values():
        assert (np.diff(lane.centerline[:, 0]) > 0).all() == (lane.id in route), lane.id
        assert lane.is_connector == lane.id.startswith("3")
    assert lanes["2001"].successors == ("3001",) and lanes["3001"].successors == ("2011",)
    assert lanes["3001"].predecessors == ("2001",)
    assert {area.kind for area in road_map.areas} == {"roadblock", "intersection", "carpark"}


def test_the_initial_state_is_the_logged_ego_state_in_navsims_layout():
    from sim.state import StateIndex

    ego = {"x": 1.0, "y": 2.0, "heading": 0.3, "vx": 4.0, "vy": 0.5, "ax": -0.6, "ay": 0.7}
    state = initial_state({"ego": ego})
    for key, index in (("x", StateIndex.X), ("y", StateIndex.Y), ("heading", StateIndex.HEADING),
                       ("vx", StateIndex.VELOCITY_X), ("vy", StateIndex.VELOCITY_Y),
                       ("ax", StateIndex.ACCELERATION_X), ("ay", StateIndex.ACCELERATION_Y)):
        assert state[index] == ego[key], key
