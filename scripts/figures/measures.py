"""The measurements behind the published figures: the project's CLI and benchmarks run into a temporary folder
(never into the repository), their outputs read back."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("W0SIM_SHARED", ROOT.parent / "shared"))
CARLA = SHARED / "fixtures" / "carla"
CHECKPOINT = ROOT / "checkpoints" / "drivevla-w0-tiny"


class MeasureError(Exception):
    """A measurement that could not be made (a command failed)."""



@dataclass
class Run:
    """A command the script ran: as it reads (OUT for the temporary folder), and how long it took."""

    command: str
    seconds: float
    out: Path | None = None
    stdout: str = ""


@dataclass
class Context:
    """The temporary folder, the worker count, the runs made so far (shared between figures), and the runs and data
    hashes the figure being measured has used (its provenance)."""

    out: Path
    workers: int
    runs: dict[str, Run] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    used: list[str] = field(default_factory=list)
    data: dict[str, str] = field(default_factory=dict)

    def begin(self) -> None:
        self.used, self.data = [], {}

    def run(self, key: str, args: list[str], env: dict[str, str] | None = None, reuse: bool = True) -> Run:
        """Run `args` (a string 'OUT' in them is the temporary folder) from the repository root, once per `key`."""
        if reuse and key in self.runs:
            self.used.append(self.runs[key].command)
            return self.runs[key]
        shown = " ".join(args)
        if env:
            shown = " ".join(f"{k}={v}" for k, v in env.items()) + " " + shown
        real = [str(self.out) + a[3:] if a.startswith("OUT") else a for a in args]
        real[0] = tool_path(real[0])
        print(f"  $ {shown}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        done = subprocess.run(real, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise MeasureError(f"`{shown}` exited {done.returncode}: {tail}")
        run = Run(shown, seconds, output_folder(real), done.stdout)
        self.runs[key] = run
        self.used.append(shown)
        return run


def tool_path(name: str) -> str:
    """The virtual environment's `w0sim` or `python` (the one running this script)."""
    return str(Path(sys.executable).with_name("w0sim")) if name == "w0sim" else sys.executable if name == "python" else name


def output_folder(args: list[str]) -> Path | None:
    return Path(args[args.index("--out") + 1]) if "--out" in args else None


def relative(path: Path) -> str:
    """A path as a command from the repository root names it."""
    return os.path.relpath(path, ROOT)


def read_rows(path: Path) -> list[dict]:
    """rows.jsonl of an eval folder, by index (the last row of a scene wins, as the runner reads it)."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["index"]] = row
    return [rows[i] for i in sorted(rows)]


def navtest_rows(ctx: Context, agent: str, limit: int) -> list[dict]:
    """The first `limit` rows of `w0sim eval` of `agent` on builtin:navtest (PDMS v1.1); a larger limit resumes the
    same folder, so 50 and 500 tokens cost one run of 500."""
    key = f"navtest-{agent}"
    args = ["w0sim", "eval", "--agent", agent, "--split", "builtin:navtest", "--limit", str(limit),
            "--workers", str(ctx.workers), "--out", f"OUT/{key}"]
    run = ctx.run(key, args, reuse=ctx.limits.get(key, 0) >= limit)
    if ctx.limits.get(key, 0) >= limit:
        ctx.used[-1] = " ".join(args)  # the smaller run reads the same rows
    ctx.limits[key] = max(limit, ctx.limits.get(key, 0))
    note_checkpoint(ctx, run.out)
    rows = [row for row in read_rows(run.out / "rows.jsonl") if row["index"] < limit]
    if len(rows) != limit:
        raise MeasureError(f"{key}: {len(rows)} rows, {limit} expected")
    return rows


def note_checkpoint(ctx: Context, folder: Path) -> None:
    """The checkpoint's hash, as the run's manifest records it, into the provenance."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("checkpoint_sha256"):
        ctx.data["checkpoint sha256"] = manifest["checkpoint_sha256"][:16]


NAVTEST_COLUMNS = {"nc": "no_at_fault_collisions", "dac": "drivable_area_compliance", "ep": "ego_progress",
                   "ttc": "time_to_collision_within_bound", "c": "comfort", "ddc": "driving_direction_compliance",
                   "pdms": "score"}
FAMILIES = ("straight", "curve", "intersection", "t_junction", "merge")


def mean_score(rows: list[dict], column: str = "score") -> float:
    """The mean of a column over the valid rows (NAVSIM's average leaves failed scenes out)."""
    values = [float(row[column]) for row in rows if row["valid"]]
    return sum(values) / len(values) if values else math.nan


def navtest_scores(ctx: Context, agents: tuple[str, ...], limit: int) -> dict[str, float]:
    """agent.nc ... agent.pdms: the means of every sub-score on the first `limit` navtest tokens."""
    measured = {}
    for agent in agents:
        rows = navtest_rows(ctx, agent, limit)
        measured |= {f"{agent}.{short}": mean_score(rows, column) for short, column in NAVTEST_COLUMNS.items()}
    return measured


def family_scores(rows: list[dict]) -> dict[str, float]:
    """Mean PDMS per generator family."""
    return {family: mean_score([r for r in rows if r["family"] == family]) for family in FAMILIES}


def measure_main_job(ctx: Context) -> dict[str, float]:
    rows = navtest_rows(ctx, "drivevla_w0", 50)
    groups = {"all": rows} | {family: [r for r in rows if r["family"] == family] for family in FAMILIES}
    measured = {}
    for name, group in groups.items():
        measured |= {f"{name}.tokens": len(group), f"{name}.pdms": mean_score(group)}
    return measured


NAVTEST_AGENTS = ("drivevla_w0", "constant_velocity", "human", "pdm_closed", "pdm_lane_following")


def measure_navtest_agents(ctx: Context) -> dict[str, float]:
    return navtest_scores(ctx, NAVTEST_AGENTS, 500)


def measure_navtest_families(ctx: Context) -> dict[str, float]:
    return family_scores(navtest_rows(ctx, "drivevla_w0", 500))


def measure_navtest_100(ctx: Context) -> dict[str, float]:
    return {agent: mean_score(navtest_rows(ctx, agent, 100)) for agent in ("constant_velocity", "pdm_closed",
                                                                           "pdm_lane_following")}


@dataclass
class ClosedLoop:
    """A closed-loop eval: its results.json, the family (or town) of each route, the command's wall time."""

    results: dict
    families: dict[str, str]
    seconds: float
    folder: Path

    @property
    def records(self) -> list[dict]:
        return self.results["_checkpoint"]["records"]


CARLA_FILES = {"devtest": "routes_devtest.xml", "testing": "routes_testing.xml"}


def closed_loop(ctx: Context, agent: str, split: str) -> ClosedLoop:
    """`w0sim eval` of `agent` on builtin:routes (`split` "routes") or a fixture route file ("devtest", "testing")."""
    key = f"{split}-{agent}"
    args = ["w0sim", "eval", "--agent", agent, "--split", "builtin:routes"]
    if split in CARLA_FILES:
        args[-1] = f"carla:{relative(CARLA / 'routes' / CARLA_FILES[split])}"
        args += ["--town-dir", relative(CARLA / "maps")]
        ctx.data["CARLA fixtures sha256"] = tree_hash(CARLA / "maps", CARLA / "routes")[:16]
    run = ctx.run(key, args + ["--workers", str(ctx.workers), "--out", f"OUT/{key}"])
    note_checkpoint(ctx, run.out)
    families = {row["ref"]: row.get("family") for row in read_rows(run.out / "rows.jsonl")}
    return ClosedLoop(json.loads((run.out / "results.json").read_text()), families, run.seconds, run.out)


def tree_hash(*folders: Path) -> str:
    """sha256 over the names and bytes of every file under `folders`, in sorted order."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def global_scores(run: ClosedLoop) -> dict[str, float]:
    """Driving score, route completion, infraction penalty and route count of a closed-loop run."""
    means = run.results["_checkpoint"]["global_record"]["scores_mean"]
    return {"ds": means["score_composed"], "rc": means["score_route"], "ip": means["score_penalty"],
            "routes": len(run.records)}


def mean_record_scores(records: list[dict]) -> dict[str, float]:
    """Mean driving score, route completion and penalty of some route records."""
    def mean(name: str) -> float:
        return sum(r["scores"][name] for r in records) / len(records)
    return {"ds": mean("score_composed"), "rc": mean("score_route"), "ip": mean("score_penalty"), "routes": len(records)}


def family_records(run: ClosedLoop) -> dict[str, list[dict]]:
    """The records of each family (town), in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for record in run.records:
        groups.setdefault(run.families.get(record["route_id"]) or "unknown", []).append(record)
    return groups


ROUTE_AGENTS = ("pdm_closed", "pdm_lane_following", "constant_velocity", "drivevla_w0")


def measure_routes_agents(ctx: Context) -> dict[str, float]:
    measured = {}
    for agent in ROUTE_AGENTS:
        measured |= {f"{agent}.{k}": v for k, v in global_scores(closed_loop(ctx, agent, "routes")).items()}
    return measured


def deviated(records: list[dict]) -> int:
    return sum(r["status"] == "Failed - Agent deviated from the route" for r in records)


def measure_routes_drivevla(ctx: Context) -> dict[str, float]:
    run = closed_loop(ctx, "drivevla_w0", "routes")
    families = {family: mean_record_scores(records)["ds"] for family, records in family_records(run).items()}
    return global_scores(run) | families | {"deviated": deviated(run.records), "seconds": run.seconds}


def infraction_counts(records: list[dict]) -> Counter:
    """How many infractions of each kind the records list."""
    counts: Counter = Counter()
    for record in records:
        counts.update({kind: len(events) for kind, events in record["infractions"].items()})
    return counts


def completed(records: list[dict]) -> int:
    return sum(r["status"] in ("Completed", "Perfect") for r in records)


CARLA_AGENTS = {"lf": "pdm_lane_following", "pc": "pdm_closed"}


def measure_carla_routes(ctx: Context) -> dict[str, float]:
    measured: dict[str, float] = {}
    runs = {(short, split): closed_loop(ctx, agent, split) for short, agent in CARLA_AGENTS.items() for split in CARLA_FILES}
    for (short, split), run in runs.items():
        measured |= {f"{short}-{split}.{k}": v for k, v in global_scores(run).items()}
        measured[f"{short}-{split}.completed"] = completed(run.records)
    for short in CARLA_AGENTS:
        records = runs[short, "devtest"].records + runs[short, "testing"].records
        towns = family_records(runs[short, "testing"])
        measured |= {f"{short}_{town.lower()}": mean_record_scores(towns[town])["ds"] for town in towns}
        counts = infraction_counts(records)
        measured |= {f"{short}_min_speed": counts["min_speed_infractions"], f"{short}_outside": counts["outside_route_lanes"],
                     f"{short}_collisions": counts["collisions_vehicle"], f"{short}_red": counts["red_light"],
                     f"{short}_blocked": sum(r["status"] == "Failed - Agent got blocked" for r in records),
                     f"{short}_routes": len(records)}
    lengths = [r["meta"]["route_length"] / 1000.0 for r in runs["lf", "devtest"].records + runs["lf", "testing"].records]
    measured |= {"min_km": min(lengths), "max_km": max(lengths), "total_km": sum(lengths),
                 "lf_minutes": (runs["lf", "devtest"].seconds + runs["lf", "testing"].seconds) / 60.0}
    timed_out = [r for r in runs["lf", "testing"].records if r["status"] == "Failed - Agent timed out"]
    if timed_out:
        measured["lf_timeout_pct"] = timed_out[0]["scores"]["score_route"]
    return measured


def measure_carla_file(agent: str, split: str) -> Callable[[Context], dict]:
    """The figures of docs/results/carla_routes/AGENT_routes_SPLIT.md: the run's summary, per town and per route."""
    def measure(ctx: Context) -> dict[str, float | str]:
        run = closed_loop(ctx, agent, split)
        measured: dict[str, float | str] = dict(global_scores(run))
        for town, records in family_records(run).items():
            measured |= {f"{town}.{k}": v for k, v in mean_record_scores(records).items()}
        for record in run.records:
            scores = record["scores"]
            measured |= {f"{record['route_id']}.status": record["status"], f"{record['route_id']}.ds": scores["score_composed"],
                         f"{record['route_id']}.rc": scores["score_route"], f"{record['route_id']}.ip": scores["score_penalty"]}
        return measured
    return measure


def carla_file_artifacts(agent: str, split: str) -> Callable[[Context], dict[str, Path]]:
    """The results file beside the table, rewritten with it."""
    return lambda ctx: {f"docs/results/carla_routes/{agent}_routes_{split}.json": ctx.out / f"{split}-{agent}" / "results.json"}


def measure_town_load(ctx: Context) -> dict[str, float]:
    run = ctx.run("town_load", ["python", "benchmarks/town_load.py"], env={"W0SIM_SHARED": relative(SHARED)})
    towns = json.loads(run.stdout)
    measured = {}
    for town, figures in towns.items():
        measured |= {f"{town}.seconds": figures["seconds"], f"{town}.lanes": figures["lanes"],
                     f"{town}.connectors": figures["connectors"], f"{town}.lights": figures["lights"],
                     f"{town}.stop_signs": figures["stop_signs"], f"{town}.lane_km": figures["lane_km"]}
    return measured


BASELINE_AGENTS = ("pdm_closed", "pdm_lane_following", "constant_velocity", "human")


def measure_baseline_scores(ctx: Context) -> dict[str, float]:
    measured, seconds = {}, []
    for version in ("v1.1", "v2.2"):
        args = ["python", "benchmarks/baseline_scores.py", "--workers", str(ctx.workers)]
        run = ctx.run(f"baseline-{version}", args + (["--version", version] if version != "v1.1" else []))
        seconds.append(run.seconds)
        for family, scores in json.loads(run.stdout.strip().splitlines()[-1]).items():
            measured |= {f"{family}.{agent}.{version}": scores[agent] for agent in BASELINE_AGENTS}
    return measured | {"seconds": sum(seconds) / len(seconds)}


def collected_data(ctx: Context) -> Path:
    """The documented `w0sim collect --scenes 4000`, into the temporary folder."""
    run = ctx.run("collect", ["w0sim", "collect", "--split", "builtin:navtrain", "--scenes", "4000",
                              "--workers", str(ctx.workers), "--out", "OUT/navtrain-4000"])
    manifest = json.loads((run.out / "manifest.json").read_text())
    ctx.data["expert data content hash"] = manifest["content_hash"][:16]
    return run.out


def measure_collect_hash(ctx: Context) -> dict[str, str]:
    folder = collected_data(ctx)
    return {"hash": json.loads((folder / "manifest.json").read_text())["content_hash"]}


def measure_checkpoint(ctx: Context) -> dict[str, float | str]:
    from transformers.utils import logging as transformers_logging

    from policies.model import DriveVLAW0ForDriving

    transformers_logging.disable_progress_bar()
    model = DriveVLAW0ForDriving.from_pretrained(str(CHECKPOINT))
    sha = hashlib.sha256((CHECKPOINT / "model.safetensors").read_bytes()).hexdigest()
    ctx.used.append(f"sha256sum {relative(CHECKPOINT / 'model.safetensors')}; DriveVLAW0ForDriving.from_pretrained")
    return {"params": model.num_parameters() / 1e6, "sha": sha}


def measure_world_model(ctx: Context) -> dict[str, float]:
    from w0sim.runner import checkpoint_sha256

    run = ctx.run("world-model", ["python", "benchmarks/world_model_quality.py"])
    ctx.data["checkpoint sha256"] = checkpoint_sha256(CHECKPOINT)[:16]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    accuracy = ("code_accuracy", "code_accuracy_teacher_forced", "code_accuracy_copy",
                "code_accuracy_teacher_forced_other_scene")
    return ({f"{key}.mae": value for key, value in result.items() if "_mae" in key}
            | {key: 100 * result[key] for key in accuracy})


def scaling_from_csv(path: Path) -> dict[str, float]:
    """Per size: both variants' mean PDMS over the seeds, its standard error (NaN for one seed) and the difference of
    the means, from an experiment's scaling.csv (`training.scaling.summarize_seeds`)."""
    from training.scaling import summarize_seeds

    with path.open() as handle:
        rows = [{"size": int(r["size"]), "variant": r["variant"], "pdms": float(r["pdms"])} for r in csv.DictReader(handle)]
    summary = {(r["size"], r["variant"]): r for r in summarize_seeds(rows)}
    measured = {}
    for size in sorted({size for size, _ in summary}):
        action, world = summary[size, "action_only"], summary[size, "world_model"]
        measured |= {f"{size}.action_only": action["pdms_mean"], f"{size}.world_model": world["pdms_mean"],
                     f"{size}.action_only_se": action["pdms_stderr"], f"{size}.world_model_se": world["pdms_stderr"],
                     f"{size}.difference": world["pdms_mean"] - action["pdms_mean"],
                     f"ao_{size}": action["pdms_mean"], f"wm_{size}": world["pdms_mean"]}
    return measured


def measure_scaling_csv(ctx: Context) -> dict[str, float]:
    path = ROOT / "docs/results/scaling_tiny.csv"
    ctx.used.append(f"read {relative(path)}")
    ctx.data["scaling_tiny.csv sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return scaling_from_csv(path)


def measure_scaling(ctx: Context) -> dict[str, float]:
    data = collected_data(ctx)
    run = ctx.run("scaling", ["w0sim", "experiment", "scaling", "--sizes", "500,2000,8000", "--config", "tiny",
                              "--data", "OUT/" + data.name, "--workers", str(ctx.workers), "--seeds", "0,1",
                              "--epochs", "4,2", "--out", "OUT/scaling"],
                  env={"OMP_NUM_THREADS": "2"})
    return scaling_from_csv(run.out / "scaling.csv")


def measure_training(ctx: Context) -> dict[str, float]:
    data = collected_data(ctx)
    run = ctx.run("train", ["w0sim", "train", "--config", "tiny", "--all", "--data", "OUT/" + data.name,
                            "--out", "OUT/drivevla-w0-tiny", "--seed", "0", "--backbone-lr-scale", "0"],
                  env={"OMP_NUM_THREADS": "2"})
    return {"seconds": run.seconds, "minutes": run.seconds / 60.0}
