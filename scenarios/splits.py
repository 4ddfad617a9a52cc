"""Named scene sets: the built-in splits (fixed seeds and sizes, the same on every machine) and directories of scene files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scenarios.generator import FAMILIES, generate_scene, scene_specs
from scenarios.generator.generate import scene_token
from scenarios.scene import Scene, load_scene


@dataclass(frozen=True)
class BuiltinSplit:
    """Generated scenes `scene_specs(size, seed)`: scene i is family i mod 5 with seed seed * 1000003 + i."""

    name: str
    seed: int
    size: int
    kind: str  # "one_shot" (NAVSIM-style scoring) or "closed_loop" (Leaderboard-style routes)
    description: str


BUILTIN_SPLITS = {
    split.name: split for split in (
        BuiltinSplit("navtrain", 1, 100_000, "one_shot", "training scenes for data collection"),
        BuiltinSplit("navtest", 2, 500, "one_shot", "held-out test scenes, 100 per family"),
        BuiltinSplit("routes", 3, 50, "closed_loop", "closed-loop routes, 10 per family"),
    )
}


class SplitError(ValueError):
    """A split name or directory cannot be resolved: the message says what was given and what exists."""


@dataclass(frozen=True)
class SceneRef:
    """One scene of a split: generated from (family, seed) or read from a file."""

    token: str
    family: str | None = None
    seed: int | None = None
    path: Path | None = None

    def load(self) -> Scene:
        if self.path is not None:
            return load_scene(self.path)
        return generate_scene(self.family, self.seed)


def builtin_split(name: str) -> BuiltinSplit:
    if name not in BUILTIN_SPLITS:
        raise SplitError(f"unknown built-in split {name!r}; expected one of {sorted(BUILTIN_SPLITS)}")
    return BUILTIN_SPLITS[name]


def resolve_split(spec: str, limit: int | None = None) -> list[SceneRef]:
    """Scenes of `builtin:NAME` or of a directory of `.npz` scene files (sorted by name); the first `limit`."""
    if spec.startswith("builtin:"):
        split = builtin_split(spec.removeprefix("builtin:"))
        count = split.size if limit is None else min(limit, split.size)
        return [SceneRef(scene_token(family, seed), family, seed) for family, seed in scene_specs(count, split.seed, FAMILIES)]
    directory = Path(spec)
    if not directory.is_dir():
        raise SplitError(f"split {spec!r} is neither builtin:{{{','.join(BUILTIN_SPLITS)}}} nor a directory")
    files = sorted(directory.glob("*.npz"))
    if not files:
        raise SplitError(f"split directory {directory} holds no .npz scene files")
    files = files if limit is None else files[:limit]
    return [SceneRef(path.stem, path=path) for path in files]


__all__ = ["BUILTIN_SPLITS", "BuiltinSplit", "SceneRef", "SplitError", "builtin_split", "resolve_split"]
