"""Writing frame sequences to mp4 (H.264 through imageio-ffmpeg) and contact sheets."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import imageio.v2 as imageio
import numpy as np


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float = 10.0) -> Path:
    """Encode RGB uint8 frames (H, W, 3) to an H.264 mp4 playable in browsers (yuv420p); an error where no video
    came out (no frames, or ffmpeg refused), which imageio's writer does not raise itself."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a failed encode must not leave an older video standing in for this one
    written = 0
    with imageio.get_writer(path, fps=fps, codec="libx264", pixelformat="yuv420p", quality=8,
                            macro_block_size=2, ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(_even(frame))
            written += 1
    if written == 0:
        raise ValueError(f"{path}: no frames to write")
    if not path.is_file() or path.stat().st_size == 0:
        raise OSError(f"ffmpeg wrote no video to {path} (its messages above say why)")
    return path


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: pad by one pixel where needed."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def contact_sheet(frames: list[np.ndarray], columns: int = 4, max_frames: int = 12) -> np.ndarray:
    """Evenly spaced frames tiled in a grid, for a quick look without a video player."""
    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    picks = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    tiles = [frames[i] for i in picks]
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = cv2.resize(tile, (w, h)) if tile.shape[:2] != (h, w) else tile
    return sheet
