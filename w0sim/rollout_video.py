"""Side-by-side world-model rollout videos: what the policy's world model predicted beside what the simulator shows.

One video per scene, one frame per `frame_interval_s` from the current frame to the end of the plan:
- left: the ground-truth camera, rendered by the simulator at the poses the planned trajectory reaches
  after tracking (non-reactive: the logged objects and lights of that time), at the policy's resolution;
- middle: the frame the world model predicted for that time (decoded from its tokens or latents),
  rolled out from the history frames with the policy re-planning at each predicted frame;
- right: a BEV with the map, the objects, the planned (green), executed (orange) and logged (grey) paths;
- captions: time, scene, and the scene's scores.
A contact sheet png beside each mp4 gives a quick look without a player.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agents.base import WorldModelAgent
from sim.envs.frames import COMPOSITE_BEV, EXECUTED_COLOUR, LOGGED_COLOUR, PLANNED_COLOUR
from sim.envs.navsim_env import NavsimSceneEnv
from sim.render.bev import bev_to_rgb, draw_bev_polylines, render_bev_channels
from sim.render.camera import CameraRenderer, downsample_frames
from sim.scene import STEP_S, Scene
from w0sim.score import SHORT_NAMES
from w0sim.video import contact_sheet, write_mp4

PANEL_HEIGHT = 256
CAPTION_HEIGHT = 40
SCORE_NAMES = {"v1.1": "PDMS", "v2.2": "EPDMS"}


@dataclass
class RolloutVideo:
    video: Path
    contact_sheet: Path
    frames: int
    score: float
    mean_abs_error: list[float]  # per predicted frame, predicted vs ground truth (0-255 scale)


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _panel(image: np.ndarray, width: int) -> np.ndarray:
    return cv2.resize(image, (width, PANEL_HEIGHT), interpolation=cv2.INTER_NEAREST)


def render_rollout(agent: WorldModelAgent, scene: Scene, out_path: str | Path, pdm_version: str = "v1.1",
                   seed: int = 0, top_k: int = 0) -> RolloutVideo:
    """Plan with `agent` on `scene`, score the plan, roll the agent's world model out over the plan's horizon
    (greedy, or sampled from its `top_k` most likely image tokens with `seed`) and write `out_path` (mp4) and
    `<stem>_contact_sheet.png`."""
    agent.initialize()
    env = NavsimSceneEnv(scenes=[scene], pdm_version=pdm_version, privileged=agent.privileged)
    _, info = env.reset(seed=0)
    agent_input = info["agent_input"]
    trajectory = agent.compute_trajectory(agent_input, info.get("world"))
    _, score, _, _, result = env.step(trajectory.poses)
    interval = agent.frame_interval_s
    stride = int(round(interval / STEP_S))
    steps = int(round(trajectory.sampling.time_horizon / interval))
    predicted = agent.predict_frames(agent_input, steps, seed, top_k)  # (K, h, w, 3) uint8
    image_height, image_width = predicted.shape[1:3]

    now = scene.current_index
    ego = scene.initial_ego_state
    executed = result.get("simulated_states")
    planned = result.get("trajectory_global")
    logged = scene.ego_log[now:, :3]
    camera = CameraRenderer(scene.map, env.camera)
    size = (image_height, image_width)
    width = int(round(PANEL_HEIGHT * image_width / image_height))
    scores = result.get("scores", {})
    caption = " ".join(f"{SHORT_NAMES[k]} {v:.2f}" for k, v in scores.items() if k in SHORT_NAMES)
    frames, errors = [], []
    for k in range(steps + 1):
        t = min(now + k * stride, scene.num_steps - 1)
        pose = ego[:3] if executed is None else executed[min(k * stride, len(executed) - 1), :3]
        truth = downsample_frames(camera.render(pose, scene.agents.at(t), scene.light_status_at(t)), *size)
        if k == 0:
            guess, label = downsample_frames(agent_input.cameras[-1], *size), "current frame (input)"
        else:
            guess, label = predicted[k - 1], f"world model, t+{k * interval:g} s"
            errors.append(float(np.abs(guess.astype(np.float64) - truth).mean()))
        bev = bev_to_rgb(render_bev_channels(scene.map, pose, scene.agents.at(t), scene.route, COMPOSITE_BEV))
        lines = [(logged, LOGGED_COLOUR), (planned, PLANNED_COLOUR),
                 (None if executed is None else executed[:, :3], EXECUTED_COLOUR)]
        draw_bev_polylines(bev, pose, [np.asarray(p)[:, :2] for p, _ in lines if p is not None],
                           [c for p, c in lines if p is not None], COMPOSITE_BEV, thickness=2, point_radius=0)
        row = np.concatenate([_label(_panel(truth, width), f"simulator, t+{k * interval:g} s"),
                              _label(_panel(guess, width), label),
                              _label(cv2.resize(bev, (PANEL_HEIGHT, PANEL_HEIGHT)), "BEV")], axis=1)
        bar = np.full((CAPTION_HEIGHT, row.shape[1], 3), 255, np.uint8)
        text = f"{scene.family} {scene.token}  {SCORE_NAMES[pdm_version]} {score:.3f}  {caption}"
        cv2.putText(bar, text, (8, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        frames.append(np.concatenate([row, bar], axis=0))
    out_path = Path(out_path)
    video = write_mp4(frames, out_path, fps=1.0)
    sheet = out_path.with_name(out_path.stem + "_contact_sheet.png")
    cv2.imwrite(str(sheet), cv2.cvtColor(contact_sheet(frames, columns=1), cv2.COLOR_RGB2BGR))
    return RolloutVideo(video, sheet, len(frames), float(score), errors)


__all__ = ["RolloutVideo", "render_rollout"]
