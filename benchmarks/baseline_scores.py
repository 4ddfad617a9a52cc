"""Mean PDMS per generator family of the baseline agents (NAVSIM's PDM-Closed, the lane-following PDM planner, constant
velocity, human) on generated scenes.

    python benchmarks/baseline_scores.py [--scenes-per-family 50] [--version v1.1] [--workers 2]

Scenes are `generate_scene(family, seed)` for seeds 0..N-1. Prints a table to stderr, then one JSON object
on the last stdout line: {family: {agent: mean score}}.
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tqdm import tqdm

from agents.constant_velocity import ConstantVelocityAgent
from agents.human import HumanAgent
from agents.lane_following_pdm import LaneFollowingPDMAgent
from agents.pdm_closed import PDMClosedAgent
from scenarios.generator import FAMILIES, generate_scene
from sim.envs.navsim_env import NavsimSceneEnv
from sim.envs.scene_scoring import SceneScorer

AGENTS = {"pdm_closed": PDMClosedAgent, "pdm_lane_following": LaneFollowingPDMAgent,
          "constant_velocity": ConstantVelocityAgent, "human": HumanAgent}


def score_scene(spec: tuple[str, int, str]) -> tuple[str, int, dict[str, float]]:
    family, seed, version = spec
    scene = generate_scene(family, seed)
    scorer = SceneScorer(scene, version)
    _, info = NavsimSceneEnv(scenes=[scene], cameras=False, pdm_version=None, privileged=True).reset(seed=0)
    scores = {}
    for name, agent_class in AGENTS.items():
        trajectory = agent_class().compute_trajectory(info["agent_input"], info["world"])
        scores[name] = scorer.score(trajectory.poses, trajectory.sampling.interval)[1]
    return family, seed, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes-per-family", type=int, default=50)
    parser.add_argument("--version", default="v1.1", choices=("v1.1", "v2.2"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    specs = [(family, seed, args.version) for family in FAMILIES for seed in range(args.scenes_per_family)]
    per_family: dict[str, dict[str, list[float]]] = {f: {a: [] for a in AGENTS} for f in FAMILIES}
    with ProcessPoolExecutor(args.workers) as pool:
        for family, _, scores in tqdm(pool.map(score_scene, specs, chunksize=4), total=len(specs), file=sys.stderr):
            for name, score in scores.items():
                per_family[family][name].append(score)
    result = {f: {a: round(float(np.mean(s)), 4) for a, s in agents.items()} for f, agents in per_family.items()}
    print(f"{'family':14s}" + "".join(f"{a:>20s}" for a in AGENTS), file=sys.stderr)
    for family, agents in result.items():
        print(f"{family:14s}" + "".join(f"{agents[a]:20.3f}" for a in AGENTS), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
