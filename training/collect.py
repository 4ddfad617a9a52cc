"""Expert data from the simulator: PDM-Closed plans on generated scenes, with the camera frames before and after, in shards.

One sample = a decision at log step t of a scene: the front-camera frames of the history (t - 1 s and t by
default), the ego poses of the agent input (4 poses 0.5 s apart, relative to the current one: the policy's past
motions), the driving command and its text, PDM-Closed's trajectory (8 poses at
0.5 s in the ego frame) and the ground-truth future frame: the camera 1 s ahead *on the expert's plan*
(non-reactive: the logged objects and lights of t + 1 s), so the world model learns the frame the action
leads to. The expert plans from `WorldView.from_log(scene, t, as_logged=False)`: the scene's full state at t
(steering, yellow lights), as the live closed-loop view gives it, not the reduced view of a NAVSIM log. Frames are
rendered at the environment's camera resolution and area-downsampled to the policy's.

Layout of DIR: `manifest.json` plus `shard_00000/ ...` each holding `history_frames.npy` (n, F, H, W, 3)
uint8, `future_frames.npy` (n, H, W, 3) uint8, `trajectories.npy` (n, 8, 3) float32, `ego_poses.npy`
(n, 4, 3) float32, `command.npy` (n,) int8 and `samples.json` (token, family, seed, step, text per
sample; failed scenes with their reasons). A shard is written to a temporary folder and renamed, so a
killed run leaves only whole shards; running again skips them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from agents.lane_following_pdm import LaneFollowingPDMPlanner
from agents.pdm_closed import plan_to_local
from scenarios.splits import SceneRef, resolve_split
from sim.agent_input import NUM_HISTORY_FRAMES, build_agent_input, history_indices
from sim.envs.frames import FrameRenderer
from sim.render.camera import CameraConfig, downsample_frames
from sim.scene import STEP_S
from sim.state import TrajectorySampling
from sim.world_view import WorldView

FORMAT = "w0sim-expert-data"
FORMAT_VERSION = 2  # 2: ego_poses replaced speed and accel
ARRAYS = ("history_frames", "future_frames", "trajectories", "ego_poses", "command")


@dataclass(frozen=True)
class CollectConfig:
    """What a sample holds. Defaults match the `tiny` policy: 2 history frames 1 s apart, 128x64."""

    frame_height: int = 64
    frame_width: int = 128
    history_steps: tuple[int, ...] = (10, 0)  # 10 Hz steps before t, oldest first
    future_step: int = 10  # the ground-truth future frame, steps after t
    sample_offsets: tuple[int, ...] = (0, 15)  # decisions at the scene's current step + these
    scenes_per_shard: int = 25
    camera: CameraConfig = field(default_factory=CameraConfig)

    @classmethod
    def for_policy(cls, config, **overrides) -> "CollectConfig":
        """From a `DriveVLAW0Config` (frame size, history frames and their spacing)."""
        stride = int(round(config.frame_interval_s / STEP_S))
        history = tuple(stride * k for k in range(config.num_history_frames - 1, -1, -1))
        return cls(frame_height=config.image_height, frame_width=config.image_width, history_steps=history,
                   future_step=stride, **overrides)


class CollectError(RuntimeError):
    """The output folder holds data of another configuration or split."""


def expert_samples(scene, config: CollectConfig, planner: LaneFollowingPDMPlanner, sampling: TrajectorySampling) -> dict:
    """The samples of one scene as arrays (see the module docstring) plus per-sample metadata."""
    frames = FrameRenderer(scene.map, config.camera)
    out: dict[str, list] = {name: [] for name in ARRAYS} | {"meta": []}
    last_needed = max(sampling.num_poses * round(sampling.interval / STEP_S), config.future_step)
    for offset in config.sample_offsets:
        t = scene.current_index + offset
        if t - max(config.history_steps) < 0 or t + last_needed >= scene.num_steps:
            continue
        world = WorldView.from_log(scene, t, as_logged=False)  # the expert sees the scene's full state at t
        ego = world.ego_state
        plan = planner.plan_view(world)
        history = np.stack([frames.log_camera(scene, t - k) for k in config.history_steps])
        future_t = t + config.future_step
        future = frames.camera(plan.poses[config.future_step], scene.agents.at(future_t), scene.light_status_at(future_t))
        agent_input = build_agent_input(scene.ego_log[history_indices(t)], int(scene.driving_command[t]),
                                        scene.command_text)
        size = (config.frame_height, config.frame_width)
        out["history_frames"].append(downsample_frames(history, *size))
        out["future_frames"].append(downsample_frames(future, *size))
        out["trajectories"].append(plan_to_local(plan.poses, ego, sampling).astype(np.float32))
        out["ego_poses"].append(agent_input.ego_poses.astype(np.float32))
        out["command"].append(np.int8(scene.driving_command[t]))
        out["meta"].append({"step": int(t), "text": scene.command_text})
    return out


def collect_shard(out_dir: Path, index: int, scenes: list[SceneRef], config: CollectConfig) -> dict:
    """Write shard `index` (its scenes' samples) atomically; return its manifest entry."""
    final = out_dir / f"shard_{index:05d}"
    if (final / "samples.json").exists():
        return _shard_entry(final)
    planner, sampling = LaneFollowingPDMPlanner(), TrajectorySampling()
    arrays: dict[str, list] = {name: [] for name in ARRAYS}
    samples, failures = [], []
    for ref in scenes:
        try:
            got = expert_samples(ref.load(), config, planner, sampling)
        except Exception as err:  # a failing scene is recorded and the shard goes on
            failures.append({"token": ref.token, "reason": f"{type(err).__name__}: {err}"})
            continue
        for name in ARRAYS:
            arrays[name].extend(got[name])
        samples.extend({"token": ref.token, "family": ref.family, "seed": ref.seed, **m} for m in got["meta"])
    tmp = out_dir / f".tmp_shard_{index:05d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    empty = _empty_arrays(config)
    for name in ARRAYS:
        value = np.stack(arrays[name]) if arrays[name] else empty[name]
        np.save(tmp / f"{name}.npy", value)
    (tmp / "samples.json").write_text(json.dumps({"samples": samples, "failures": failures}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return _shard_entry(final)


def _empty_arrays(config: CollectConfig) -> dict[str, np.ndarray]:
    h, w, f = config.frame_height, config.frame_width, len(config.history_steps)
    return {"history_frames": np.zeros((0, f, h, w, 3), np.uint8), "future_frames": np.zeros((0, h, w, 3), np.uint8),
            "trajectories": np.zeros((0, 8, 3), np.float32),
            "ego_poses": np.zeros((0, NUM_HISTORY_FRAMES, 3), np.float32), "command": np.zeros(0, np.int8)}


def _shard_entry(folder: Path) -> dict:
    digest = hashlib.sha256()
    for name in (*(f"{a}.npy" for a in ARRAYS), "samples.json"):
        digest.update((folder / name).read_bytes())
    meta = json.loads((folder / "samples.json").read_text())
    return {"name": folder.name, "samples": len(meta["samples"]), "failures": len(meta["failures"]),
            "sha256": digest.hexdigest()}


def collect(split: str, num_scenes: int, out_dir: str | Path, config: CollectConfig = CollectConfig(),
            workers: int | None = None, progress=None) -> dict:
    """Collect expert samples of the first `num_scenes` scenes of `split` into `out_dir`; resumes a previous
    run of the same arguments. `progress(done_shards, total_shards)` is called once the shards are known (0 done)
    and as they finish."""
    out_dir = Path(out_dir)
    scenes = resolve_split(split, num_scenes)  # a split that does not resolve leaves no folder behind
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "version": FORMAT_VERSION, "split": split, "scenes": num_scenes,
              "config": _jsonable(asdict(config))}
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        if {k: previous.get(k) for k in header} != header:
            raise CollectError(f"{out_dir} holds data of another collection ({manifest_path}); use a new folder")
    _write_json(manifest_path, {**header, "complete": False, "shards": []})
    size = config.scenes_per_shard
    chunks = [scenes[i : i + size] for i in range(0, len(scenes), size)]
    workers = workers or os.cpu_count() or 1
    entries: list[dict | None] = [None] * len(chunks)
    if progress is not None and chunks:
        progress(0, len(chunks))
    with ProcessPoolExecutor(workers) as pool:
        futures = {pool.submit(collect_shard, out_dir, i, chunk, config): i for i, chunk in enumerate(chunks)}
        for done, future in enumerate(as_completed(futures), 1):
            entries[futures[future]] = future.result()
            if progress is not None:
                progress(done, len(chunks))
    content = hashlib.sha256("".join(e["sha256"] for e in entries).encode()).hexdigest()
    manifest = {**header, "complete": True, "shards": entries, "samples": sum(e["samples"] for e in entries),
                "failures": sum(e["failures"] for e in entries), "content_hash": content}
    _write_json(manifest_path, manifest)
    return manifest


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)


__all__ = ["CollectConfig", "CollectError", "collect", "collect_shard", "expert_samples"]
