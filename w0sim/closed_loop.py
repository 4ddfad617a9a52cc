"""Closed-loop (Leaderboard-style) evaluation: each route driven in `w0sim/ClosedLoop-v0`, `results.json` in the
Leaderboard 2.x layout.

Each route is a scene driven until the Leaderboard's rules end it; every agent drives through
`compute_trajectory(agent_input, world)`, privileged agents reading the live world view. Routes run in the
Leaderboard's order and under its ids (`route_plan`: each route's repetitions one after another,
`RouteScenario_<id>_rep<k>`), and a record's `index` is its place in that order. The results file is rewritten
atomically after every route; while routes are left it is the Leaderboard's checkpoint (entry status Started,
progress [k, N], the first k routes' records), so the Leaderboard can resume from it and `w0sim eval` can resume
from one the Leaderboard wrote (`results_to_adopt`). A route that could not run is listed in `failed_routes.json` and
left out of the records. A route the simulation crashed on (a CARLA server's failure) is recorded as the Leaderboard
records it, and the file stays the Leaderboard's checkpoint up to that route (entry status Crashed) until a run into
the folder drives it again; the routes driven after it wait in rows.jsonl.
"""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import numpy as np

from agents.base import Agent, AgentUnavailable
from agents.registry import AgentSpec
from metrics.leaderboard.criteria import ROUND_DIGITS, route_length
from metrics.leaderboard.events import FAILURE_SIMULATION_CRASHED
from metrics.leaderboard.results_io import ResultsFileError, build_results, read_results, resume_check, write_results
from metrics.leaderboard.route_record import build_route_record, route_id_for
from scenarios.splits import SceneRef, repeated, resolve_split
from sim.envs.backends.carla.settings import CarlaSettings
from sim.envs.backends.carla.watchdog import call_with_deadline
from sim.envs.backends.failures import SimulationCrashed, SimulatorUnavailable
from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.envs.observation import InvalidActionError
from w0sim.latency import DecisionTimer, PlanDelay, check_plan_delay
from w0sim.runner import (
    RunError,
    SceneFailure,
    append_rows,
    atomic_write,
    check_workers,
    failure_reason,
    output_folder,
    read_rows,
    run_manifest,
    run_split,
)

#: Route statuses that say the software failed rather than how the agent drove: a run with one exits 1.
CRASH_STATUSES = ("Failed - Agent crashed", "Failed - Simulation crashed", "Failed - Agent couldn't be set up")


def agent_sensors(agent: Agent) -> list[str]:
    """The results file's `sensors`, in CARLA's sensor names: ego status always, the front camera for a camera
    agent, the map (and, here, the whole simulator state) for a privileged agent."""
    sensors = ["sensor.speedometer"]
    if agent.get_sensor_config().cameras:
        sensors.append("sensor.camera.rgb")
    if agent.privileged:
        sensors.append("sensor.opendrive_map")
    return sensors


def route_plan(split: str, limit: int | None = None, repetitions: int = 1,
               split_options: dict | None = None) -> list[SceneRef]:
    """The route runs of a closed-loop evaluation in the Leaderboard's order (its RouteIndexer): for each of the first
    `limit` routes of `split`, repetitions 0 .. `repetitions` - 1. Each run's token is its Leaderboard route id,
    `RouteScenario_<id>_rep<k>`: <id> is the route file's id for `carla:` splits and the route's place in the split
    (0, 1, ...) otherwise. Repetition k of a route draws its traffic and signal phases from seed k (`repeated`)."""
    if repetitions < 1:
        raise RunError(f"repetitions must be at least 1, got {repetitions}")
    routes = resolve_split(split, limit, **(split_options or {}))
    return [repeated(ref, k, route_id_for(ref.route_id if ref.route_file is not None else i, k))
            for i, ref in enumerate(routes) for k in range(repetitions)]


class AgentTookTooLong(RuntimeError):
    """The agent's decision passed the agent watchdog's limit (the Leaderboard's "Agent took longer than ...")."""


def _route_env(scene, agent: Agent, carla: CarlaSettings | None) -> ClosedLoopEnv:
    """The route's environment: `w0sim/ClosedLoop-v0` on the embedded simulator, or `w0sim/Carla-v0` on a server."""
    kwargs = {"cameras": agent.get_sensor_config().cameras, "privileged": agent.privileged}
    if carla is None:
        return ClosedLoopEnv(scenes=[scene], **kwargs)
    from sim.envs.carla_env import CarlaEnv

    return CarlaEnv(scenes=[scene], carla=carla, **kwargs)


def _crashed_row(ref: SceneRef, index: int, scene, record: dict, reason: str, timer: DecisionTimer) -> dict:
    """The row of a route the simulator crashed on: its record ("Failed - Simulation crashed", as the Leaderboard
    records it), marked `rerun` so that the next run into the folder drives it again (the Leaderboard's resume re-runs a
    crashed route)."""
    record = dict(record, index=index, route_id=ref.token)
    return {"token": ref.token, "family": ref.family, "scene": scene.token, "record": record,
            "latency": timer.summary(), "reason": reason, "rerun": True}


def _restart_after_crash(row: dict, carla: CarlaSettings | None) -> dict:
    """`row`, after restarting the server with `carla.restart_command` when the simulation crashed on its route (once
    the route is cleaned up, so that none of its clean-up reaches the new server); a failed restart is added to the
    row's reason."""
    if carla is None or not carla.restart_command or FAILURE_SIMULATION_CRASHED not in row["record"]["status"]:
        return row
    from sim.envs.backends.carla.connection import restart_server

    try:
        restart_server(carla)
    except (SimulatorUnavailable, OSError, subprocess.SubprocessError) as err:
        return dict(row, reason=f"{row['reason']}; restarting the server failed: {err}")
    return row


def _simulation_crash_record(scene) -> dict:
    """The record of a route whose simulation could not be set up: nothing driven, no time taken (the Leaderboard's
    durations of a route that never started)."""
    length = route_length(scene.route_points) if scene.route_points is not None else 0.0
    return build_route_record(0, scene.token, length, 0.0, (), external_failure=FAILURE_SIMULATION_CRASHED,
                              duration_game=0.0, duration_system=0.0)


def drive_route(ref: SceneRef, index: int, agent: Agent, plan_delay_s: float = 0.0,
                carla: CarlaSettings | None = None) -> dict:
    """{"token": the route id, "family", "scene": the scene's own token, "record": the Leaderboard route record,
    "latency": the agent's time per decision (`DecisionTimer.summary`)} of one route driven by `agent`; `index` is its
    place in the run order. `plan_delay_s`: each plan is driven that long after its decision (`PlanDelay`).
    A route the agent crashed on (it raised, or planned a trajectory the environment refuses: non-finite,
    implausible, of the wrong shape or type) keeps its record, "Failed - Agent crashed" as the Leaderboard writes it,
    and the row says why (`reason`; `rerun` when the agent could not be reached); a route that cannot run raises
    SceneFailure with the reason.
    The record's meta has the Leaderboard's durations: `duration_game` the simulated seconds (the environment's),
    `duration_system` the wall-clock seconds from the route's start (its scene loaded, the environment reset) to
    its end, the agent's planning included, as the Leaderboard's ScenarioManager times a route.
    `carla`: drive the route on that CARLA server (`w0sim/Carla-v0`) instead of the embedded simulator. Then, as with
    the Leaderboard, every tick and every decision has a watchdog (`carla.timeout_s`); a server that fails (no answer,
    a hung tick, a dropped sensor frame, a spawn collision, a town that will not load) ends the route "Failed -
    Simulation crashed" with what was driven so far, marked `rerun` (the server then restarted, once the route is
    cleaned up, by `carla.restart_command`); a decision past the limit is the agent's crash. The server is cleaned up after every
    route, however it ended (Ctrl-C included)."""
    doing, timer = "loading the route's scene", DecisionTimer()
    try:
        scene = ref.load()
        doing = "setting up the route's environment"
        env = _route_env(scene, agent, carla)
    except SimulationCrashed as err:
        row = _crashed_row(ref, index, scene, _simulation_crash_record(scene), failure_reason(err, doing), timer)
        return _restart_after_crash(row, carla)
    except Exception as err:
        raise SceneFailure(failure_reason(err, doing)) from err
    try:
        row = _drive(ref, index, agent, env, scene, plan_delay_s, carla, timer)
    finally:
        env.close()
    return _restart_after_crash(row, carla)


def _drive(ref: SceneRef, index: int, agent: Agent, env: ClosedLoopEnv, scene, plan_delay_s: float,
           carla: CarlaSettings | None, timer: DecisionTimer) -> dict:
    """`drive_route` from the environment on: reset, then decide and step until the route ends."""
    try:
        _, info = env.reset(seed=0)
        delay = PlanDelay(plan_delay_s, env.sampling) if plan_delay_s else None
    except SimulationCrashed as err:
        return _crashed_row(ref, index, scene, _simulation_crash_record(scene),
                            failure_reason(err, "setting up the route on the simulator"), timer)
    except Exception as err:
        raise SceneFailure(failure_reason(err, "setting up the route's environment")) from err
    started = time.monotonic()
    crash, unreachable = "", False
    decision = 0
    crashed = np.full((env.sampling.num_poses, 3), np.nan)  # a non-finite action makes the env end the route as the LB does
    while True:
        planning = f"agent {agent.name()} planning decision {decision} (t = {info.get('time_s', 0):.1f} s)"
        try:
            planned = _decide(timer, agent, info, carla, planning)
            action = delay.action(planned, info["agent_input"].ego_state) if delay else planned
        except Exception as err:  # the agent crashed
            crash, action, unreachable = failure_reason(err, planning), crashed, isinstance(err, AgentUnavailable)
        simulating = f"simulating decision {decision} of the route (t = {info.get('time_s', 0):.1f} s)"
        try:
            try:
                _, _, terminated, truncated, info = env.step(action)
            except InvalidActionError as err:  # a trajectory of the wrong shape or type: the agent's crash too
                crash = failure_reason(err, planning)
                _, _, terminated, truncated, info = env.step(crashed)
        except SimulationCrashed as err:
            record = env.crash_record(FAILURE_SIMULATION_CRASHED)
            record["meta"] = dict(record["meta"], duration_system=round(time.monotonic() - started, ROUND_DIGITS))
            return _crashed_row(ref, index, scene, record, failure_reason(err, simulating), timer)
        except Exception as err:
            raise SceneFailure(failure_reason(err, simulating)) from err
        decision += 1
        if terminated or truncated:
            record = dict(info["route_record"])
            record.update(index=index, route_id=ref.token)
            record["meta"] = dict(record["meta"], duration_system=round(time.monotonic() - started, ROUND_DIGITS))
            row = {"token": ref.token, "family": ref.family, "scene": scene.token, "record": record,
                   "latency": timer.summary()}
            if record.get("status") in CRASH_STATUSES:
                row["reason"] = crash or " ".join(str(info.get("failure_reason") or "").split()) or record["status"]
                if unreachable:
                    row["rerun"] = True
            return row


def _decide(timer: DecisionTimer, agent: Agent, info: dict, carla: CarlaSettings | None, what: str) -> np.ndarray:
    """The agent's plan for this decision; on a CARLA server under the agent watchdog (AgentTookTooLong)."""
    def plan() -> np.ndarray:
        return timer.plan(agent, info["agent_input"], info.get("world")).poses

    if carla is None:
        return plan()
    return call_with_deadline(plan, carla.timeout_s, what, late=AgentTookTooLong)


def _same_record(a: Mapping, b: Mapping) -> bool:
    """Two records of one route alike but for `index` (a run whose plan changed places them elsewhere)."""
    return {k: v for k, v in a.items() if k != "index"} == {k: v for k, v in b.items() if k != "index"}


def results_to_adopt(out_dir: Path, plan: list[SceneRef]) -> list[dict]:
    """The rows `evaluate_routes` appends to `out_dir/rows.jsonl` for `out_dir/results.json`'s finished routes.

    A file whose records are all rows already (this run's own file) adds nothing. Any other file (the
    Leaderboard's, or ours without its rows.jsonl) must fit the planned route ids by the Leaderboard's resume rule
    (`resume_check`); its first k records are then adopted. A file that does not fit, or whose records disagree with
    rows.jsonl, raises RunError naming the file and the mismatch: another run's results are never reused, nor
    overwritten.
    """
    path, log = out_dir / "results.json", out_dir / "rows.jsonl"
    if not path.exists():
        return []
    try:
        results = read_results(path)
    except ResultsFileError as err:
        raise RunError(f"{err}: not a Leaderboard results file this run can resume from; evaluate into another "
                       f"--out folder or remove {path}") from None
    rows = read_rows(log)
    records = results["_checkpoint"]["records"]
    if all("record" in rows.get(r.get("route_id"), {}) and _same_record(rows[r["route_id"]]["record"], r)
           for r in records):
        return []
    ids = [ref.token for ref in plan]
    done, mismatch = resume_check(results, ids)
    if mismatch:
        raise RunError(f"{path} holds the results of another run: {mismatch} (this run: {ids[0]} .. {ids[-1]}, "
                       f"{len(ids)} routes); evaluate into another --out folder or remove {path}")
    adopted = []
    for index, (ref, record) in enumerate(zip(plan[:done], records[:done])):
        earlier = rows.get(ref.token, {}).get("record")
        if earlier is not None and not _same_record(earlier, record):
            raise RunError(f"{path} and {log} hold different records of {ref.token}; evaluate into another --out "
                           f"folder or remove one of them")
        if earlier is None:
            adopted.append({"ref": ref.token, "index": index, "token": ref.token, "family": ref.family,
                            "record": dict(record, index=index), "source": str(path)})
    return adopted


def evaluate_routes(split: str, spec: AgentSpec, out_dir: str | Path, limit: int | None = None,
                    workers: int | None = None, progress: Callable[[int, int], None] | None = None,
                    split_options: dict | None = None, ray_address: str | None = None,
                    repetitions: int = 1, plan_delay_s: float = 0.0, carla: CarlaSettings | None = None) -> dict:
    """Drive the first `limit` routes of `split`, `repetitions` times each (`route_plan`; `split_options`: see
    `resolve_split`, e.g. `town_dir` for `carla:ROUTES.xml`); writes and returns `out_dir/results.json`
    (Leaderboard layout). A results.json already in `out_dir` is resumed from (`results_to_adopt`). See `run_split`
    for workers, Ray and resume from rows.jsonl. `out_dir` is held while the run writes to it and records the run's
    manifest (`output_folder`): a folder of another agent, checkpoint, split or options is refused (RunError).
    `plan_delay_s`: each plan driven that long after its decision (`PlanDelay`; a whole number of 0.5 s decisions).
    `carla`: drive the routes on that CARLA server (`drive_route`), one route at a time from this process (one
    synchronous server takes one ticking client)."""
    out_dir = Path(out_dir)
    check_workers(workers)
    check_plan_delay(plan_delay_s)
    if carla is not None:
        workers = check_carla_run(workers, ray_address)
        check_carla_server(carla)
    plan = route_plan(split, limit, repetitions, split_options)
    agent = spec.build()
    manifest = closed_loop_manifest(spec, split, limit, repetitions, split_options, agent, plan_delay_s, carla)
    with output_folder(out_dir, manifest) as folder:
        adopted = results_to_adopt(out_dir, plan)  # checks a results.json there before anything is written
        folder.write_manifest()
        append_rows(out_dir / "rows.jsonl", adopted)
        options = {k: v for k, v in (("plan_delay_s", plan_delay_s), ("carla", carla)) if v}
        task = partial(drive_route, **options) if options else drive_route
        return _drive_routes(plan, spec, task, out_dir, agent_sensors(agent), workers, progress, ray_address)


def check_carla_server(carla: CarlaSettings) -> None:
    """RunError, before anything is written, when no CARLA server answers at `carla`'s address within its timeout or
    the server is a version the backend does not drive: the run cannot start as asked (rather than recording every
    route as crashed, a timeout each)."""
    from sim.envs.backends.carla.connection import CarlaVersionError, connect

    try:
        connect(carla)
    except (SimulatorUnavailable, CarlaVersionError, ImportError) as err:
        raise RunError(str(err)) from None


def check_carla_run(workers: int | None, ray_address: str | None) -> int:
    """The worker count of a run on a CARLA server: 1 (RunError for more, or for Ray)."""
    if ray_address is not None:
        raise RunError("--backend carla drives one server from this process; --ray-address does not apply")
    if workers not in (None, 1):
        raise RunError(f"--backend carla drives one server from one process (a synchronous server takes one ticking "
                       f"client); --workers {workers} does not apply (run one evaluation per server instead)")
    return 1


#: The CARLA settings that change what a route drives like; the address, timeouts and restart command do not, so a
#: run resumed against another server (or after a restart) continues the same folder.
CARLA_MANIFEST_FIELDS = ("fixed_delta_s", "traffic_manager_seed", "hero_blueprint", "background_traffic", "warmup_ticks")


def closed_loop_manifest(spec: AgentSpec, split: str, limit: int | None, repetitions: int,
                         split_options: dict | None, agent: Agent | None = None, plan_delay_s: float = 0.0,
                         carla: CarlaSettings | None = None) -> dict:
    """The manifest of a closed-loop run (`run_manifest`; no PDM version: routes are scored as the Leaderboard's;
    a plan delay or a CARLA backend only where there is one, so folders of runs without them stay resumable)."""
    manifest = run_manifest(spec, split, "closed_loop", limit=limit, repetitions=repetitions,
                            split_options=split_options, agent=agent)
    if plan_delay_s:
        manifest["plan_delay_s"] = plan_delay_s
    if carla is not None:
        manifest["backend"] = {"name": "carla", **{k: getattr(carla, k) for k in CARLA_MANIFEST_FIELDS}}
    return manifest


def _drive_routes(plan: list[SceneRef], spec: AgentSpec, task, out_dir: Path, sensors: list[str], workers: int | None,
                  progress: Callable[[int, int], None] | None, ray_address: str | None) -> dict:
    path = out_dir / "results.json"

    def records(rows: dict[str, dict], prefix: bool = False) -> list[dict]:
        """The records in run order, each indexed by its place in it; `prefix`: only up to the first route not
        finished (the Leaderboard's checkpoint holds its first k routes)."""
        found = []
        for index, ref in enumerate(plan):
            if "record" not in rows.get(ref.token, {}):
                if prefix:
                    break
                continue
            found.append(dict(rows[ref.token]["record"], index=index))
        return found

    def checkpoint(rows: dict[str, dict]) -> dict | None:
        """The Leaderboard's checkpoint while a route the simulation crashed on is to be driven again: the records up
        to that route, progress [k + 1, N], entry status Crashed, as the Leaderboard stops after such a route (so its
        --resume, like ours, drives that route again). None when no route crashed the simulation."""
        done = records(rows, prefix=True)
        crashed = next((k for k, record in enumerate(done) if FAILURE_SIMULATION_CRASHED in record["status"]), None)
        if crashed is None:
            return None
        results = build_results(done[: crashed + 1], len(plan), sensors=sensors, validate=False)
        results.update(entry_status="Crashed", eligible=False)
        return results

    def rewrite(rows: dict[str, dict]) -> None:
        # While routes are left, the file says so, as the Leaderboard's does during a run.
        partial = checkpoint(rows)
        if partial is None:
            partial = build_results(records(rows, prefix=True), len(plan), sensors=sensors, validate=False)
            partial.update(entry_status="Started", eligible=False)
        write_results(path, partial)

    rows = run_split(plan, spec, task, out_dir, workers, ray_address, progress, on_row=rewrite)
    failures = [{"route_id": row["ref"], "reason": row["reason"]} for row in rows if "record" not in row]
    (out_dir / "failed_routes.json").unlink(missing_ok=True)  # a resumed run lists its failures anew
    if failures:
        atomic_write(out_dir / "failed_routes.json", json.dumps(failures, indent=1))
    by_ref = {row["ref"]: row for row in rows}
    results = checkpoint(by_ref) or build_results(records(by_ref), len(plan), sensors=sensors)
    write_results(path, results)
    return results


def route_failures(out_dir: str | Path, plan: list[SceneRef]) -> list[tuple[str, str]]:
    """(route id, reason) of each planned route that failed: it could not run (no record; see failed_routes.json), or
    its record says that the agent or the simulation crashed (`CRASH_STATUSES`; the record stays in results.json,
    as the Leaderboard keeps it)."""
    rows = read_rows(Path(out_dir) / "rows.jsonl")
    failures = []
    for ref in plan:
        row = rows.get(ref.token)
        if row is None:
            continue
        if "record" not in row:
            failures.append((ref.token, row.get("reason") or "the route could not run (no reason recorded)"))
        elif row["record"].get("status") in CRASH_STATUSES:
            source = f" (a record adopted from {row['source']})" if row.get("source") else ""
            failures.append((ref.token, f"{row['record']['status']}: {row.get('reason') or 'no reason recorded'}"
                                        f"{source}"))
    return failures


def routes_markdown(results: dict, agent: str, split: str, families: dict[str, str] | None = None) -> str:
    """Global scores, means per family (`families`: route id -> family) and one line per route, as markdown."""
    record = results["_checkpoint"]["global_record"]
    scores = record["scores_mean"]
    lines = [f"# {agent} on {split} (closed loop, Leaderboard 2.0 scoring)", "",
             f"driving score {scores['score_composed']:.2f}, route completion {scores['score_route']:.2f}, "
             f"infraction penalty {scores['score_penalty']:.3f} over {results['_checkpoint']['progress'][1]} routes"]
    records = results["_checkpoint"]["records"]
    if results.get("entry_status") == "Crashed" and records:
        lines += ["", f"The simulation crashed on {records[-1]['route_id']}: results.json is the Leaderboard's checkpoint "
                      "up to that route (entry status Crashed, scores over the routes in it). The next run into this "
                      "folder drives it again; the routes driven after it are kept in rows.jsonl and join the file then."]
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


__all__ = ["AgentTookTooLong", "CARLA_MANIFEST_FIELDS", "CRASH_STATUSES", "agent_sensors", "check_carla_run",
           "check_carla_server",
           "closed_loop_manifest", "drive_route", "evaluate_routes", "results_to_adopt", "route_failures", "route_plan",
           "routes_markdown"]
