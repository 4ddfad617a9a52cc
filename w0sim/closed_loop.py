"""Closed-loop (Leaderboard-style) evaluation: each route driven in `w0sim/ClosedLoop-v0`, `results.json` in the
Leaderboard 2.x layout.

Each route is a scene driven until the Leaderboard's rules end it; every agent drives through
`compute_trajectory(agent_input, world)`, privileged agents reading the live world view. The results
file is rewritten atomically after every route (entry status Started while routes are left); a route
that could not run is listed in `failed_routes.json` and left out of the records.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agents.base import Agent
from agents.registry import AgentSpec
from metrics.leaderboard.results_io import build_results, write_results
from scenarios.splits import SceneRef, resolve_split
from sim.envs.closed_loop_env import ClosedLoopEnv
from w0sim.runner import run_split


def agent_sensors(agent: Agent) -> list[str]:
    """The results file's `sensors`, in CARLA's sensor names: ego status always, the front camera for a camera
    agent, the map (and, here, the whole simulator state) for a privileged agent."""
    sensors = ["sensor.speedometer"]
    if agent.get_sensor_config().cameras:
        sensors.append("sensor.camera.rgb")
    if agent.privileged:
        sensors.append("sensor.opendrive_map")
    return sensors


def drive_route(ref: SceneRef, index: int, agent: Agent) -> dict:
    """{"token", "family", "record": the Leaderboard route record} of one route driven by `agent`."""
    scene = ref.load()
    env = ClosedLoopEnv(scenes=[scene], cameras=agent.get_sensor_config().cameras, privileged=agent.privileged)
    _, info = env.reset(seed=0)
    while True:
        try:
            action = agent.compute_trajectory(info["agent_input"], info.get("world")).poses
        except Exception:  # the agent crashed: a non-finite action makes the env end the route as the LB does
            action = np.full((env.sampling.num_poses, 3), np.nan)
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            record = dict(info["route_record"])
            record.update(index=index, route_id=ref.token)
            return {"token": ref.token, "family": ref.family, "record": record}


def evaluate_routes(split: str, spec: AgentSpec, out_dir: str | Path, limit: int | None = None,
                    workers: int | None = None, progress: Callable[[int, int], None] | None = None,
                    split_options: dict | None = None, ray_address: str | None = None) -> dict:
    """Drive the first `limit` routes of `split` (`split_options`: see `resolve_split`, e.g. `town_dir` for
    `carla:ROUTES.xml`); writes and returns `out_dir/results.json` (Leaderboard layout). See `run_split` for
    workers, Ray and resume."""
    out_dir = Path(out_dir)
    path = out_dir / "results.json"
    refs = resolve_split(split, limit, **(split_options or {}))
    sensors = agent_sensors(spec.build())

    def records(rows: dict[str, dict]) -> list[dict]:
        return [rows[r.token]["record"] for r in refs if "record" in rows.get(r.token, {})]

    def rewrite(rows: dict[str, dict]) -> None:
        # While routes are left, the file says so, as the Leaderboard's does during a run.
        partial = build_results(records(rows), len(refs), sensors=sensors, validate=False)
        partial.update(entry_status="Started", eligible=False)
        write_results(path, partial)

    rows = run_split(refs, spec, drive_route, out_dir, workers, ray_address, progress, on_row=rewrite)
    failures = [{"route_id": row["ref"], "reason": row["reason"]} for row in rows if "record" not in row]
    (out_dir / "failed_routes.json").unlink(missing_ok=True)  # a resumed run lists its failures anew
    if failures:
        (out_dir / "failed_routes.json").write_text(json.dumps(failures, indent=1))
    results = build_results(records({row["ref"]: row for row in rows}), len(refs), sensors=sensors)
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
