"""A scene's summary as plain data (what `w0sim scenes show` prints)."""
from __future__ import annotations

import numpy as np

from sim.scene import DRIVING_COMMANDS, STEP_S, Scene
from sim.state import AgentType


def scene_summary(scene: Scene) -> dict:
    now = scene.current_index
    types = scene.agents.agent_type[scene.agents.valid[now]]
    ego = scene.initial_ego_state
    return {
        "token": scene.token,
        "family": scene.family,
        "source": scene.metadata.get("source"),
        "seed": scene.metadata.get("seed"),
        "duration_s": round((scene.num_steps - 1) * STEP_S, 2),
        "history_s": round(now * STEP_S, 2),
        "map": {"lanes": len(scene.map.lanes), "connectors": sum(l.is_connector for l in scene.map.lanes),
                "areas": {k: sum(a.kind == k for a in scene.map.areas) for k in sorted({a.kind for a in scene.map.areas})},
                "traffic_lights": len(scene.light_ids)},
        "agents_now": {t.name.lower(): int(np.sum(types == t)) for t in AgentType if np.any(types == t)},
        "ego": {"x": round(float(ego[0]), 2), "y": round(float(ego[1]), 2), "heading": round(float(ego[2]), 3),
                "speed": round(float(ego[3]), 2)},
        "route": scene.route,
        "driving_command": DRIVING_COMMANDS[int(scene.driving_command[now])],
        "command_text": scene.command_text,
    }
