"""Simulator throughput on one core: closed-loop physics steps/s with 0/20/50 IDM agents, camera and BEV fps, scenes/s.

Closed-loop cases (40 s episodes, 400 steps; ego LQR + bicycle replanning every 0.5 s, traffic, lights, events):

- `road`: a 2 km straight road (3 lanes each way, no lights) with `idm_agents` vehicles placed where none can
  reach the end of its lane within the episode, so all of them keep moving: the named number moves;
- `intersection`: a generated signalised intersection with `idm_agents` IDM agents placed. Its arms are
  70-100 m long: most agents leave the map within seconds or queue at red lights, so few of them move.

Each case reports the agents that actually move, counted on one untimed run of the same (deterministic)
episode: an IDM agent is moving at a step when its speed exceeds 0.5 m/s; `moving_mean` is the mean over the
steps of the number moving, `moving_half` the number of agents moving in at least half of the steps.

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
from scenarios.generator.families import URBAN_LIMIT
from scenarios.generator.roads import MapBuilder, straight
from sim.envs.backends.builtin import BuiltinSimulator
from sim.geometry import PACIFICA
from sim.render.bev import BEVConfig, render_bev_channels
from sim.render.camera import CameraConfig, CameraRenderer
from sim.scene import STEP_S, Scene
from sim.state import AgentTracks, AgentType, ego_state

EPISODE_STEPS = 400  # 40 s at 10 Hz
MOVING_SPEED = 0.5  # m/s: an IDM agent faster than this is moving
MOVING_RULE = (f"an IDM agent is moving at a step when its speed exceeds {MOVING_SPEED} m/s; moving_mean: mean over "
               f"the {EPISODE_STEPS} steps of the number moving; moving_half: agents moving in at least half of them")
ROAD_LENGTH_M = 2000.0
ROAD_LANES = 3  # each way
EGO_SPEED = 8.0  # m/s, the speed of the straight plan the ego follows


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


def intersection_simulator(count: int) -> BuiltinSimulator:
    """An intersection scene whose closed loop has exactly `count` IDM agents (vehicles that leave the
    map during the log's history are not IDM agents, so ask for a few more until the count is exact)."""
    for asked in range(count, 2 * count + 10):
        scene = generate_scene("intersection", 11, GeneratorConfig(num_vehicles=asked, max_pedestrians=0, warmup_s=0.0))
        sim = BuiltinSimulator(scene)
        if (0 if sim.idm is None else sim.idm.count) == count:
            return sim
    raise RuntimeError(f"no intersection scene with exactly {count} IDM agents")


def road_scene(count: int, history_steps: int = 15) -> Scene:
    """A straight road with `count` vehicles driving at 8-12 m/s, spread over its six lanes, and the ego on the
    first forward lane. Each vehicle starts far enough from its lane's end that it is still on the road after
    the episode at the speed it will settle at (0.9 x the 50 km/h limit)."""
    builder = MapBuilder("benchmark_road")
    road = builder.add_road("road", straight(np.zeros(2), 0.0, ROAD_LENGTH_M), ROAD_LANES, ROAD_LANES, URBAN_LIMIT)
    road_map = builder.build()
    steps = history_steps + 1
    t = (np.arange(steps) - history_steps) * STEP_S  # 0 at the current frame
    ego_x = 100.0
    reach = URBAN_LIMIT * (EPISODE_STEPS + history_steps) * STEP_S + 50.0  # metres a vehicle may drive, with margin
    lanes = road.forward + road.backward
    per_lane = -(-count // len(lanes))
    along = np.linspace(30.0, ROAD_LENGTH_M - reach, per_lane + 2)[1:-1] if per_lane else np.zeros(0)
    rng = np.random.default_rng(0)
    tracks = AgentTracks.empty(steps, count)
    for i in range(count):
        lane_id, s0 = lanes[i % len(lanes)], along[i // len(lanes)]
        if lane_id == road.forward[0] and abs(s0 - ego_x) < 30.0:
            s0 += 40.0  # clear of the ego
        line = road_map.lane(lane_id).centerline
        heading = float(np.arctan2(*(line[-1] - line[0])[::-1]))
        direction = np.array([np.cos(heading), np.sin(heading)])
        speed = float(rng.uniform(8.0, 12.0))
        xy = line[0] + direction * (s0 + speed * t)[:, None]
        tracks.x[:, i], tracks.y[:, i], tracks.heading[:, i] = xy[:, 0], xy[:, 1], heading
        tracks.vx[:, i], tracks.vy[:, i] = speed * direction
    tracks.valid[:] = True
    tracks.length[:], tracks.width[:], tracks.height[:] = 4.6, 1.9, 1.6
    tracks.agent_type[:] = AgentType.VEHICLE
    rear = ego_x - PACIFICA.rear_axle_to_center
    y0 = road_map.lane(road.forward[0]).centerline[0, 1]
    ego_log = np.stack([ego_state(rear + EGO_SPEED * dt, y0, 0.0, EGO_SPEED) for dt in t])
    return Scene(token=f"benchmark_road_{count}", map=road_map, ego_log=ego_log, agents=tracks, route=[road.forward[0]],
                 current_index=history_steps, metadata={"source": "benchmark"})


def road_simulator(count: int) -> BuiltinSimulator:
    sim = BuiltinSimulator(road_scene(count))
    if (0 if sim.idm is None else sim.idm.count) != count:
        raise RuntimeError(f"the road scene has {0 if sim.idm is None else sim.idm.count} IDM agents, not {count}")
    return sim


def episode(sim: BuiltinSimulator, steps: int = EPISODE_STEPS, speeds: list | None = None) -> None:
    """One closed-loop episode from the scene's current frame; appends the IDM agents' speeds per step to `speeds`."""
    straight_plan = np.stack([np.arange(1, 9) * 0.5 * EGO_SPEED, np.zeros(8), np.zeros(8)], -1)
    sim.reset()
    for k in range(steps):
        if k % 5 == 0:
            sim.plan(straight_plan, 0.5)
        sim.step()
        if speeds is not None:
            speeds.append(np.zeros(0) if sim.idm is None else sim.idm.v.copy())


def closed_loop_case(sim: BuiltinSimulator) -> dict:
    """Physics steps/s (best of 10 episodes) and the IDM agents that move (one untimed episode)."""
    speeds: list[np.ndarray] = []
    episode(sim, speeds=speeds)
    moving = np.array(speeds) > MOVING_SPEED  # (steps, agents)
    rate = best_rate(lambda count: episode(sim, count), EPISODE_STEPS, repeats=10)
    return {"idm_agents": moving.shape[1], "moving_mean": round(float(moving.sum(axis=1).mean()), 1),
            "moving_half": int((moving.mean(axis=0) >= 0.5).sum()), "steps_per_s": round(rate, 1)}


def main() -> None:
    result: dict = {"closed_loop": {"moving": MOVING_RULE, "road": [], "intersection": []}, "camera_fps": {}}
    for case, build in (("road", road_simulator), ("intersection", intersection_simulator)):
        for n in (0, 20, 50):
            row = closed_loop_case(build(n))
            result["closed_loop"][case].append(row)
            log(f"  {case}, {n} IDM agents ({row['moving_mean']} moving on average, {row['moving_half']} for half "
                f"the episode): {row['steps_per_s']} steps/s")

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
