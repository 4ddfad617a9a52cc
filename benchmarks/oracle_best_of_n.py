"""Oracle best-of-N PDMS: the mean over scenes of the best NAVSIM PDMS among N candidate plans, beside the plan the policy drives.

    python benchmarks/oracle_best_of_n.py --checkpoint DIR [--n 6] [--scenes 200] [--split builtin:navtest]

The paper's 93.0 row (AR expert, best of 6, "following AutoVLA") picks each scene's best candidate by its PDM
score, which needs the scene's future: an oracle, an upper bound of what a selector could reach, not a benchmark
number (`w0sim eval` never selects this way). Candidates come from the checkpoint's action expert
(`DriveVLAW0ForDriving.predict_candidates`): AR-expert samples at temperature 1, flow-matching samples, or the N
best-scored anchors; the regression query decoder has one plan and is refused. Each candidate is scored by the
scene's PDMS v1.1 scorer. Prints the three means to stderr, then one JSON object on the last stdout line:
{"scenes", "n", "pdms_policy", "pdms_oracle_best_of_n", "pdms_mean_candidate"}.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from tqdm import tqdm

from agents.base import AgentOptions
from agents.drivevla_w0 import DEFAULT_CHECKPOINT, DriveVLAW0Agent
from scenarios.splits import resolve_split
from sim.envs.navsim_env import NavsimSceneEnv
from sim.envs.scene_scoring import SceneScorer


def measure(agent: DriveVLAW0Agent, refs, n: int, seed: int = 0) -> dict:
    """Per scene: the policy's own plan and N candidates, each scored; the means (module docstring)."""
    policy, best, mean = [], [], []
    for ref in tqdm(refs, desc=f"best of {n}", file=sys.stderr):
        scene = ref.load()
        _, info = NavsimSceneEnv(scenes=[scene], cameras=True, pdm_version=None).reset(seed=0)
        scorer = SceneScorer(scene, "v1.1")

        def score(trajectory) -> float:
            return scorer.score(trajectory.poses, trajectory.sampling.interval)[1]

        policy.append(score(agent.compute_trajectory(info["agent_input"])))
        scores = [score(t) for t in agent.candidate_trajectories(info["agent_input"], n, seed)]
        best.append(max(scores))
        mean.append(float(np.mean(scores)))
    return {"scenes": len(refs), "n": n, "pdms_policy": round(float(np.mean(policy)), 4),
            "pdms_oracle_best_of_n": round(float(np.mean(best)), 4),
            "pdms_mean_candidate": round(float(np.mean(mean)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--n", type=int, default=6, help="candidates per scene (the paper's 6)")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--split", default="builtin:navtest")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    agent = DriveVLAW0Agent.from_options(AgentOptions(checkpoint=args.checkpoint))
    try:
        result = measure(agent, resolve_split(args.split, args.scenes), args.n, args.seed)
    except ValueError as err:  # a decoder with one plan
        raise SystemExit(f"error: {err}") from None
    for key in ("pdms_policy", "pdms_mean_candidate", "pdms_oracle_best_of_n"):
        print(f"{key:24s} {result[key]:.4f}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
