"""Simulator throughput on one core: closed-loop physics steps/s (0/20/50 IDM agents), camera and BEV fps, scenes/s.

Prints progress lines, then one JSON object on the last line.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, as the issue asks

import json
import sys
import time

import numpy as np

from scenarios.generator import GeneratorConfig, generate_scene
from sim.envs.backends.builtin import BuiltinSimulator
from sim.render.bev import BEVConfig, render_bev_channels
from sim.render.camera import CameraConfig, CameraRenderer


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def best_rate(run, count: int, repeats: int = 3) -> float:
    """Operations per second: the best of `repeats` timed batches of `count` operations."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(count)
        rates.append(count / (time.perf_counter() - start))
    return max(rates)


def simulator_with_idm_agents(count: int) -> BuiltinSimulator:
    """An intersection scene whose closed loop has exactly `count` IDM agents (vehicles that leave the
    map during the log's history are not IDM agents, so ask for a few more until the count is exact)."""
    for asked in range(count, 2 * count + 10):
        scene = generate_scene("intersection", 11, GeneratorConfig(num_vehicles=asked, max_pedestrians=0, warmup_s=0.0))
        sim = BuiltinSimulator(scene)
        if (0 if sim.idm is None else sim.idm.count) == count:
            return sim
    raise RuntimeError(f"no intersection scene with exactly {count} IDM agents")


def closed_loop_rate(num_agents: int, steps: int = 400) -> float:
    """Physics steps/s: ego LQR + bicycle (replanning every 0.5 s), IDM traffic, lights, events."""
    sim = simulator_with_idm_agents(num_agents)
    straight_plan = np.stack([np.arange(1, 9) * 0.5 * 8.0, np.zeros(8), np.zeros(8)], -1)

    def run(count: int) -> None:
        sim.reset()
        for k in range(count):
            if k % 5 == 0:
                sim.plan(straight_plan, 0.5)
            sim.step()

    return best_rate(run, steps, repeats=10)


def main() -> None:
    result: dict = {"closed_loop_steps_per_s": {}, "camera_fps": {}}
    for n in (0, 20, 50):
        result["closed_loop_steps_per_s"][str(n)] = round(closed_loop_rate(n), 1)
        log(f"  {n} agents: {result['closed_loop_steps_per_s'][str(n)]} steps/s")

    scene = generate_scene("intersection", 11, GeneratorConfig(num_vehicles=50))
    poses = scene.ego_log[:, :3]
    agents = [scene.agents.at(t) for t in range(scene.num_steps)]
    lights = [scene.light_status_at(t) for t in range(scene.num_steps)]
    for width, height in ((256, 128), (512, 256)):
        renderer = CameraRenderer(scene.map, CameraConfig(width=width, height=height))

        def run(count: int) -> None:
            for k in range(count):
                t = k % scene.num_steps
                renderer.render(poses[t], agents[t], lights[t])

        result["camera_fps"][f"{width}x{height}"] = round(best_rate(run, 200), 1)
        log(f"camera {width}x{height}: {result['camera_fps'][f'{width}x{height}']} fps")

    bev = BEVConfig()

    def run_bev(count: int) -> None:
        for k in range(count):
            t = k % scene.num_steps
            render_bev_channels(scene.map, poses[t], agents[t], scene.route, bev)

    result["bev_fps"] = round(best_rate(run_bev, 200), 1)
    log(f"bev: {result['bev_fps']} fps")

    families = ("straight", "curve", "intersection", "t_junction", "merge")

    def run_generate(count: int) -> None:
        for k in range(count):
            generate_scene(families[k % len(families)], 1000 + k)

    result["scenes_generated_per_s"] = round(best_rate(run_generate, 25, repeats=2), 2)
    log(f"scenes: {result['scenes_generated_per_s']} /s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
