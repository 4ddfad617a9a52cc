"""scenarios.summary: what `w0sim scenes show` prints about a scene."""
import dataclasses

import numpy as np

from scenarios.generator import generate_scene
from scenarios.summary import scene_summary
from sim.state import AgentType


def test_agents_now_counts_the_objects_present_at_the_current_frame_by_type():
    """Tracks 0-4 vehicles, 5-8 pedestrians, the rest cones; present now: vehicles 0-2, pedestrian 5, cones 9-10 (every
    track is present one frame later, which does not count). Types with none present are left out."""
    scene = generate_scene("intersection", 0)
    now, tracks = scene.current_index, scene.agents.valid.shape[1]
    assert tracks >= 11
    types = np.array([AgentType.VEHICLE] * 5 + [AgentType.PEDESTRIAN] * 4 + [AgentType.TRAFFIC_CONE] * (tracks - 9))
    valid = np.zeros_like(scene.agents.valid)
    valid[now, [0, 1, 2, 5, 9, 10]] = True
    valid[now + 1] = True
    agents = dataclasses.replace(scene.agents, agent_type=types.astype(scene.agents.agent_type.dtype), valid=valid)
    summary = scene_summary(dataclasses.replace(scene, agents=agents))
    assert summary["agents_now"] == {"vehicle": 3, "pedestrian": 1, "traffic_cone": 2}
