"""Scorer inputs from a NAVSIM golden-fixture scene (shared/fixtures/navsim_golden): map, observation, reference."""
from __future__ import annotations

import numpy as np
import shapely

from metrics.observation import RED_LIGHT_PREFIX, Observation
from metrics.pdm import OBSERVATION_STEPS, ScoringContext
from metrics.pdm_agent import PDMReference
from metrics.scoring_map import ScoringMap
from sim.state import ego_state


def initial_state(scene: dict) -> np.ndarray:
    """(11,) the logged initial ego state of the scene."""
    e = scene["ego"]
    return ego_state(e["x"], e["y"], e["heading"], e["vx"], e["vy"], e["ax"], e["ay"])


def scoring_context(golden: dict) -> ScoringContext:
    """The scorer's context for a golden file ({navsim_version, scene, [red_light, past_human_states]})."""
    version = golden["navsim_version"]
    scene = golden["scene"]
    smap = ScoringMap.from_records(scene["map_polygons"], scene["route_lane_ids"])
    red_lights = []
    if version == "v2.2" and golden.get("red_light"):
        light = golden["red_light"]
        connector = str(light["lane_connector"])
        red_lights.append((f"{RED_LIGHT_PREFIX}_{connector}", smap.polygon_of(connector), float(light["red_from_s"])))
    observation = Observation.from_constant_velocity_records(scene["objects"], OBSERVATION_STEPS[version],
                                                             red_lights=red_lights)
    history = None
    if version == "v2.2" and golden.get("past_human_states"):
        history = ScoringContext.history_from_past_states(np.array(golden["past_human_states"]))
    return ScoringContext(smap, observation, np.array(scene["centerline_xyh"]), history)


def pdm_reference(golden: dict) -> PDMReference:
    """The cached PDM-Closed reference (51 poses at 10 Hz) sampled on the 41-state scoring grid."""
    scene = golden["scene"]
    return PDMReference.from_global_poses(initial_state(scene), np.array(scene["pdm_closed_reference_poses_10hz"]),
                                          0.1, int(scene["t0_us"]))


def golden_road_map(scene: dict):
    """A `RoadMap` of a golden scene's lanes, for planners that need a lane graph (PDM-Closed).

    The fixture's lanes are axis-aligned rectangles along x: route lanes run along the route (+x),
    the others are the oncoming lanes (-x); successors are lanes whose start meets this one's end.
    """
    from sim.map import Area, Lane, RoadMap

    route = set(scene["route_lane_ids"])
    lanes, areas = {}, []
    for record in scene["map_polygons"]:
        coords = np.asarray(record["coords"], dtype=np.float64)
        kind = record["type"]
        if kind in ("LANE", "LANE_CONNECTOR"):
            (x0, y0), (x1, y1) = coords.min(axis=0), coords.max(axis=0)
            forward = str(record["token"]) in route
            xs = (x0, x1) if forward else (x1, x0)
            y_left, y_right = (y1, y0) if forward else (y0, y1)
            mid = 0.5 * (y0 + y1)
            lanes[str(record["token"])] = dict(
                centerline=np.array([[xs[0], mid], [xs[1], mid]]), left=np.array([[xs[0], y_left], [xs[1], y_left]]),
                right=np.array([[xs[0], y_right], [xs[1], y_right]]), connector=kind == "LANE_CONNECTOR")
        else:
            kinds = {"ROADBLOCK": "roadblock", "INTERSECTION": "intersection", "CARPARK_AREA": "carpark"}
            areas.append(Area(str(record["token"]), kinds[kind], shapely.Polygon(coords)))
    successors = {a: tuple(b for b in lanes if b != a and np.allclose(lanes[a]["centerline"][-1], lanes[b]["centerline"][0]))
                  for a in lanes}
    predecessors = {b: tuple(a for a in lanes if b in successors[a]) for b in lanes}
    return RoadMap([Lane(token, d["centerline"], d["left"], d["right"], 15.0, token, successors[token],
                         predecessors[token], d["connector"]) for token, d in lanes.items()], areas, name="golden")


def golden_objects(scene: dict):
    """The scene's objects at t = 0 as an `AgentSlice` (what a planner sees at cache time)."""
    from sim.state import AgentSlice, AgentType

    objects = [o for o in scene["objects"] if float(o["t_start"]) <= 0.0]
    get = lambda key: np.array([float(o[key]) for o in objects])  # noqa: E731
    return AgentSlice(x=get("x0"), y=get("y0"), heading=get("heading"), vx=get("vx"), vy=get("vy"),
                      valid=np.ones(len(objects), dtype=bool), length=get("length"), width=get("width"),
                      height=get("height"), agent_type=np.array([int(AgentType[o["type"]]) for o in objects]),
                      track_ids=[str(o["token"]) for o in objects])
