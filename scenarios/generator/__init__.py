"""Seeded procedural scenes: road networks of five families, traffic, and a replayable 10 Hz log."""
from scenarios.generator.generate import FAMILIES, GeneratorConfig, generate_scene, generate_scenes, scene_specs

__all__ = ["FAMILIES", "GeneratorConfig", "generate_scene", "generate_scenes", "scene_specs"]
