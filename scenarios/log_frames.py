"""What a NAVSIM log records of a scene: its 2 Hz frames, and the 10 Hz values NAVSIM rebuilds from them.

A NAVSIM/OpenScene log holds one frame every 0.5 s; the metric cache interpolates object boxes to
10 Hz between the frames a track is seen in (spec §3.5), starts the ego from the logged pose,
velocity and acceleration with steering, steering rate, yaw rate and yaw acceleration 0 (§3.2),
and knows each light as red or not (§4.1).
One-shot scoring uses these rules for every scene, so a generated scene and the same scene
written to and read back from NAVSIM's file formats score the same.
"""
from __future__ import annotations

import hashlib

import numpy as np

from sim.geometry import principal_value
from sim.state import StateIndex
from sim.world_view import logged_ego_state

FRAME_STRIDE = 5  # 10 Hz steps per 2 Hz log frame
ADJACENT_FRAMES_S = 0.55  # NAVSIM's two-frame EC pairs scenes of one log whose current frames are this close


def frame_token(scene_token: str, step: int) -> str:
    """The token of a generated scene's 2 Hz frame at 10 Hz step `step` (not the scene's current frame: that one
    carries the scene's token), 16 hex characters like NAVSIM's."""
    return hashlib.sha256(f"{scene_token}/frame/{step}".encode()).hexdigest()[:16]


def frame_steps(current_index: int, num_steps: int) -> np.ndarray:
    """10 Hz steps that are 2 Hz log frames: the current step and every 5th step before and after it."""
    return np.arange(current_index % FRAME_STRIDE, num_steps, FRAME_STRIDE)


def window_steps(current_index: int, num_frames: int, num_steps: int) -> np.ndarray:
    """Steps of the current frame and the `num_frames - 1` frames after it; frames past the log's end repeat its last
    frame (the object then stands where it was last logged)."""
    last = frame_steps(current_index, num_steps)[-1]
    return np.minimum(current_index + FRAME_STRIDE * np.arange(num_frames), last)


def interpolate_tracks(frames: dict[str, np.ndarray], valid: np.ndarray, stride: int = FRAME_STRIDE,
                       hold_single: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """10 Hz tracks from 2 Hz frames, NAVSIM's way (MCP `_interpolate_gt_observation`).

    `frames` maps "x", "y", "heading", "vx", "vy" to (F, N) arrays; `valid` (F, N) says where a track is
    seen. Each track is interpolated linearly (heading along the shorter arc) between the frames it is
    seen in and is absent before its first and after its last; the result has (F - 1) * stride + 1 steps.
    With `hold_single`, a track seen in one frame only stands at that pose for the whole window (a
    quirk of NAVSIM v1.1's metric cache).
    """
    valid = np.asarray(valid, dtype=bool)
    num_frames, num_tracks = valid.shape
    frame_index = np.arange(num_frames)[:, None]
    # Per frame and track: the last frame at or before it, and the first at or after it, where the track is seen.
    seen_before = np.maximum.accumulate(np.where(valid, frame_index, -1), axis=0)
    seen_after = np.minimum.accumulate(np.where(valid, frame_index, num_frames)[::-1], axis=0)[::-1]
    tau = np.arange((num_frames - 1) * stride + 1) / stride  # time in frames
    floor = np.floor(tau).astype(np.int64)
    ceil = np.minimum(floor + (tau > floor), num_frames - 1)
    lo, hi = seen_before[floor], seen_after[ceil]  # (T, N)
    inside = (lo >= 0) & (hi < num_frames)
    lo_c, hi_c = np.clip(lo, 0, num_frames - 1), np.clip(hi, 0, num_frames - 1)
    span = np.where(hi_c > lo_c, hi_c - lo_c, 1)
    weight = np.where(hi_c > lo_c, (tau[:, None] - lo_c) / span, 0.0)
    cols = np.arange(num_tracks)[None, :]
    out = {}
    for name, values in frames.items():
        values = np.asarray(values, dtype=np.float64)
        a, b = values[lo_c, cols], values[hi_c, cols]
        delta = principal_value(b - a) if name == "heading" else b - a
        value = a + weight * delta
        out[name] = principal_value(value) if name == "heading" else value
    if hold_single:
        single = valid.sum(axis=0) == 1
        if single.any():
            only = np.argmax(valid, axis=0)[single]
            for name, values in frames.items():
                out[name][:, single] = np.asarray(values, dtype=np.float64)[only, np.flatnonzero(single)]
            inside[:, single] = True
    for name in out:
        out[name] = np.where(inside, out[name], 0.0)
    return out, inside


def interpolate_states(frames: np.ndarray, stride: int = FRAME_STRIDE) -> np.ndarray:
    """(( F - 1) * stride + 1, 11) ego states at 10 Hz from logged states (F, 11): pose, velocity and acceleration
    linear (heading along the shorter arc), the unlogged rest 0."""
    frames = logged_ego_state(frames)
    tau = np.arange((len(frames) - 1) * stride + 1) / stride
    lo = np.minimum(np.floor(tau).astype(np.int64), len(frames) - 1)
    hi = np.minimum(lo + 1, len(frames) - 1)
    weight = (tau - lo)[:, None]
    delta = frames[hi] - frames[lo]
    delta[:, StateIndex.HEADING] = principal_value(delta[:, StateIndex.HEADING])
    states = frames[lo] + weight * delta
    states[:, StateIndex.HEADING] = principal_value(states[:, StateIndex.HEADING])
    return states


def hold_frames(values: np.ndarray, stride: int = FRAME_STRIDE) -> np.ndarray:
    """((F - 1) * stride + 1, ...) 10 Hz values from 2 Hz ones, each frame held until the next."""
    values = np.asarray(values)
    return np.repeat(values, stride, axis=0)[: (len(values) - 1) * stride + 1]
