"""A closed-loop demo episode on a generated scene, driven by a privileged IDM route follower, saved as mp4.

Stands in for the main job until `w0sim eval` exists: it exercises the generator, the
environment, the tracker, the traffic and both renderers end to end.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.geometry import PACIFICA, global_to_local
from sim.state import AgentType, TrajectorySampling
from sim.traffic import AgentPaths, IDMParameters, IDMTraffic, Obstacles
from w0sim.video import contact_sheet, write_mp4


class RouteFollower:
    """Plans 4 s along the route with IDM: objects on the next 40 m of the route (at constant velocity), red lights."""

    def __init__(self, env: ClosedLoopEnv, sampling: TrajectorySampling = TrajectorySampling()):
        self.env = env
        self.sampling = sampling
        self.params = IDMParameters(corridor_lookahead=40.0)

    def plan(self) -> np.ndarray:
        sim, scene = self.env.sim, self.env.scene
        ego = sim.ego
        road_map = scene.map
        route = scene.route
        centre = ego[:2] + PACIFICA.rear_axle_to_center * np.array([np.cos(ego[2]), np.sin(ego[2])])
        paths = AgentPaths.build(road_map, [route])
        s0 = float(np.argmin(np.linalg.norm(paths.points[0] - centre, axis=1)) * 0.5)
        me = IDMTraffic(road_map, paths, s=np.array([s0]), v=np.array([max(ego[3], 0.0)]),
                        desired_speed=np.array([road_map.lane(route[0]).speed_limit]), length=np.array([PACIFICA.length]),
                        width=np.array([PACIFICA.width]), light_ids=scene.light_ids, params=self.params)
        agents = sim.agents()
        keep = agents.valid & (agents.agent_type != AgentType.GENERIC_OBJECT)
        x, y, vx, vy = agents.x[keep], agents.y[keep], agents.vx[keep], agents.vy[keep]
        status = sim.light_status()
        dt, steps = 0.1, int(round(self.sampling.time_horizon / 0.1))
        poses = []
        for k in range(steps):
            obstacles = Obstacles(x + vx * k * dt, y + vy * k * dt, agents.heading[keep], np.hypot(vx, vy),
                                  agents.length[keep], agents.width[keep])
            me.step(dt, obstacles, status)
            px, py, ph = me.poses()
            poses.append([px[0] - PACIFICA.rear_axle_to_center * np.cos(ph[0]),
                          py[0] - PACIFICA.rear_axle_to_center * np.sin(ph[0]), ph[0]])
        stride = int(round(self.sampling.interval / dt))
        return global_to_local(np.array(poses)[stride - 1 :: stride], ego[:3])


@dataclass
class DemoResult:
    video: Path
    contact_sheet: Path
    steps: int
    route_fraction: float
    collisions: int
    red_lights: int
    offroad_steps: int


def run_demo(out_dir: str | Path, family: str = "intersection", seed: int = 0, traffic: str = "reactive") -> DemoResult:
    """Drive one generated scene closed-loop; write `demo.mp4` and `demo_contact_sheet.png` to out_dir."""
    import cv2

    out_dir = Path(out_dir)
    env = ClosedLoopEnv(families=[family], traffic=traffic, render_mode="rgb_array", cameras=False)
    env.reset(seed=seed)
    driver = RouteFollower(env)
    frames = [env.render()]
    steps, info = 0, {}
    while True:
        _, _, terminated, truncated, info = env.step(driver.plan())
        frames.append(env.render())
        steps += 1
        if terminated or truncated:
            break
    video = write_mp4(frames, out_dir / "demo.mp4", fps=2.0)
    sheet_path = out_dir / "demo_contact_sheet.png"
    cv2.imwrite(str(sheet_path), cv2.cvtColor(contact_sheet(frames), cv2.COLOR_RGB2BGR))
    return DemoResult(video, sheet_path, steps, info["route_fraction"], info["collisions"], info["red_lights"],
                      info["offroad_steps"])
