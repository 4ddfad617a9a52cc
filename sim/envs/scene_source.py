"""Where an environment's scenes come from: a directory of scene files, a list, or the procedural generator."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from scenarios.generator import FAMILIES, GeneratorConfig, generate_scene
from scenarios.scene import load_scene
from sim.scene import Scene

SCENE_SUFFIX = ".npz"


class SceneSource:
    """Scenes for `reset`. A directory or a list is indexed; the generator draws a seed per reset.

    `scenes` may be None (generator), a directory (str or Path) of `*.npz` scene files, or a list of
    `Scene` objects, file paths and/or references loaded when drawn (anything with `load()`, e.g. a split's
    `SceneRef`). `options={"scene_index": i}` picks a listed scene, and
    `options={"scene": scene}` any scene, at reset.
    """

    def __init__(self, scenes: str | Path | Sequence[Scene | str | Path] | None = None,
                 families: Sequence[str] = FAMILIES, generator_config: GeneratorConfig | None = None):
        self.families = tuple(families)
        for family in self.families:
            if family not in FAMILIES:
                raise ValueError(f"unknown scene family {family!r}; expected some of {FAMILIES}")
        self.generator_config = generator_config or GeneratorConfig()
        if scenes is None:
            self.items: list[Scene | Path] | None = None
        elif isinstance(scenes, (str, Path)):
            folder = Path(scenes)
            if not folder.is_dir():
                raise FileNotFoundError(f"scene directory {folder} does not exist")
            self.items = sorted(folder.glob(f"*{SCENE_SUFFIX}"))
            if not self.items:
                raise FileNotFoundError(f"scene directory {folder} holds no *{SCENE_SUFFIX} scene files")
        else:
            self.items = [s if isinstance(s, Scene) or hasattr(s, "load") else Path(s) for s in scenes]
            if not self.items:
                raise ValueError("the scene list is empty")

    def __len__(self) -> int:
        """Number of listed scenes; 0 for the generator (unbounded)."""
        return 0 if self.items is None else len(self.items)

    def get(self, rng: np.random.Generator, options: dict | None = None) -> Scene:
        options = options or {}
        if "scene" in options:
            return options["scene"]
        if self.items is None:
            family = self.families[int(rng.integers(len(self.families)))]
            return generate_scene(family, int(rng.integers(2**31 - 1)), self.generator_config)
        index = options.get("scene_index")
        index = int(rng.integers(len(self.items))) if index is None else int(index)
        if not 0 <= index < len(self.items):
            raise IndexError(f"scene_index {index} is outside 0..{len(self.items) - 1} of this scene list")
        item = self.items[index]
        if isinstance(item, Scene):
            return item
        return item.load() if hasattr(item, "load") else load_scene(item)
