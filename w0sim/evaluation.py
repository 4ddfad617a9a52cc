"""One-shot (NAVSIM-style) evaluation of an agent on a split: a row per scene, resumable, on a process pool.

Each scene runs through `w0sim/NavsimScene-v0` exactly as a user's loop would (the agent input the
environment builds, the trajectory scored against the scene's PDM-Closed reference). Rows are appended
to `rows.jsonl` as scenes finish, so a killed run loses nothing; running it again evaluates the missing
scenes only. The CSV is NAVSIM's layout (v1.1: `token, valid, <6 sub-scores>, score` and an `average`
row; v2.2: its 9 sub-scores and `average_all_frames`), in split order whatever order scenes finished in.
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenarios.splits import SceneRef, resolve_split
from w0sim.score import SUBSCORE_COLUMNS

AGENT_NAMES = ("constant_velocity", "human", "pdm_closed", "drivevla_w0")
# The shipped tiny checkpoint (docs: checkpoints/drivevla-w0-tiny/README.md), the drivevla_w0 default.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "drivevla-w0-tiny"
AVERAGE_TOKEN = {"v1.1": "average", "v2.2": "average_all_frames"}


@dataclass(frozen=True)
class AgentSpec:
    """Which agent to build in each worker: a name of AGENT_NAMES and, for drivevla_w0, its checkpoint folder."""

    name: str
    checkpoint: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in AGENT_NAMES:
            raise ValueError(f"unknown agent {self.name!r}; choose from {', '.join(AGENT_NAMES)}")
        if self.name == "drivevla_w0" and not self.checkpoint:
            if not DEFAULT_CHECKPOINT.is_dir():
                raise ValueError(f"the drivevla_w0 agent needs --checkpoint DIR (no shipped checkpoint at "
                                 f"{DEFAULT_CHECKPOINT})")
            object.__setattr__(self, "checkpoint", str(DEFAULT_CHECKPOINT))

    def build(self):
        if self.name == "constant_velocity":
            from agents.constant_velocity import ConstantVelocityAgent

            return ConstantVelocityAgent()
        if self.name == "human":
            from agents.human import HumanAgent

            return HumanAgent()
        if self.name == "pdm_closed":
            from agents.pdm_closed import PDMClosedAgent

            return PDMClosedAgent()
        from agents.drivevla_w0 import DriveVLAW0Agent

        agent = DriveVLAW0Agent(self.checkpoint, seed=self.seed)
        agent.initialize()
        return agent


def csv_columns(version: str) -> list[str]:
    return ["token", "valid", *SUBSCORE_COLUMNS[version], "score"]


def evaluate_scene(ref: SceneRef, agent, version: str = "v1.1") -> dict:
    """The row of one scene: NAVSIM's columns plus family and, for a failed scene, the reason."""
    from sim.envs.navsim_env import NavsimSceneEnv

    # "ref" names the scene in its split (resume key); "token" is the scene's own token (the CSV's).
    row = {"ref": ref.token, "token": ref.token, "family": ref.family, "valid": False, "reason": ""}
    try:
        scene = ref.load()
        row["token"], row["family"] = scene.token, scene.family
        env = NavsimSceneEnv(scenes=[scene], cameras=agent.get_sensor_config().cameras, pdm_version=version)
        _, info = env.reset(seed=0)
        trajectory = agent.compute_trajectory(info["agent_input"], scene if agent.requires_scene else None)
        _, _, _, _, result = env.step(trajectory.poses)
    except Exception as err:  # the scene (or the agent on it) failed: a failed row, the run goes on
        row["reason"] = f"{type(err).__name__}: {err}"
        return row
    if not result["valid"]:
        row["reason"] = result.get("failure_reason", "invalid trajectory")
        return row
    scores = result["scores"]
    row["valid"] = True
    for name in SUBSCORE_COLUMNS[version]:
        row[name] = float(scores.get(name, math.nan))
    row["score"] = float(scores["score"])
    return row


_WORKER_AGENT = None


def _init_worker(spec: AgentSpec) -> None:
    global _WORKER_AGENT
    if spec.name == "drivevla_w0":
        import torch

        torch.set_num_threads(1)  # one process per core
    _WORKER_AGENT = spec.build()


def _run_in_worker(ref: SceneRef, version: str) -> dict:
    return evaluate_scene(ref, _WORKER_AGENT, version)


def evaluate_split(split: str, agent: AgentSpec, out_dir: str | Path, version: str = "v1.1",
                   limit: int | None = None, workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None, ray_address: str | None = None,
                   split_options: dict | None = None) -> list[dict]:
    """Evaluate `agent` on the first `limit` scenes of `split`; writes rows.jsonl, scores.csv and returns the rows
    in split order. Resumes from the rows already in `out_dir`. Scenes run on a local process pool, or on a Ray
    cluster with `ray_address` ("local" starts one on this machine with `workers` CPUs). `split_options` are
    passed to `resolve_split` (navsim_logs, nuplan_maps, sensor_blobs for `navsim:NAME`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = resolve_split(split, limit, **(split_options or {}))
    done = _read_rows(out_dir / "rows.jsonl")
    todo = [ref for ref in refs if ref.token not in done]  # done is keyed by "ref"
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    with (out_dir / "rows.jsonl").open("a") as log:
        def record(row: dict) -> None:
            done[row["ref"]] = row
            log.write(json.dumps(row) + "\n")
            log.flush()
            if progress is not None:
                progress(len(done), len(refs))

        if ray_address is not None and todo:
            for row in _ray_rows(ray_address, agent, todo, version, workers):
                record(row)
        elif workers == 1:
            agent_instance = agent.build() if todo else None
            for ref in todo:
                record(evaluate_scene(ref, agent_instance, version))
        else:
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(agent,)) as pool:
                for future in as_completed([pool.submit(_run_in_worker, ref, version) for ref in todo]):
                    record(future.result())
    rows = [done[ref.token] for ref in refs]
    write_csv(rows, out_dir / "scores.csv", version)
    return rows


def _ray_rows(address: str, spec: AgentSpec, refs: list[SceneRef], version: str, workers: int):
    """Rows of `refs` as Ray actors finish them (one agent per actor, built once)."""
    import ray
    from ray.util import ActorPool

    started = not ray.is_initialized()
    if started:
        local = address == "local"
        ray.init(address=None if local else address, num_cpus=workers if local else None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)

    @ray.remote(num_cpus=1)
    class SceneWorker:
        def __init__(self, spec: AgentSpec):
            _init_worker(spec)

        def run(self, ref: SceneRef) -> dict:
            return _run_in_worker(ref, version)

    try:
        actors = [SceneWorker.remote(spec) for _ in range(max(1, min(workers, len(refs))))]
        yield from ActorPool(actors).map_unordered(lambda actor, ref: actor.run.remote(ref), refs)
    finally:
        if started:
            ray.shutdown()


def _read_rows(path: Path) -> dict[str, dict]:
    """Rows of an earlier run; a line cut short by a kill is dropped (that scene runs again)."""
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["ref"]] = row
    return rows


def write_csv(rows: list[dict], path: Path, version: str) -> None:
    """NAVSIM's CSV: a row per scene, then the average row (means skipping NaN, valid = all valid)."""
    columns = csv_columns(version)
    metric_columns = columns[2:]
    table = [{c: row.get(c, math.nan) for c in columns} for row in rows]
    average = {"token": AVERAGE_TOKEN[version], "valid": all(bool(r["valid"]) for r in rows)}
    for c in metric_columns:
        values = np.array([float(r.get(c, math.nan)) for r in rows], dtype=np.float64)
        average[c] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table + [average])
    tmp.replace(path)


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean score (failed scenes excluded, as NAVSIM's average) and counts, overall and per family."""
    groups: dict[str, list[dict]] = {"all": rows}
    for row in rows:
        groups.setdefault(row.get("family") or "unknown", []).append(row)
    out = {}
    for name, group in groups.items():
        valid = [r["score"] for r in group if r["valid"]]
        out[name] = {"scenes": len(group), "failed": len(group) - len(valid),
                     "score": float(np.mean(valid)) if valid else math.nan}
    return out


def summary_markdown(summary: dict, agent: str, split: str, version: str) -> str:
    """The summary as a markdown table: mean score and failed scenes, overall and per family."""
    name = "PDMS" if version == "v1.1" else "EPDMS"
    lines = [f"# {agent} on {split} ({name} {version})", "", f"| scenes | count | failed | {name} |", "|---|---|---|---|"]
    for group, values in summary.items():
        lines.append(f"| {group} | {values['scenes']} | {values['failed']} | {values['score']:.4f} |")
    return "\n".join(lines) + "\n"


__all__ = ["AGENT_NAMES", "AgentSpec", "csv_columns", "evaluate_scene", "evaluate_split", "summarize", "summary_markdown", "write_csv"]
