"""A closed-loop demo episode on a generated scene, driven by a privileged IDM route follower, saved as mp4.

Stands in for the main job until `w0sim eval` exists: it exercises the generator, the
environment, the tracker, the traffic and both renderers end to end.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.pdm_proposals import ProposalConfig, idm_proposals
from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.geometry import global_to_local
from sim.state import TrajectorySampling
from sim.traffic import IDMParameters
from w0sim.video import contact_sheet, write_mp4


class RouteFollower:
    """A privileged IDM driver: PDM-Closed's centre proposal at full speed, without the scoring
    (objects forecast at constant velocity, red lights, leads on the next 40 m of the route)."""

    def __init__(self, env: ClosedLoopEnv, sampling: TrajectorySampling = TrajectorySampling()):
        self.env = env
        self.sampling = sampling
        self.config = ProposalConfig(lateral_offsets=(0.0,), speed_fractions=(1.0,),
                                     horizon_steps=int(round(sampling.time_horizon / 0.1)),
                                     idm=IDMParameters(corridor_lookahead=40.0, follow_each_other=False))

    def plan(self) -> np.ndarray:
        sim, scene = self.env.sim, self.env.scene
        poses = idm_proposals(scene.map, scene.route, sim.ego, sim.agents(), scene.light_ids, sim.light_status(), self.config)[0]
        stride = int(round(self.sampling.interval / 0.1))
        return global_to_local(poses[stride::stride], sim.ego[:3])


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
