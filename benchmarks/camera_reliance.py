"""How much a camera policy uses its camera: PDMS on navtest scenes with its own frames, another scene's, and grey ones.

    python benchmarks/camera_reliance.py [--checkpoint DIR] [--scenes 200] [--split builtin:navtest]

For each of the first N scenes of the split the agent (DriveVLA-W0 by default, the shipped checkpoint) plans three
times from the same agent input but for the camera frames: its own; those of the next scene of the list (another
road, the same ego history and command); uniform grey. Each plan is scored by the scene's NAVSIM PDMS v1.1 scorer.
A policy that drives from its ego history alone loses little when the frames are swapped. Prints a line per
condition to stderr, then one JSON object on the last stdout line: {"scenes", "pdms_own", "pdms_other_scene",
"pdms_grey", "cost_other_scene", "cost_grey"}.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from agents.base import AgentOptions
from agents.drivevla_w0 import DEFAULT_CHECKPOINT, DriveVLAW0Agent
from scenarios.splits import resolve_split
from sim.envs.navsim_env import NavsimSceneEnv
from sim.envs.scene_scoring import SceneScorer

CONDITIONS = ("own", "other_scene", "grey")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--split", default="builtin:navtest")
    args = parser.parse_args()
    agent = DriveVLAW0Agent.from_options(AgentOptions(checkpoint=args.checkpoint))
    refs = resolve_split(args.split, args.scenes)
    inputs, scorers = [], []
    for ref in tqdm(refs, desc="agent inputs", file=sys.stderr):
        scene = ref.load()
        _, info = NavsimSceneEnv(scenes=[scene], cameras=True, pdm_version=None).reset(seed=0)
        inputs.append(info["agent_input"])
        scorers.append(SceneScorer(scene, "v1.1"))
    scores: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    for i in tqdm(range(len(refs)), desc="planning", file=sys.stderr):
        own = inputs[i]
        frames = {"own": own.cameras, "other_scene": inputs[(i + 1) % len(inputs)].cameras,
                  "grey": np.full_like(own.cameras, 128)}
        for condition, cameras in frames.items():
            trajectory = agent.compute_trajectory(replace(own, cameras=cameras))
            scores[condition].append(scorers[i].score(trajectory.poses, trajectory.sampling.interval)[1])
    result = {"scenes": len(refs)} | {f"pdms_{c}": round(float(np.mean(s)), 4) for c, s in scores.items()}
    result["cost_other_scene"] = round(result["pdms_own"] - result["pdms_other_scene"], 4)
    result["cost_grey"] = round(result["pdms_own"] - result["pdms_grey"], 4)
    for condition in CONDITIONS:
        print(f"{condition:12s} PDMS {result[f'pdms_{condition}']:.4f}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
