"""Latency of the ego tracking path on one core: replanning (interpolate + LQR profiles), a tracked step, simulate.

Prints progress to stderr, then one JSON object of medians on the last stdout line:
interpolate_b1_us, profiles_b1_us, tracked_step_us (microseconds), simulate_b2_ms, simulate_b15_ms (milliseconds).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # single-threaded BLAS, set before numpy is imported

import json
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from sim.dynamics import BatchLQRTracker, KinematicBicycle, TrackedEgo, interpolate_trajectory_states, simulate
from sim.state import ego_state


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median_us(run, inner: int, repeats: int = 15) -> float:
    """Median over `repeats` batches of the mean time of one call, in microseconds."""
    run()  # warm caches (lru tables, first-call imports)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            run()
        times.append((time.perf_counter() - start) / inner * 1e6)
    return statistics.median(times)


def curvy_poses(rng: np.random.Generator, batch: int, count: int = 8, interval: float = 0.5) -> np.ndarray:
    """(batch, count, 3) local poses of gently curving plans at 3-15 m/s."""
    t = np.arange(1, count + 1) * interval
    poses = []
    for _ in range(batch):
        speed, curvature = rng.uniform(3.0, 15.0), rng.uniform(-0.05, 0.05)
        heading = curvature * speed * t
        poses.append(np.stack([speed * t * np.cos(0.5 * heading), speed * t * np.sin(0.5 * heading), heading], -1))
    return np.array(poses)


def main() -> None:
    rng = np.random.default_rng(0)
    start = ego_state(12.0, -3.0, 0.4, vx=8.0, ax=0.3, steering=0.02)
    poses = curvy_poses(rng, 15)
    tracker, model = BatchLQRTracker(), KinematicBicycle()

    log("interpolate_trajectory_states, B=1 (8 poses at 0.5 s -> 41 states)")
    interpolate_us = median_us(lambda: interpolate_trajectory_states(start, poses[0], 0.5), 2000)
    log(f"  {interpolate_us:.1f} us")

    reference = interpolate_trajectory_states(start, poses[0], 0.5)[0]
    log("BatchLQRTracker.profiles, B=1 (41 x 11 reference)")
    profiles_us = median_us(lambda: tracker.profiles(reference[None]), 1000)
    log(f"  {profiles_us:.1f} us")

    log("TrackedEgo.step (tracker command + bicycle), averaged over a replan cycle of 40 steps")
    ego = TrackedEgo(start, tracker, model)

    def tracked_steps() -> None:
        ego.plan(reference)
        for _ in range(40):
            ego.step()

    # plan() is timed separately above; subtract its cost by timing it alone here too.
    plan_us = median_us(lambda: ego.plan(reference), 1000)
    step_us = (median_us(tracked_steps, 50) - plan_us) / 40
    log(f"  {step_us:.1f} us per step")

    result = {"interpolate_b1_us": round(interpolate_us, 1), "profiles_b1_us": round(profiles_us, 1),
              "tracked_step_us": round(step_us, 1)}
    for batch in (2, 15):
        log(f"simulate, B={batch} (41 steps)")
        refs = interpolate_trajectory_states(start, poses[:batch], 0.5)
        ms = median_us(lambda: simulate(start, refs), 50) / 1000.0
        result[f"simulate_b{batch}_ms"] = round(ms, 3)
        log(f"  {ms:.3f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
