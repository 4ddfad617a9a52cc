"""Scorer inputs from a NAVSIM golden-fixture scene (shared/fixtures/navsim_golden): map, observation, reference."""
from __future__ import annotations

import numpy as np

from metrics.observation import RED_LIGHT_PREFIX, Observation
from metrics.pdm import ScoringContext
from metrics.pdm_agent import PDMReference
from metrics.scoring_map import ScoringMap
from sim.state import ego_state

OBSERVATION_STEPS = {"v1.1": 51, "v2.2": 41}  # v1 metric cache: 0..5 s; v2: 0..4 s


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
