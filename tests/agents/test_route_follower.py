"""The IDM route follower: the privileged driver plans along its route and obeys the lights it is shown."""
from __future__ import annotations

import dataclasses

import numpy as np

from agents.route_follower import RouteFollowerAgent
from scenarios.generator import generate_scene
from sim.geometry import global_to_local
from sim.state import TrafficLightStatus
from sim.world_view import WorldView


def _plan_with_every_light(world: WorldView, status: TrafficLightStatus) -> np.ndarray:
    lights = np.full(len(world.light_ids), status, dtype=np.int8)
    return RouteFollowerAgent().compute_trajectory(None, dataclasses.replace(world, light_status=lights)).poses


def test_route_follower_stops_before_a_red_light_on_its_route_and_drives_through_a_green_one():
    scene = generate_scene("intersection", 1)  # the ego at ~7.9 m/s, ~26 m before a signalised junction
    world = WorldView.from_log(scene)
    ego = world.ego_state
    entry = scene.map.lane(scene.route[1]).centerline[0]  # the junction connector starts at the stop line
    line_x = global_to_local(np.array([[*entry, ego[2]]]), ego[:3])[0, 0]
    front_length = RouteFollowerAgent().config.vehicle.front_length
    red = _plan_with_every_light(world, TrafficLightStatus.RED)
    green = _plan_with_every_light(world, TrafficLightStatus.GREEN)
    assert red[-1, 0] + front_length < line_x  # its front stays behind the line
    assert np.all(np.diff(np.linalg.norm(np.diff(red[:, :2], axis=0), axis=1)) < 0)  # braking all the way
    assert green[-1, 0] > line_x + 10.0  # through the junction
