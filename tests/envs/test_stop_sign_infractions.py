"""Stop signs in `w0sim/ClosedLoop-v0`: RunningStopTest events reach the step events and the Leaderboard route record."""
from __future__ import annotations

import numpy as np
import pytest

from sim.geometry import PACIFICA
from sim.state import StateIndex
from tests.envs.helpers import fresh_scene, straight_trajectory
from tests.envs.test_closed_loop_env import all_events, make_env
from tests.sim.test_stop_signs import STOP_X, sign_on, with_signs

STOP_MESSAGE = f"Agent ran a stop with id=0 at (x={STOP_X}, y=-4.25, z=0.0)"  # the sign post's location


EGO_SPEED = 13.0  # m/s


def straight_scene(*lanes: str):
    """generate_scene("straight", 0)'s road without traffic, the ego driving along its route lane road_f0 at
    EGO_SPEED and 30 m before STOP_X at the current step (placed so, whatever the generator draws), and a stop
    sign at STOP_X on each of `lanes` (road_f0 or the opposite lane road_b0)."""
    scene = fresh_scene("straight", 0)
    assert scene.route == ["road_f0"]
    elapsed = (np.arange(scene.num_steps) - scene.current_index) * 0.1
    scene.ego_log[:] = 0.0
    scene.ego_log[:, StateIndex.X] = STOP_X - 30.0 + EGO_SPEED * elapsed
    scene.ego_log[:, StateIndex.Y] = scene.map.lane("road_f0").centerline[0, 1]
    scene.ego_log[:, StateIndex.VELOCITY_X] = EGO_SPEED
    signs = [sign_on(lane, scene.map, sign_id=f"stop_{k}") for k, lane in enumerate(lanes)]
    scene.map = with_signs(scene.map, signs)
    scene.agents.valid[:] = False
    return scene


def drive_direct(scene, accel, steps: int):
    """Direct control episode: `accel(ego)` gives the acceleration, no steering."""
    env = make_env(scene, traffic="replay", control="direct")
    env.reset(seed=0)
    infos = []
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(np.array([accel(env.sim.ego), 0.0]))
        infos.append(info)
        if terminated or truncated:
            break
    return env, infos


def stop_then_go(stop_centre_x: float = STOP_X - 1.0):
    """Brake to a standstill with the ego centre near `stop_centre_x`, wait 1 s, then drive on at 8 m/s."""
    waited = [0]

    def accel(ego):
        centre = ego[0] + PACIFICA.rear_axle_to_center
        if waited[0] > 10:
            target = 8.0
        else:
            target = min(12.6, np.sqrt(6.0 * max(stop_centre_x - centre, 0.0)))
            waited[0] += abs(ego[3]) < 0.05
        return float(np.clip(2.0 * (target - ego[3]), -8.0, 4.0))

    return accel


def stop_records(info: dict) -> list[str]:
    return info["running_record"]["infractions"]["stop_infraction"]


def test_driving_through_a_stop_sign_is_one_infraction_with_penalty_0_8():
    env, infos = drive_direct(straight_scene("road_f0"), lambda ego: 0.0, steps=40)
    assert env.sim.ego[0] > STOP_X + 10.0
    reported = [sign for e in all_events(infos) for sign in e["stop_signs"]]
    assert reported == ["stop_0"]
    assert infos[-1]["stop_signs"] == 1
    first = next(i for i, info in enumerate(infos) if stop_records(info))
    assert STOP_MESSAGE in infos[first]["leaderboard_events"]
    assert not any(stop_records(info) for info in infos[:first])
    # The event carries the simulator frame it fired in (10 Hz steps since the log's start), as a TrafficEvent does.
    [event] = env.leaderboard.events
    assert event.frame == env.scene.current_index + first + 1 == round(10 * infos[first]["time_s"]) + env.scene.current_index
    record = infos[-1]["running_record"]
    assert stop_records(infos[-1]) == [STOP_MESSAGE]
    assert record["scores"]["score_penalty"] == pytest.approx(0.8)
    assert record["scores"]["score_composed"] == pytest.approx(0.8 * record["scores"]["score_route"], abs=1e-3)


def test_stopping_inside_the_volume_then_driving_on_is_no_infraction():
    env, infos = drive_direct(straight_scene("road_f0"), stop_then_go(), steps=120)
    speeds = np.array(env.sim.ego_log)[:, 3]
    assert np.abs(speeds).min() < 0.1 and env.sim.ego[0] > STOP_X + 20.0
    assert not any(e["stop_signs"] for e in all_events(infos))
    assert stop_records(infos[-1]) == []
    assert infos[-1]["running_record"]["scores"]["score_penalty"] == 1.0


def test_stopping_well_before_the_sign_does_not_count():
    env, infos = drive_direct(straight_scene("road_f0"), stop_then_go(STOP_X - 12.0), steps=120)
    assert env.sim.ego[0] > STOP_X + 20.0
    assert stop_records(infos[-1]) == [STOP_MESSAGE]


def test_a_stop_sign_on_the_opposite_lane_is_never_a_candidate():
    env, infos = drive_direct(straight_scene("road_b0"), lambda ego: 0.0, steps=40)
    assert env.sim.ego[0] > STOP_X + 10.0
    assert env.sim.criteria.stop_signs.sign_ids == ["stop_0"] and env.sim.criteria.stop_signs.target is None
    assert not any(e["stop_signs"] for e in all_events(infos))
    assert stop_records(infos[-1]) == []


def test_a_map_without_stop_signs_gives_none():
    env, infos = drive_direct(straight_scene(), lambda ego: 0.0, steps=40)
    assert env.sim.ego[0] > STOP_X + 10.0
    assert not any(e["stop_signs"] for e in all_events(infos))
    assert stop_records(infos[-1]) == [] and infos[-1]["running_record"]["scores"]["score_penalty"] == 1.0


def test_trajectory_control_through_the_sign_is_reported_in_the_final_record():
    env = make_env(straight_scene("road_f0"), traffic="replay")
    env.reset(seed=0)
    for _ in range(10):
        _, _, terminated, truncated, info = env.step(straight_trajectory(12.0))
    assert stop_records(info) == [STOP_MESSAGE]
    assert info["running_record"]["scores"]["score_penalty"] == pytest.approx(0.8)
