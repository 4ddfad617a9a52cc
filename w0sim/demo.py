"""A closed-loop demo episode on a generated scene, driven by the IDM route follower agent, saved as mp4 (it exercises
the generator, the environment, the tracker, the traffic and both renderers end to end)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agents.route_follower import RouteFollowerAgent
from scenarios.generator import FAMILIES
from sim.envs.backends.builtin import TRAFFIC_MODES
from sim.envs.closed_loop_env import ClosedLoopEnv
from w0sim.video import contact_sheet, write_mp4


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
    """Drive one generated scene closed-loop; write `demo.mp4` and `demo_contact_sheet.png` to out_dir. A family
    other than the generator's `FAMILIES`, traffic other than `TRAFFIC_MODES` or a negative seed: ValueError."""
    import cv2

    if family not in FAMILIES:
        raise ValueError(f"unknown scene family {family!r}; choose one of {', '.join(FAMILIES)}")
    if traffic not in TRAFFIC_MODES:
        raise ValueError(f"unknown traffic {traffic!r}; choose one of {', '.join(TRAFFIC_MODES)}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    out_dir = Path(out_dir)
    env = ClosedLoopEnv(families=[family], traffic=traffic, render_mode="rgb_array", cameras=False, privileged=True)
    _, info = env.reset(seed=seed)
    driver = RouteFollowerAgent()
    frames = [env.render()]
    steps = 0
    while True:
        action = driver.compute_trajectory(info["agent_input"], info["world"]).poses
        _, _, terminated, truncated, info = env.step(action)
        frames.append(env.render())
        steps += 1
        if terminated or truncated:
            break
    video = write_mp4(frames, out_dir / "demo.mp4", fps=2.0)
    sheet_path = out_dir / "demo_contact_sheet.png"
    cv2.imwrite(str(sheet_path), cv2.cvtColor(contact_sheet(frames), cv2.COLOR_RGB2BGR))
    return DemoResult(video, sheet_path, steps, info["route_fraction"], info["collisions"], info["red_lights"],
                      info["offroad_steps"])


__all__ = ["FAMILIES", "TRAFFIC_MODES", "DemoResult", "run_demo"]
