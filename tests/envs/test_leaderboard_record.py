"""ClosedLoop-v0's Leaderboard view: events as the Leaderboard's criteria raise them, and the route record."""
import json

import numpy as np

from sim.state import TrafficLightStatus
from tests.envs.helpers import fresh_scene, route_follower, straight_trajectory
from tests.envs.test_closed_loop_env import (
    _drive_route,
    _intersection_scene_with_lights,
    _scene_with_stopped_vehicle,
    make_env,
)

RECORD_KEYS = {"index", "route_id", "status", "num_infractions", "infractions", "scores", "meta"}


def run(env, act, steps=400):
    info = {}
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(act())
        if terminated or truncated:
            break
    return info


def test_a_clean_completed_route_is_perfect_and_serialises():
    env = make_env(fresh_scene("straight", 1), privileged=True)
    env.reset(seed=0)
    info = run(env, route_follower(env))
    record = info["route_record"]
    assert RECORD_KEYS <= record.keys()
    assert record["status"] == "Perfect" and record["scores"]["score_route"] == 100
    assert record["scores"]["score_composed"] == 100.0 and info["driving_score"] == 100.0
    assert record["meta"]["route_length"] > 50
    json.loads(json.dumps(record))  # plain JSON types


def test_pushing_into_a_stopped_vehicle_is_one_vehicle_collision():
    scene, _ = _scene_with_stopped_vehicle()
    env = make_env(scene, traffic="replay", max_time_s=8.0)
    env.reset(seed=0)
    info = run(env, lambda: straight_trajectory(12.0))
    record = info["route_record"]
    assert len(record["infractions"]["collisions_vehicle"]) == 1
    assert "type=vehicle" in record["infractions"]["collisions_vehicle"][0]
    assert record["scores"]["score_penalty"] == 0.6  # the Leaderboard 2.0 factor of a vehicle collision
    assert record["status"] == "Failed - Agent timed out" and record["infractions"]["route_timeout"]


def test_running_a_red_light_is_a_red_light_infraction():
    scene, _ = _intersection_scene_with_lights(TrafficLightStatus.RED)
    env, infos = _drive_route(scene, steps=16)
    record = infos[-1]["running_record"]
    assert len(record["infractions"]["red_light"]) == 1
    assert any("ran a red light" in m for i in infos for m in i["leaderboard_events"])


def test_leaving_the_route_far_behind_ends_it_as_a_deviation():
    env = make_env(fresh_scene("straight", 0), control="direct", traffic="replay")
    env.reset(seed=0)
    steps = iter(range(10**6))
    # A slight, held steering angle: a wide arc that leaves the road and, later, the route's 30 m band.
    info = run(env, lambda: np.array([0.5, 0.1 if next(steps) < 5 else 0.0], np.float32), steps=900)
    record = info["route_record"]
    assert record["status"] == "Failed - Agent deviated from the route"
    assert record["infractions"]["route_dev"] and record["infractions"]["outside_route_lanes"]
    assert record["scores"]["score_route"] < 100


def test_collision_actor_ids_are_the_same_in_every_process():
    """Route records name the other actor; Python's str hash is salted per process, so a record written by
    a pool worker must not depend on it (resumed and uninterrupted runs must write the same file)."""
    import os
    import subprocess
    import sys

    from sim.envs.leaderboard_monitor import actor_id

    code = "from sim.envs.leaderboard_monitor import actor_id; print(actor_id('ped_17'))"
    ids = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                          capture_output=True, text=True, check=True).stdout.strip() for seed in ("1", "2")}
    assert ids == {str(actor_id("ped_17"))}
