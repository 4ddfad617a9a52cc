"""Synthetic rendered-like camera frames for policy tests: sky band, grey road trapezoid, boxes."""
from __future__ import annotations

import numpy as np
import torch


def road_frames(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(n,3,H,W) float32 in [0,1]: sky, green ground, grey road trapezoid, lane line, coloured boxes."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((n, 3, height, width), np.float32)
    for i in range(n):
        horizon = int(height * rng.uniform(0.35, 0.5))
        img = np.empty((height, width, 3), np.float32)
        img[:] = (0.25, 0.55, 0.2)  # ground
        img[:horizon] = (0.55, 0.75, 0.95)  # sky
        # Road trapezoid: narrow at the horizon, wide at the bottom, shifted by a random offset.
        t = np.clip((ys - horizon) / max(height - horizon, 1), 0, 1)
        centre = width / 2 + rng.uniform(-0.15, 0.15) * width * t
        half = (0.05 + 0.45 * t) * width
        road = (ys >= horizon) & (np.abs(xs - centre) < half)
        img[road] = (0.4, 0.4, 0.42)
        img[road & (np.abs(xs - centre) < 0.02 * width * (t + 0.2))] = (0.95, 0.95, 0.9)
        for _ in range(rng.integers(1, 4)):
            bh, bw = rng.integers(height // 10, height // 4), rng.integers(width // 16, width // 6)
            y0 = rng.integers(horizon, height - bh)
            x0 = rng.integers(0, width - bw)
            img[y0:y0 + bh, x0:x0 + bw] = rng.uniform(0.1, 0.9, 3)
        out[i] = img.transpose(2, 0, 1)
    return torch.from_numpy(out)
