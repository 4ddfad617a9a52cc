"""Closed-loop (Leaderboard-style) evaluation of an agent on a route split: `results.json` in the Leaderboard 2.x layout.

Each route is a scene driven in `w0sim/ClosedLoop-v0` until the Leaderboard's rules end it; its route
record goes into the results file, rewritten atomically after every route, so a killed run resumes with
the routes it has not finished. Agents that see only the agent input (constant velocity, DriveVLA-W0)
drive from it; the privileged ones read the live simulation: PDM-Closed plans on the simulator's objects
and lights, the human agent replays the logged ego path from the current time.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np

from agents.forecast import braking_between
from agents.human import logged_poses
from agents.pdm_closed import PDMClosedPlanner, plan_to_local
from agents.pdm_proposals import route_index_from_ego
from metrics.leaderboard.results_io import build_results, read_results, write_results
from scenarios.splits import SceneRef, resolve_split
from sim.envs.closed_loop_env import ClosedLoopEnv
from w0sim.evaluation import AgentSpec, _init_worker


def _pdm_closed_driver(env: ClosedLoopEnv) -> Callable[[], np.ndarray]:
    """PDM-Closed on the live simulation; braking is read over the last decision (0.5 s, as on logs). The route
    is planned from the lane reached so far, so a route that passes a junction twice is driven in order."""
    planner, previous, reached = PDMClosedPlanner(), None, 0

    def plan() -> np.ndarray:
        nonlocal previous, reached
        sim, scene = env.sim, env.scene
        agents = sim.agents()
        braking = None if previous is None else braking_between(agents, previous, env.sampling.interval)
        # The simulator updates its slice in place: keep a copy of what braking needs.
        previous = replace(agents, vx=agents.vx.copy(), vy=agents.vy.copy(), valid=agents.valid.copy())
        reached += route_index_from_ego(scene.map, scene.route[reached:], sim.ego)
        result = planner.plan(scene.map, scene.route[reached:], sim.ego, agents, scene.light_ids, sim.light_status(),
                              braking)
        return plan_to_local(result.poses, sim.ego, env.sampling)

    return plan


def _human_driver(env: ClosedLoopEnv) -> Callable[[], np.ndarray]:
    """Log replay from the current simulation time (the log's path, wherever the ego is now)."""
    def plan() -> np.ndarray:
        return logged_poses(env.scene, env.sim.step_index, env.sim.ego, env.sampling)

    return plan


def agent_sensors(spec: AgentSpec) -> list[str]:
    """The results file's `sensors`, in CARLA's sensor names: ego status always, the front camera for the camera
    policy, the map (and, here, the whole simulator state) for the privileged agents."""
    sensors = ["sensor.speedometer"]
    if spec.name == "drivevla_w0":
        sensors.append("sensor.camera.rgb")
    if spec.name in ("pdm_closed", "human"):
        sensors.append("sensor.opendrive_map")
    return sensors


def drive_route(ref: SceneRef, index: int, spec: AgentSpec, agent) -> dict:
    """The Leaderboard route record of one route driven by `agent` (built from `spec`)."""
    scene = ref.load()
    env = ClosedLoopEnv(scenes=[scene], cameras=agent.get_sensor_config().cameras)
    env.reset(seed=0)
    if spec.name == "pdm_closed":
        plan = _pdm_closed_driver(env)
    elif spec.name == "human":
        plan = _human_driver(env)
    else:
        def plan() -> np.ndarray:
            return agent.compute_trajectory(env.agent_input).poses
    while True:
        try:
            action = plan()
        except Exception:  # the agent crashed: a non-finite action makes the env end the route as the LB does
            action = np.full((env.sampling.num_poses, 3), np.nan)
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            record = dict(info["route_record"])
            record.update(index=index, route_id=ref.token)
            return record


_SPEC: AgentSpec | None = None


def _init(spec: AgentSpec) -> None:
    global _SPEC
    _SPEC = spec
    _init_worker(spec)


def _drive_in_worker(ref: SceneRef, index: int) -> dict:
    from w0sim import evaluation

    return drive_route(ref, index, _SPEC, evaluation._WORKER_AGENT)


def evaluate_routes(split: str, spec: AgentSpec, out_dir: str | Path, limit: int | None = None,
                    workers: int | None = None, progress: Callable[[int, int], None] | None = None,
                    split_options: dict | None = None) -> dict:
    """Drive the first `limit` routes of `split` (`split_options`: see `resolve_split`, e.g. `town_dir` for
    `carla:ROUTES.xml`); writes and returns `out_dir/results.json` (Leaderboard layout). Routes whose records
    are already in the file are kept (resume)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    refs = resolve_split(split, limit, **(split_options or {}))
    records: dict[str, dict] = {}
    if path.exists():
        records = {r["route_id"]: r for r in read_results(path)["_checkpoint"]["records"]}
    failures: list[dict] = []
    todo = [(i, ref) for i, ref in enumerate(refs) if ref.token not in records]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    sensors = agent_sensors(spec)

    def finish(ref: SceneRef, get) -> None:
        try:
            records[ref.token] = get()
        except Exception as err:  # the route could not run (a broken scene file): it counts as not driven
            failures.append({"route_id": ref.token, "reason": f"{type(err).__name__}: {err}"})
        ordered = [records[r.token] for r in refs if r.token in records]
        # While routes are left, the file says so, as the Leaderboard's does during a run.
        partial = build_results(ordered, len(refs), sensors=sensors, validate=False)
        partial.update(entry_status="Started", eligible=False)
        write_results(path, partial)
        if progress is not None:
            progress(len(records) + len(failures), len(refs))

    if workers == 1:
        agent = spec.build() if todo else None
        for i, ref in todo:
            finish(ref, lambda: drive_route(ref, i, spec, agent))
    else:
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(spec,)) as pool:
            futures = {pool.submit(_drive_in_worker, ref, i): ref for i, ref in todo}
            for future in as_completed(futures):
                finish(futures[future], future.result)
    if failures:
        (out_dir / "failed_routes.json").write_text(json.dumps(failures, indent=1))
    ordered = [records[r.token] for r in refs if r.token in records]
    results = build_results(ordered, len(refs), sensors=sensors)
    write_results(path, results)
    return results


def routes_markdown(results: dict, agent: str, split: str, families: dict[str, str] | None = None) -> str:
    """Global scores, means per family (`families`: route id -> family) and one line per route, as markdown."""
    record = results["_checkpoint"]["global_record"]
    scores = record["scores_mean"]
    lines = [f"# {agent} on {split} (closed loop, Leaderboard 2.0 scoring)", "",
             f"driving score {scores['score_composed']:.2f}, route completion {scores['score_route']:.2f}, "
             f"infraction penalty {scores['score_penalty']:.3f} over {results['_checkpoint']['progress'][1]} routes"]
    records = results["_checkpoint"]["records"]
    if families:
        lines += ["", "| family | routes | driving score | route completion | penalty |", "|---|---|---|---|---|"]
        for family in dict.fromkeys(families.values()):
            group = [r["scores"] for r in records if families.get(r["route_id"]) == family]
            if group:
                mean = {k: float(np.mean([g[k] for g in group])) for k in ("score_composed", "score_route", "score_penalty")}
                lines.append(f"| {family} | {len(group)} | {mean['score_composed']:.2f} | {mean['score_route']:.2f} | "
                             f"{mean['score_penalty']:.3f} |")
    lines += ["", "| route | status | driving score | route completion | penalty |", "|---|---|---|---|---|"]
    for r in records:
        s = r["scores"]
        lines.append(f"| {r['route_id']} | {r['status']} | {s['score_composed']:.2f} | {s['score_route']:.2f} | "
                     f"{s['score_penalty']:.3f} |")
    return "\n".join(lines) + "\n"


__all__ = ["agent_sensors", "drive_route", "evaluate_routes", "routes_markdown"]
