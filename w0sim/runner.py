"""The one evaluation runner: a task per scene of a split, one agent per worker, serially, on a local process pool
or on Ray, with every finished scene's row appended to `rows.jsonl` so that an interrupted run resumes.

A task is a picklable `task(ref, index, agent) -> dict` (one-shot scoring, a closed-loop route). An exception
in it becomes a failed row with a one-line reason, and the run goes on; so does a worker process that dies (a
segfault in a native library): its scene becomes a failed row saying so. Workers build their agent from the
`AgentSpec` once (`worker_agent`), so nothing but the spec and the scene references crosses processes. Every mode
(serial, process pool, Ray, rollout videos) computes a CPU torch agent on one thread (`pin_threads`), so that
scores do not depend on the worker count.

The output folder of a run (`output_folder`) is locked while the run writes to it, and holds the run's manifest
(`manifest.json`: agent, checkpoint hash, split, scoring options, w0sim version), written before the first row:
a run into a folder whose manifest names other settings is refused, naming each difference.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from pathlib import Path
from typing import Any

from agents.base import Agent, AgentError, AgentUnavailable
from agents.registry import AgentSpec
from scenarios.splits import SceneRef
from sim.agent_input import NUM_HISTORY_FRAMES
from sim.state import TrajectorySampling
from training.record import TRAINING_RECORD

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


def pin_threads(agent: Agent) -> None:
    """A CPU torch agent computes on one thread in every mode (serial, pool and Ray workers, rollout videos): every
    worker has its own core, and a float32 sum split over another number of threads rounds differently."""
    if agent.device == "cpu" and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def initialized(agent: Agent) -> Agent:
    """`agent` after `initialize()`, its torch threads pinned (`pin_threads`) before and after it loads."""
    pin_threads(agent)
    agent.initialize()
    pin_threads(agent)  # an agent that imports torch in initialize()
    return agent


@lru_cache(maxsize=1)
def worker_agent(spec: AgentSpec) -> Agent:
    """The agent of this worker process, built and initialised on its first scene."""
    return initialized(spec.build())


MAX_REASON_CHARS = 400


def failure_reason(err: BaseException, doing: str | None = None) -> str:
    """A one-line reason for a failed scene: what was being done, the exception's type and its message (on one line,
    at most MAX_REASON_CHARS; an exception without a message says so)."""
    text = " ".join(str(err).split()) or "(no message)"
    reason = f"{type(err).__name__}: {text}"
    if doing:
        reason = f"{doing}: {reason}"
    return reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS - 3] + "..."


class SceneFailure(Exception):
    """Raised by a task for a failed scene whose one-line reason it has already written (`failure_reason`)."""


def failed_row(ref: SceneRef, index: int, reason: str, rerun: bool = False) -> dict:
    """The row of a scene that failed for `reason`; `rerun`: not the agent's doing (it could not be reached), so the
    next run into the folder runs the scene again."""
    row = {"ref": ref.token, "index": index, "token": ref.token, "family": ref.family, "valid": False, "reason": reason}
    return {**row, "rerun": True} if rerun else row


def run_task(task: Task, spec: AgentSpec, ref: SceneRef, index: int, agent: Agent | None = None) -> dict:
    """The task's row for one scene, or a failed row (`reason`) when it raised; `ref` names the scene (resume key)."""
    try:
        if agent is None:
            try:
                agent = worker_agent(spec)
            except Exception as err:
                raise SceneFailure(failure_reason(err, f"building agent {spec.name} in its worker")) from err
        row = task(ref, index, agent)
    except SceneFailure as err:
        return failed_row(ref, index, str(err), rerun=isinstance(err.__cause__, AgentUnavailable))
    except Exception as err:  # the scene (or the agent on it) failed: a failed row, the run goes on
        return failed_row(ref, index, failure_reason(err, "running the scene"), rerun=isinstance(err, AgentUnavailable))
    if not row.get("valid", True) and not str(row.get("reason") or "").strip():
        row = {**row, "reason": "failed without a reason (the task gave none)"}
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
            if isinstance(row, dict) and isinstance(row.get("ref"), str):
                rows[row["ref"]] = row
    return rows


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows to a rows.jsonl; a line cut short by a kill is ended first, so that it does not swallow them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as log:
        cut = log.tell() > 0 and (log.seek(-1, os.SEEK_END), log.read(1))[1] != b"\n"
        log.write(b"\n" if cut else b"")
        log.writelines((json.dumps(row) + "\n").encode() for row in rows)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `path` whole or not at all: a temporary file of this run's own (a unique name in the same folder), then
    renamed over `path`, so that a kill or a second writer never leaves a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def max_workers() -> int:
    """The most worker processes a run may ask for: four per CPU core, at most 256."""
    return min(4 * (os.cpu_count() or 1), 256)


def check_workers(workers: int | None) -> None:
    """A RunError for a worker count below 1 or above `max_workers()` (None: all cores)."""
    if workers is None:
        return
    if workers < 1 or workers > max_workers():
        raise RunError(f"--workers {workers}: expected 1 to {max_workers()} (4 per CPU core, at most 256; "
                       f"this machine has {os.cpu_count()} cores)")


# ---- the output folder: its manifest and its lock ------------------------------------------------------------------

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
MANIFEST_FORMAT = "w0sim eval run manifest 1"
#: Result files of a run; a folder holding one of these but no manifest was written by an older w0sim.
RESULT_FILES = ("rows.jsonl", "scores.csv", "results.json")
#: Fields a run may change when it resumes a folder: rows are keyed by scene (route and repetition), and the first
#: N scenes of a split are the same scenes whatever N, so a run with another limit or more repetitions reuses the
#: finished ones and runs the others; the manifest then records the new values.
EXTENDABLE_FIELDS = ("limit", "repetitions")
#: Fields recorded for people, not compared: the agent is compared by its class, the checkpoint by its content.
INFORMATION_FIELDS = ("agent", "checkpoint")


def checkpoint_sha256(path: str | Path) -> str | None:
    """sha256 over a checkpoint's files (a folder: every file in it but documentation (*.md) and its training record,
    by relative path and content; a file: its content); None when `path` does not exist."""
    path = Path(path)
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = sorted((f.relative_to(path).as_posix(), f) for f in path.rglob("*")
                       if f.is_file() and f.suffix.lower() != ".md" and f.relative_to(path).as_posix() != TRAINING_RECORD)
    else:
        return None
    stats = [(name, file.stat()) for name, file in files]
    key = (str(path.resolve()), tuple((name, st.st_size, st.st_mtime_ns, st.st_ino) for name, st in stats))
    if key not in _HASHES:  # a run builds its manifest more than once; a large checkpoint is read once
        digest = hashlib.sha256()
        for (name, file), (_, st) in zip(files, stats):
            digest.update(f"{name}\0{st.st_size}\0".encode())
            with file.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


_HASHES: dict[tuple, str] = {}


def _split_id(split: str) -> str:
    """The split as the manifest records it: builtin: and navsim: names as given, a route file or a scene folder by
    its absolute path (the same folder named from another working directory is the same split)."""
    if split.startswith(("builtin:", "navsim:")):
        return split
    if split.startswith("carla:"):
        return "carla:" + str(Path(split.removeprefix("carla:")).resolve())
    return str(Path(split).resolve())


def run_manifest(spec: AgentSpec, split: str, mode: str, *, limit: int | None = None, pdm_version: str | None = None,
                 human_filter: bool | None = None, repetitions: int = 1, split_options: dict | None = None,
                 agent: Agent | None = None) -> dict[str, Any]:
    """What a run into an output folder is: the settings that decide its rows. `mode` is "one_shot" or "closed_loop";
    give `pdm_version` and `human_filter` only where they change the scores (one-shot; the filter for v2.2)."""
    from w0sim import __version__

    agent = agent if agent is not None else spec.build()
    checkpoint = getattr(agent, "checkpoint", None)
    options = {k: str(Path(v).resolve()) for k, v in sorted((split_options or {}).items()) if v is not None}
    return {"format": MANIFEST_FORMAT, "w0sim_version": __version__, "mode": mode,
            "agent": spec.name, "agent_class": spec.target,
            "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
            "checkpoint_sha256": None if checkpoint is None else checkpoint_sha256(checkpoint),
            "seed": spec.options.seed, "device": spec.options.device, "dtype": spec.options.dtype,
            "split": _split_id(split), "split_options": options, "limit": limit, "repetitions": repetitions,
            "pdm_version": pdm_version, "human_filter": human_filter}


def manifest_differences(old: dict, new: dict) -> list[str]:
    """'field: OLD there, NEW now' for each setting in which two manifests differ (EXTENDABLE_FIELDS and
    INFORMATION_FIELDS aside)."""
    differences = []
    for key in dict.fromkeys([*old, *new]):
        if key in EXTENDABLE_FIELDS or key in INFORMATION_FIELDS or old.get(key) == new.get(key):
            continue
        if key == "human_filter" and None in (old.get(key), new.get(key)):
            continue  # recorded for v2.2 only: the pdm_version difference says it
        if key == "agent_class":
            differences.append(f"agent: {old.get('agent')!r} ({old.get(key)}) there, {new.get('agent')!r} "
                               f"({new.get(key)}) now")
        elif key == "checkpoint_sha256":
            differences.append(f"checkpoint: {old.get('checkpoint')} (sha256 {str(old.get(key))[:12]}) there, "
                               f"{new.get('checkpoint')} (sha256 {str(new.get(key))[:12]}) now")
        else:
            differences.append(f"{key}: {old.get(key)!r} there, {new.get(key)!r} now")
    return differences


class OutputFolder:
    """An output folder held by this run (`output_folder`): `write_manifest()` records the run's settings before
    its first row."""

    def __init__(self, path: Path, manifest: dict):
        self.path, self.manifest = path, manifest

    def write_manifest(self) -> None:
        atomic_write(self.path / MANIFEST_NAME, json.dumps(self.manifest, indent=1) + "\n")


_HELD: dict[Path, OutputFolder] = {}  # output folders this process holds (a run's functions nest: evaluate ->
                                      # evaluate_split; the inner one finds the folder held by the same run)


@contextlib.contextmanager
def output_folder(out_dir: str | Path, manifest: dict) -> Iterator[OutputFolder]:
    """Hold `out_dir` for a run: create it, lock it (`.lock`, an exclusive lock released when the run ends or dies;
    a second run on it is refused) and check that what it holds is this run's (RunError otherwise): a manifest
    with the same settings (but for EXTENDABLE_FIELDS), or no manifest and no results (a closed-loop run may
    resume from a Leaderboard results.json alone, `results_to_adopt` checks it). The manifest is written by
    `OutputFolder.write_manifest`, once the run's other checks passed, before its first row."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir} is a file; give a folder (new, or one this run resumes)")
    key = out_dir.resolve()
    if key in _HELD:  # held by this run already (an outer function of it): the same settings, or a bug
        held = _HELD[key]
        differences = manifest_differences(held.manifest, manifest)
        if differences:
            raise RunError(f"{out_dir} is held by a run of other settings in this process: {'; '.join(differences)}")
        yield held
        return
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunError(f"cannot use {out_dir} as the output folder: {err.strerror or err}") from None
    try:
        _lock(fd, out_dir)
        _check_contents(out_dir, manifest)
        _HELD[key] = folder = OutputFolder(out_dir, manifest)
        try:
            yield folder
        except BaseException:
            if created and [p.name for p in out_dir.iterdir()] == [LOCK_NAME]:  # refused before it wrote anything
                (out_dir / LOCK_NAME).unlink()
                out_dir.rmdir()
            raise
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int, out_dir: Path) -> None:
    """An exclusive lock on the open lock file (a POSIX record lock: the kernel drops it when this process ends,
    however it ends, and processes forked from this one do not share it), or a RunError naming its holder."""
    import fcntl

    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            holder = f" (process {int(os.pread(fd, 32, 0).decode().split()[0])})"
        raise RunError(f"another run{holder} is writing to {out_dir}; wait until it ends, or evaluate into another "
                       "--out folder") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _check_contents(out_dir: Path, manifest: dict) -> None:
    path = out_dir / MANIFEST_NAME
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunError(f"{path} cannot be read ({type(err).__name__}: {err}); evaluate into another --out "
                           f"folder, or remove {out_dir} to start afresh") from None
        if not isinstance(old, dict) or old.get("format") != MANIFEST_FORMAT:
            raise RunError(f"{path} is not a w0sim eval manifest; evaluate into another --out folder")
        differences = manifest_differences(old, manifest)
        if differences:
            raise RunError(f"{out_dir} holds a run with other settings, which this run would mix its rows with: "
                           f"{'; '.join(differences)}. Evaluate into another --out folder, or remove {out_dir} to "
                           "start afresh")
        return
    found = [name for name in RESULT_FILES if (out_dir / name).is_file() and (out_dir / name).stat().st_size > 0
             and not (name == "results.json" and manifest["mode"] == "closed_loop")]
    if found:
        raise RunError(f"{out_dir} holds results ({', '.join(found)}) but no {MANIFEST_NAME} saying which agent and "
                       "settings made them (an older w0sim, or another program, wrote them); this run cannot tell "
                       f"whether they are its own. Evaluate into another --out folder, or remove {out_dir} to start "
                       "afresh")


def run_split(refs: list[SceneRef], spec: AgentSpec, task: Task, out_dir: Path, workers: int | None = None,
              ray_address: str | None = None, progress: Callable[[int, int], None] | None = None,
              on_row: Callable[[dict[str, dict]], None] | None = None) -> list[dict]:
    """Run `task` on every scene of `refs` without a row in `out_dir/rows.jsonl` yet (or with a failed row marked
    `rerun`: its agent could not be reached); returns the rows in split
    order. `progress(done, total)` runs before the first scene left (with the scenes done before) and after each;
    not at all when none is left. `on_row(rows so far)` runs after each finished scene (e.g. to rewrite a results
    file). Scenes run on a local process pool of `workers` processes, or on a Ray cluster at `ray_address` ("local"
    starts one here)."""
    agent = spec.build()  # the agent's own checks (checkpoint, device) and ours, before the first scene
    check_agent(agent, spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = read_rows(out_dir / "rows.jsonl")
    todo = [(i, ref) for i, ref in enumerate(refs) if ref.token not in done or done[ref.token].get("rerun")]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    finished_before = len(refs) - len(todo)
    append_rows(out_dir / "rows.jsonl", [])  # ends a line cut short by a kill
    if progress is not None and todo:
        progress(finished_before, len(refs))
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
    """Rows as a process pool finishes them. When a worker process dies (a segfault in a native library, the
    out-of-memory killer), the pool breaks: the scenes that were running then run again one at a time, each in a
    process of its own, so that the one that takes its process down becomes a failed row saying so; the other
    scenes go on in a new pool."""
    pending = list(todo)
    while pending:
        finished: set[int] = set()
        broken = False
        with ProcessPoolExecutor(workers, initializer=_end_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(run_task, task, spec, ref, i): (i, ref) for i, ref in pending}
            for future in as_completed(futures):
                i, ref = futures[future]
                try:
                    row = future.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                except Exception as err:  # the row could not come back from the worker (e.g. it cannot be pickled)
                    row = failed_row(ref, i, failure_reason(err, "returning the scene's row from its worker process"))
                finished.add(i)
                yield row
        pending = [(i, ref) for i, ref in pending if i not in finished]
        if broken:  # the pool hands scenes out in order: those running when it broke are the first unfinished ones
            suspects, pending = pending[:workers], pending[workers:]
            for i, ref in suspects:
                yield _isolated_row(spec, task, ref, i)


def _isolated_row(spec: AgentSpec, task: Task, ref: SceneRef, index: int) -> dict:
    """The row of one scene run in a process of its own; a failed row saying how that process ended if it dies.

    A plain process and a pipe rather than a one-worker pool: its exit code is then read from the process itself, not
    from a pool that may already have reaped it."""
    context = multiprocessing.get_context()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_send_row, args=(send, os.getpid(), task, spec, ref, index))
    process.start()
    send.close()  # only the child holds the sending end now: its death ends the pipe
    try:
        row = receive.recv()
    except EOFError:
        process.join()
        return failed_row(ref, index, f"the worker process running this scene died ({_how_it_ended(process.exitcode)}); "
                                      "a native library crashed or the process was killed")
    finally:
        receive.close()
    process.join()
    return row


def _send_row(send, parent: int, task: Task, spec: AgentSpec, ref: SceneRef, index: int) -> None:
    _end_with_parent(parent)
    row = run_task(task, spec, ref, index)
    try:
        send.send(row)
    except Exception as err:  # the row cannot be pickled
        send.send(failed_row(ref, index, failure_reason(err, "returning the scene's row from its worker process")))
    send.close()


def _end_with_parent(parent: int) -> None:
    """Pool worker initializer: on Linux, the worker ends when the run's process does (killed, say), rather than
    lingering on its queued scenes."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the run ended before the worker started
        os._exit(0)


def _how_it_ended(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        try:
            return f"killed by signal {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    return f"exit code {exit_code}" if exit_code else "it ended abruptly"


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


__all__ = ["MANIFEST_NAME", "OutputFolder", "RunError", "SceneFailure", "Task", "append_rows", "atomic_write", "check_agent",
           "check_workers", "checkpoint_sha256", "failed_row", "failure_reason", "initialized", "manifest_differences",
           "max_workers", "output_folder", "pin_threads", "read_rows", "run_manifest", "run_split", "run_task",
           "worker_agent"]
