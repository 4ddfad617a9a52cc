"""The one evaluation runner: a task per scene of a split, one agent per worker, serially, on a local process pool
or on Ray, with every finished scene's row appended to `rows.jsonl` so that an interrupted run resumes.

A task is a picklable `task(ref, index, agent) -> dict` (one-shot scoring, a closed-loop route). An exception
in it becomes a failed row with the reason, and the run goes on. Workers build their agent from the
`AgentSpec` once (`worker_agent`), so nothing but the spec and the scene references crosses processes.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path

from agents.base import Agent, AgentError
from agents.registry import AgentSpec
from scenarios.splits import SceneRef
from sim.agent_input import NUM_HISTORY_FRAMES
from sim.state import TrajectorySampling

Task = Callable[[SceneRef, int, Agent], dict]


def check_agent(agent: Agent, spec: AgentSpec) -> None:
    """An AgentError before the first scene if the environments cannot give `agent` what it asks for."""
    sensors = agent.get_sensor_config()
    if sensors.history_frames > NUM_HISTORY_FRAMES:
        raise AgentError(f"agent {spec.name} wants {sensors.history_frames} history frames; the environments give "
                         f"{NUM_HISTORY_FRAMES}")
    if agent.trajectory_sampling != TrajectorySampling():
        raise AgentError(f"agent {spec.name} plans {agent.trajectory_sampling}; the evaluation scores "
                         f"{TrajectorySampling()} (NAVSIM's 8 poses at 0.5 s)")


def initialized(agent: Agent) -> Agent:
    """`agent` after `initialize()`; a torch agent computes on one thread, as every worker has its own core."""
    agent.initialize()
    if agent.device == "cpu" and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    return agent


@lru_cache(maxsize=1)
def worker_agent(spec: AgentSpec) -> Agent:
    """The agent of this worker process, built and initialised on its first scene."""
    return initialized(spec.build())


def run_task(task: Task, spec: AgentSpec, ref: SceneRef, index: int, agent: Agent | None = None) -> dict:
    """The task's row for one scene, or a failed row (`reason`) when it raised; `ref` names the scene (resume key)."""
    try:
        row = task(ref, index, agent if agent is not None else worker_agent(spec))
    except Exception as err:  # the scene (or the agent on it) failed: a failed row, the run goes on
        row = {"token": ref.token, "family": ref.family, "valid": False, "reason": f"{type(err).__name__}: {err}"}
    return {"ref": ref.token, "index": index, **row}


class RunError(ValueError):
    """A run that cannot start as asked (its options, or what its output folder already holds): the message says
    what and where."""


def read_rows(path: Path) -> dict[str, dict]:
    """Rows of an earlier run by scene ref; a line cut short by a kill is dropped (that scene runs again)."""
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["ref"]] = row
    return rows


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows to a rows.jsonl; a line cut short by a kill is ended first, so that it does not swallow them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as log:
        cut = log.tell() > 0 and (log.seek(-1, os.SEEK_END), log.read(1))[1] != b"\n"
        log.write(b"\n" if cut else b"")
        log.writelines((json.dumps(row) + "\n").encode() for row in rows)


def run_split(refs: list[SceneRef], spec: AgentSpec, task: Task, out_dir: Path, workers: int | None = None,
              ray_address: str | None = None, progress: Callable[[int, int], None] | None = None,
              on_row: Callable[[dict[str, dict]], None] | None = None) -> list[dict]:
    """Run `task` on every scene of `refs` without a row in `out_dir/rows.jsonl` yet; returns the rows in split
    order. `on_row(rows so far)` runs after each finished scene (e.g. to rewrite a results file). Scenes run on
    a local process pool of `workers` processes, or on a Ray cluster at `ray_address` ("local" starts one here)."""
    agent = spec.build()  # the agent's own checks (checkpoint, device) and ours, before the first scene
    check_agent(agent, spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = read_rows(out_dir / "rows.jsonl")
    todo = [(i, ref) for i, ref in enumerate(refs) if ref.token not in done]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    finished_before = len(refs) - len(todo)
    append_rows(out_dir / "rows.jsonl", [])  # ends a line cut short by a kill
    with (out_dir / "rows.jsonl").open("a") as log:
        if ray_address is not None and todo:
            finished = _ray_rows(ray_address, spec, task, todo, workers)
        elif workers == 1:
            agent = initialized(agent) if todo else agent
            finished = (run_task(task, spec, ref, i, agent) for i, ref in todo)
        else:
            finished = _pool_rows(spec, task, todo, workers)
        for count, row in enumerate(finished, start=finished_before + 1):
            done[row["ref"]] = row
            log.write(json.dumps(row) + "\n")
            log.flush()
            if on_row is not None:
                on_row(done)
            if progress is not None:
                progress(count, len(refs))
    return [done[ref.token] for ref in refs]


def _pool_rows(spec: AgentSpec, task: Task, todo: list[tuple[int, SceneRef]], workers: int) -> Iterator[dict]:
    with ProcessPoolExecutor(workers) as pool:
        for future in as_completed([pool.submit(run_task, task, spec, ref, i) for i, ref in todo]):
            yield future.result()


def _ray_rows(address: str, spec: AgentSpec, task: Task, todo: list[tuple[int, SceneRef]],
              workers: int) -> Iterator[dict]:
    """Rows as Ray actors finish them (one agent per actor, built once)."""
    import ray
    from ray.util import ActorPool

    started = not ray.is_initialized()
    if started:
        local = address == "local"
        ray.init(address=None if local else address, num_cpus=workers if local else None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)

    @ray.remote(num_cpus=1)
    class SceneWorker:
        def run(self, ref: SceneRef, index: int) -> dict:
            return run_task(task, spec, ref, index)

    try:
        actors = [SceneWorker.remote() for _ in range(max(1, min(workers, len(todo))))]
        yield from ActorPool(actors).map_unordered(lambda actor, job: actor.run.remote(job[1], job[0]), todo)
    finally:
        if started:
            ray.shutdown()


__all__ = ["RunError", "Task", "append_rows", "check_agent", "read_rows", "run_split", "run_task", "worker_agent"]
