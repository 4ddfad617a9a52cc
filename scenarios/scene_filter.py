"""NAVSIM's scene filter, read from and written as its YAML (`config/common/train_test_split/scene_filter/*.yaml`).

A filter says which windows of which logs a split scores: windows of history + future frames starting every
`frame_interval` frames, only those whose current frame lists route roadblocks, of the logs in `log_names`, with
a current-frame token in `tokens` (NAVSIM's navtest lists 12,146 tokens, frame_interval 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

NAVSIM_TARGET = "navsim.common.dataclasses.SceneFilter"
_HYDRA_KEYS = ("_target_", "_convert_")


class SceneFilterError(ValueError):
    """A scene filter file cannot be used: names the file and what is wrong."""


@dataclass(frozen=True)
class SceneFilter:
    num_history_frames: int = 4
    num_future_frames: int = 10
    frame_interval: int | None = None  # None: a window's length (windows do not overlap)
    has_route: bool = True
    max_scenes: int | None = None
    log_names: tuple[str, ...] | None = None
    tokens: tuple[str, ...] | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SceneFilter":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise SceneFilterError(f"scene filter {path}: cannot be read: {err}") from None
        if not isinstance(data, dict):
            raise SceneFilterError(f"scene filter {path}: expected a mapping of SceneFilter fields")
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known - set(_HYDRA_KEYS)):
            raise SceneFilterError(f"scene filter {path}: unknown keys {unknown}; SceneFilter has {sorted(known)}")
        values = {k: v for k, v in data.items() if k in known}
        for key in ("log_names", "tokens"):
            if values.get(key) is not None:
                values[key] = tuple(str(v) for v in values[key])
        for key in ("num_history_frames", "num_future_frames", "frame_interval", "max_scenes"):
            value = values.get(key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise SceneFilterError(f"scene filter {path}: {key} must be a positive integer, got {value!r}")
        return cls(**values)

    def write_yaml(self, path: str | Path) -> Path:
        """Write the filter as NAVSIM's hydra config (instantiable as navsim.common.dataclasses.SceneFilter)."""
        data = {"_target_": NAVSIM_TARGET, "_convert_": "all", **asdict(self)}
        for key in ("log_names", "tokens"):
            if data[key] is not None:
                data[key] = list(data[key])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


__all__ = ["SceneFilter", "SceneFilterError"]
