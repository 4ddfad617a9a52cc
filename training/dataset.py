"""The collected expert data as a torch Dataset that reads its shards memory-mapped (a data set larger than memory trains)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from training.collect import ARRAYS, FORMAT, FORMAT_VERSION


class DatasetError(ValueError):
    """A data folder is missing, incomplete or of another format: the message names the folder and what is wrong."""


class ExpertDataset(Dataset):
    """Samples of a `w0sim collect` folder: dicts of tensors (frames uint8 (F,H,W,3), trajectory (8,3), ego_poses
    (4,3), command) plus the command text. `indices` selects a subset (global sample numbers, in order)."""

    def __init__(self, root: str | Path, indices: np.ndarray | None = None):
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        if not manifest_path.exists():
            raise DatasetError(f"{self.root} is not a collected data folder: no manifest.json (run `w0sim collect`)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise DatasetError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        if manifest.get("version") != FORMAT_VERSION:
            raise DatasetError(f"{manifest_path}: format version {manifest.get('version')!r}, this w0sim reads version "
                               f"{FORMAT_VERSION}; collect the data again with `w0sim collect`")
        if not manifest.get("complete"):
            raise DatasetError(f"{manifest_path}: the collection did not finish; run the same `w0sim collect` again")
        self.manifest = manifest
        self.shards = [self.root / entry["name"] for entry in manifest["shards"]]
        counts = np.array([entry["samples"] for entry in manifest["shards"]], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._arrays: dict[int, dict[str, np.ndarray]] = {}  # opened lazily, per worker process
        self._texts: dict[int, list[str]] = {}
        total = int(self._starts[-1])
        self.indices = np.arange(total) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= total):
            raise DatasetError(f"{self.root}: sample indices outside 0..{total - 1}")

    @property
    def total_samples(self) -> int:
        return int(self._starts[-1])

    def record(self) -> dict:
        """What this data set is, for a model's training record: the collected split, the folder's content hash,
        and the samples taken (with a hash of their indices where they are a subset)."""
        record = {"split": self.manifest["split"], "content_hash": self.manifest["content_hash"],
                  "samples": len(self), "of": self.total_samples}
        if len(self) != self.total_samples:
            record["indices_sha256"] = hashlib.sha256(self.indices.astype("<i8").tobytes()).hexdigest()
        return record

    def __len__(self) -> int:
        return len(self.indices)

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        if k not in self._arrays:
            folder = self.shards[k]
            try:
                self._arrays[k] = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
                meta = json.loads((folder / "samples.json").read_text())
            except (OSError, ValueError) as err:
                raise DatasetError(f"{folder}: cannot read shard ({err})") from err
            self._texts[k] = [s["text"] for s in meta["samples"]]
        return self._arrays[k]

    def _locate(self, i: int) -> tuple[int, int]:
        """(shard, row in it) of selected sample i."""
        index = int(self.indices[i])
        k = int(np.searchsorted(self._starts, index, side="right") - 1)
        return k, index - int(self._starts[k])

    def stacked(self, name: str) -> np.ndarray:
        """Array `name` (one of the collected ARRAYS) of every selected sample, in order."""
        rows = [self._shard(k)[name][row] for k, row in map(self._locate, range(len(self)))]
        return np.stack(rows) if rows else np.zeros((0,))

    def __getitem__(self, i: int) -> dict:
        k, row = self._locate(i)
        arrays = self._shard(k)
        return {
            "history_frames": torch.from_numpy(np.array(arrays["history_frames"][row])),
            "future_frame": torch.from_numpy(np.array(arrays["future_frames"][row])),
            "trajectory": torch.from_numpy(np.array(arrays["trajectories"][row])),
            "ego_poses": torch.from_numpy(np.array(arrays["ego_poses"][row])),
            "command": torch.tensor(int(arrays["command"][row])),
            "text": self._texts[k][row],
        }


def collate(samples: list[dict]) -> dict:
    """Stack a list of samples into a batch (texts stay a list)."""
    batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0] if key != "text"}
    batch["text"] = [s["text"] for s in samples]
    return batch


__all__ = ["DatasetError", "ExpertDataset", "collate"]
