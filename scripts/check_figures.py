"""Re-measure every published figure of README.md, the model card and docs/results, and fail when one has moved.

    .venv/bin/python scripts/check_figures.py                 # every figure but the slow ones; exit 1 on a difference
    .venv/bin/python scripts/check_figures.py --list          # the figures, their cost, and what is not checked and why
    .venv/bin/python scripts/check_figures.py --only main-job navtest-agents
    .venv/bin/python scripts/check_figures.py --write         # rewrite moved figures (old value kept) and provenance

Each published figure sits between `<!-- figure: NAME -->` and `<!-- /figure -->` in its file. The script reads the
numbers there, re-measures them with the project's own CLI and benchmarks into a temporary folder (never into the
repository), and prints one row per value: figure, where, published, measured, tolerance, ok. A score compares to its
printed precision (0.779 holds for a measured value within 0.0005 of it); a wall-clock time within a stated ratio;
a hash or a status must be the same. `--write` puts each moved value's new figure in place with the old one beside
it, "0.930 (was 0.912)", and a provenance line (commit, commands, data hashes, date) at the end of each block.
Run it before each commit that changes a published figure. Figures that take hours (the data-scaling experiment,
training the shipped checkpoint) are measured only with `--slow` (or when named with `--only`).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import fnmatch
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("W0SIM_SHARED", ROOT.parent / "shared"))
CARLA = SHARED / "fixtures" / "carla"
CARD = "checkpoints/drivevla-w0-tiny/README.md"
RESULTS = "docs/results/README.md"
CHECKPOINT = ROOT / "checkpoints" / "drivevla-w0-tiny"

NUM = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
NUMBER = re.compile(rf"(?<![\w.]){NUM}")
WAS = re.compile(r"\s*\(was [^)]*\)")
END = "<!-- /figure -->"
PROVENANCE = re.compile(r"\n*<sub>Provenance: .*?</sub>\n?", re.S)


class FigureError(Exception):
    """A block or a value that is not where its figure says it is."""


class MeasureError(Exception):
    """A measurement that could not be made (a command failed)."""


# ---------------------------------------------------------------- where published figures are, and how they read


@dataclass(frozen=True)
class Published:
    """One value as printed: its key, its text, and where the text is in the file."""

    key: str
    text: str
    start: int
    end: int


def value(name: str) -> str:
    """A regex group for a number named `name` in a prose pattern, with the "(was X)" a rewrite may have put after it."""
    return rf"(?P<{name}>{NUM})(?:\s*\(was [^)]*\))?"


def text_value(name: str, pattern: str) -> str:
    """A regex group for a text value (a hash, a status) named `name` in a prose pattern."""
    return rf"(?P<{name}>{pattern})(?:\s*\(was [^)]*\))?"


@dataclass(frozen=True)
class Prose:
    """Values in running text: a regex whose named groups are the values' keys; a space matches any white space
    (line breaks included), so the pattern reads as the sentence does."""

    pattern: str

    def extract(self, body: str, offset: int) -> list[Published]:
        regex = re.compile(self.pattern.replace(" ", r"\s+"))
        found = list(regex.finditer(body))
        if len(found) != 1:
            raise FigureError(f"the text {self.pattern!r} is {'not found' if not found else 'found more than once'}")
        match = found[0]
        return [Published(key, match.group(key), offset + match.start(key), offset + match.end(key))
                for key in regex.groupindex]


@dataclass(frozen=True)
class Table:
    """Values of a markdown table: a row by its first cell (`rows`: cell text -> key; None: every row, keyed by its
    own first cell), a column by the start of its header (`columns`: header start -> {pick: key}). A pick is the
    index of the number in the cell (0 the first, -1 the last; "(was X)" left out) or "text" for the whole cell.
    `header`: the start of the first header cell, to choose among several tables in one block."""

    columns: dict[str, dict[int | str, str]]
    rows: dict[str, str] | None = None
    header: str | None = None

    def extract(self, body: str, offset: int) -> list[Published]:
        lines = self._lines(body, offset)
        header_cells = [cell for cell, _ in lines[0]]
        column_picks = self._columns_of(header_cells)
        values, seen = [], set()
        for cells in lines[2:]:
            label = strip_markup(cells[0][0])
            key = label if self.rows is None else self.rows.get(label)
            if key is None:
                continue
            seen.add(label)
            for index, picks in column_picks.items():
                for pick, suffix in picks.items():
                    values.append(cell_value(f"{key}.{suffix}", *cells[index], pick))
        missing = [] if self.rows is None else [label for label in self.rows if label not in seen]
        if missing:
            raise FigureError(f"table rows not found: {', '.join(missing)}")
        return values

    def _lines(self, body: str, offset: int) -> list[list[tuple[str, int]]]:
        tables, current = [], []
        position = 0
        for line in body.splitlines(keepends=True):
            if line.lstrip().startswith("|"):
                current.append(split_cells(line, offset + position))
            elif current:
                tables.append(current)
                current = []
            position += len(line)
        if current:
            tables.append(current)
        chosen = [t for t in tables if self.header is None or strip_markup(t[0][0][0]).startswith(self.header)]
        if not chosen:
            raise FigureError(f"no markdown table{'' if self.header is None else f' headed {self.header!r}'}")
        return chosen[0]

    def _columns_of(self, header_cells: list[str]) -> dict[int, dict[int | str, str]]:
        found = {}
        for prefix, picks in self.columns.items():
            indices = [i for i, cell in enumerate(header_cells) if strip_markup(cell).startswith(prefix)]
            if not indices:
                raise FigureError(f"no table column headed {prefix!r}")
            found[indices[0]] = picks
        return found


def strip_markup(cell: str) -> str:
    """A cell's text without bold, code marks and the padding."""
    return cell.replace("**", "").replace("`", "").strip()


def split_cells(line: str, offset: int) -> list[tuple[str, int]]:
    """A table line's cells, each with the file offset where its text starts."""
    cells, start = [], line.index("|") + 1
    for part in line.rstrip("\n").strip().strip("|").split("|"):
        cells.append((part, offset + start))
        start += len(part) + 1
    return cells


def cell_value(key: str, cell: str, cell_offset: int, pick: int | str) -> Published:
    """The value `pick` of a cell (see `Table`)."""
    annotations = [m.span() for m in WAS.finditer(cell)]
    if pick == "text":
        text = WAS.sub("", cell).strip()
        start = cell.index(text) if text else 0
        return Published(key, text, cell_offset + start, cell_offset + start + len(text))
    numbers = [m for m in NUMBER.finditer(cell) if not any(a <= m.start() < b for a, b in annotations)]
    try:
        match = numbers[pick]
    except IndexError:
        raise FigureError(f"no number {pick} in the cell {cell.strip()!r} ({key})") from None
    return Published(key, match.group(), cell_offset + match.start(), cell_offset + match.end())


@dataclass(frozen=True)
class Place:
    """A block of a file holding a figure's values (`block`: the NAME of its `<!-- figure: NAME -->` marker).
    `provenance`: whether the block ends with the provenance line (not for a few words inside a sentence)."""

    file: str
    block: str
    readers: tuple[Prose | Table, ...]
    provenance: bool = True


def block_span(text: str, file: str, name: str) -> tuple[int, int]:
    """Start and end offsets of the body of block `name` in `text` (file `file`); FigureError when it is missing,
    repeated, unclosed or holds another block."""
    opening = f"<!-- figure: {name} -->"
    count = text.count(opening)
    if count != 1:
        raise FigureError(f"{file}: {'no' if count == 0 else f'{count}'} '{opening}' marker"
                          f"{'' if count == 0 else 's'} (figure {name})")
    start = text.index(opening) + len(opening)
    end = text.find(END, start)
    if end < 0:
        raise FigureError(f"{file}: '{opening}' has no closing '{END}' (figure {name})")
    if "<!-- figure:" in text[start:end]:
        raise FigureError(f"{file}: '{opening}' is not closed before the next figure's marker (figure {name})")
    return start, end


def read_place(text: str, place: Place) -> list[Published]:
    """Every value of `place` in `text`, the file's content."""
    start, end = block_span(text, place.file, place.block)
    body = PROVENANCE.sub(lambda m: " " * len(m.group()), text[start:end])  # its commands and hashes are no figures
    values = []
    for reader in place.readers:
        try:
            values += reader.extract(body, start)
        except FigureError as error:
            raise FigureError(f"{place.file}: block '{place.block}': {error}") from None
    return values


# ---------------------------------------------------------------- tolerances


def decimals_of(text: str) -> int:
    """How many digits a printed number has after its decimal point."""
    return len(text.split(".")[1]) if "." in text else 0


def parse_number(text: str) -> float:
    return float(text.replace(",", ""))


@dataclass(frozen=True)
class Printed:
    """Equal to the printed precision: within half a unit of the last printed digit."""

    def ok(self, published: str, measured: float | str) -> bool:
        half = 0.5 * 10.0 ** -decimals_of(published)
        return abs(parse_number(published) - float(measured)) <= half + 1e-9

    def describe(self, published: str) -> str:
        return f"±{0.5 * 10.0 ** -decimals_of(published):.{decimals_of(published) + 1}f}"


@dataclass(frozen=True)
class Ratio:
    """A wall-clock time: within a factor of the published one (timings on a shared machine vary)."""

    factor: float

    def ok(self, published: str, measured: float | str) -> bool:
        published_value = parse_number(published)
        return published_value / self.factor <= float(measured) <= published_value * self.factor

    def describe(self, published: str) -> str:
        return f"x{self.factor:g} (time)"


@dataclass(frozen=True)
class Absolute:
    """Within a stated distance (a figure of a training run, which a re-run does not reproduce exactly)."""

    distance: float

    def ok(self, published: str, measured: float | str) -> bool:
        return abs(parse_number(published) - float(measured)) <= self.distance + 1e-9

    def describe(self, published: str) -> str:
        return f"±{self.distance:g}"


@dataclass(frozen=True)
class Same:
    """The same text (a status, a count read as text)."""

    def ok(self, published: str, measured: float | str) -> bool:
        return published == str(measured)

    def describe(self, published: str) -> str:
        return "same"


@dataclass(frozen=True)
class Prefix:
    """A hash printed by its first digits: the measured hash starts with them."""

    def ok(self, published: str, measured: float | str) -> bool:
        return bool(published) and str(measured).startswith(published)

    def describe(self, published: str) -> str:
        return "same prefix"


def format_like(published: str, measured: float | str, tolerance) -> str:
    """`measured` printed as `published` is: as many decimals, thousands separators if it has them."""
    if isinstance(tolerance, Prefix):
        return str(measured)[: len(published)]
    if isinstance(measured, str):
        return measured
    decimals = decimals_of(published)
    text = f"{measured:,.{decimals}f}" if "," in published else f"{measured:.{decimals}f}"
    return f"+{text}" if published[:1] in "+-" and measured >= 0 else text  # a signed column stays signed


# ---------------------------------------------------------------- measuring


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
    run = ctx.run("scaling", ["w0sim", "experiment", "scaling", "--sizes", "500,2000", "--config", "tiny",
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


# ---------------------------------------------------------------- the figures

# The data-scaling experiment's table (mean ± standard error over the seeds) and the README's sentence about it.
SCALING_TABLE = Table({"action-only": {0: "action_only", 1: "action_only_se"},
                       "world-model": {0: "world_model", 1: "world_model_se"}, "difference": {0: "difference"}},
                      {"500": "500", "2,000": "2000"})
SCALING_PROSE = Prose(rf"scored {value('wm_500')} vs {value('ao_500')} PDMS \(action-only\) at 500 samples and "
                      rf"{value('wm_2000')} vs {value('ao_2000')} at 2,000")


@dataclass(frozen=True)
class Figure:
    """A set of published values, where they are, how to measure them, and at what cost. `slow`: why it is not
    measured by default. `tolerances`: key pattern (fnmatch) -> tolerance; numbers otherwise compare to their
    printed precision, texts as the same text. `artifacts`: files rewritten with the figure under --write."""

    name: str
    cost: str
    places: tuple[Place, ...]
    measure: Callable[[Context], dict]
    tolerances: dict = field(default_factory=dict)
    slow: str | None = None
    needs_carla: bool = False
    artifacts: Callable[[Context], dict[str, Path]] | None = None

    def tolerance(self, key: str, published: str):
        for pattern, tolerance in self.tolerances.items():
            if fnmatch.fnmatchcase(key, pattern):
                return tolerance
        return Printed() if NUMBER.fullmatch(published) else Same()


NAVTEST_COLUMN_HEADERS = {"NC": {0: "nc"}, "DAC": {0: "dac"}, "EP": {0: "ep"}, "TTC": {0: "ttc"}, "C": {0: "c"},
                          "DDC": {0: "ddc"}, "PDMS": {0: "pdms"}}
NAVTEST_ROWS = {"constant velocity": "constant_velocity", "human (log replay)": "human",
                "PDM-Closed, NAVSIM's (privileged)": "pdm_closed", "lane-following PDM (privileged)": "pdm_lane_following"}
FAMILY_ROWS = {"all": "all", **{family: family for family in FAMILIES}}
BASELINE_FAMILIES = {"straight": "straight", "curve": "curve", "intersection": "intersection",
                     "T-junction": "t_junction", "merge": "merge"}
BASELINE_COLUMNS = {"PDM-Closed, NAVSIM's": "pdm_closed", "lane-following PDM": "pdm_lane_following",
                    "constant velocity": "constant_velocity", "human": "human"}
ROUTE_TABLE = (Prose(rf"driving score {value('ds')}, route completion {value('rc')}, infraction penalty {value('ip')} over "
                     rf"{value('routes')} routes"),
               Table({"routes": {0: "routes"}, "driving score": {0: "ds"}, "route completion": {0: "rc"},
                      "penalty": {0: "ip"}}, header="family"),
               Table({"status": {"text": "status"}, "driving score": {0: "ds"}, "route completion": {0: "rc"},
                      "penalty": {0: "ip"}}, header="route"))
TIME = Ratio(3.0)
# The model card's world-model table (benchmarks/world_model_quality.py) and its code-space sentences.
WORLD_MODEL_FIGURES = (
    Table({"MAE": {0: "mae"}}, {"world model, greedy, the true plan": "wm_mae",
                                "world model, greedy, a stand-still plan": "wm_mae_standstill_plan",
                                "world model, each code from the true codes before it (teacher forced)":
                                    "wm_mae_teacher_forced",
                                "copy the current frame": "copy_mae",
                                "copy the current frame's codes (through the image tokenizer)": "copy_codes_mae",
                                "the true frame through the image tokenizer (the floor)": "reconstruction_mae"}),
    Prose(rf"greedy decoding gets {value('code_accuracy')} % of them right, teacher forcing "
          rf"{value('code_accuracy_teacher_forced')} % and copying the current frame's codes "
          rf"{value('code_accuracy_copy')} %"),
    Prose(rf"another scene's history frames in its context, teacher forcing still gets "
          rf"{value('code_accuracy_teacher_forced_other_scene')} %"))


def carla_file_figure(agent: str, split: str) -> Figure:
    return Figure(f"carla-{agent}-{split}", "~3-6 min (the same runs as carla-routes)",
                  (Place(f"docs/results/carla_routes/{agent}_routes_{split}.md", "routes", ROUTE_TABLE),),
                  measure_carla_file(agent, split), needs_carla=True, artifacts=carla_file_artifacts(agent, split))


FIGURES = (
    Figure("main-job", "~1 min (DriveVLA-W0 on 50 navtest tokens)",
           (Place("README.md", "main-job", (Table({"tokens": {0: "tokens"}, "PDMS": {0: "pdms"}}, FAMILY_ROWS),)),),
           measure_main_job),
    Figure("navtest-agents", "~8 min (5 agents on 500 navtest tokens; DriveVLA-W0 is most of it)",
           (Place("README.md", "navtest-agents",
                  (Table(NAVTEST_COLUMN_HEADERS, {"DriveVLA-W0 tiny (shipped)": "drivevla_w0", **NAVTEST_ROWS}),)),
            Place(CARD, "navtest-agents",
                  (Table(NAVTEST_COLUMN_HEADERS, {"DriveVLA-W0 tiny (this)": "drivevla_w0",
                                                  **{k: v for k, v in NAVTEST_ROWS.items() if v != "human"}}),))),
           measure_navtest_agents),
    Figure("navtest-families", "~5 min (DriveVLA-W0 on 500 navtest tokens; shared with navtest-agents)",
           (Place(CARD, "navtest-families",
                  (Prose(rf"Per family: straight {value('straight')}, curve {value('curve')}, intersection "
                         rf"{value('intersection')}, T-junction {value('t_junction')}, merge {value('merge')}"),)),),
           measure_navtest_families),
    Figure("navtest-100", "~1 min (3 agents on 100 navtest tokens; shared with navtest-agents)",
           (Place(RESULTS, "navtest-100",
                  (Prose(rf"constant velocity scores {value('constant_velocity')}"),
                   Prose(rf"NAVSIM's PDM-Closed {value('pdm_closed')}"),
                   Prose(rf"the lane-following planner {value('pdm_lane_following')}"))),),
           measure_navtest_100),
    Figure("routes-agents", "~3 min (4 agents on the 50 builtin:routes routes)",
           (Place("README.md", "routes-agents",
                  (Table({"driving score": {0: "ds"}, "route completion": {0: "rc"}, "infraction penalty": {0: "ip"}},
                         {"PDM-Closed, NAVSIM's": "pdm_closed", "lane-following PDM": "pdm_lane_following",
                          "constant velocity": "constant_velocity",
                          "DriveVLA-W0 tiny, from its own camera frames": "drivevla_w0"}),)),),
           measure_routes_agents),
    Figure("routes-drivevla", "~1 min (DriveVLA-W0 on builtin:routes; shared with routes-agents)",
           (Place("README.md", "routes-drivevla",
                  (Prose(rf"scores {value('straight')} on straight roads and {value('intersection')} at intersections, "
                         rf"in {value('seconds')} s on 2 cores"),)),
            Place(CARD, "routes-drivevla",
                  (Prose(rf"Driving score {value('ds')}, route completion {value('rc')}, infraction penalty {value('ip')}"),
                   Prose(rf"Per family: straight {value('straight')}, curve {value('curve')}, intersection "
                         rf"{value('intersection')}, T-junction {value('t_junction')}, merge {value('merge')}; "
                         rf"{value('deviated')} of the {value('routes')} routes end early")))),
           measure_routes_drivevla, tolerances={"seconds": TIME}),
    Figure("carla-routes", "~10-15 min (2 planners on the 30 fixture CARLA routes)",
           (Place("README.md", "carla-routes",
                  (Table({"routes": {-1: "routes"}, "completed": {-1: "completed"}, "driving score": {-1: "ds"},
                          "route completion": {-1: "rc"}, "infraction penalty": {-1: "ip"}},
                         {"lane-following PDM, routes_devtest.xml (Town01, 03, 04, 06)": "lf-devtest",
                          "lane-following PDM, routes_testing.xml (Town02, 04, 05)": "lf-testing",
                          "NAVSIM's PDM-Closed, routes_devtest.xml": "pc-devtest",
                          "NAVSIM's PDM-Closed, routes_testing.xml": "pc-testing"}),
                   Prose(rf"now {value('min_km')} to {value('max_km')} km long"),
                   Prose(rf"; {value('total_km')} km in all"),
                   Prose(rf"scores Town02 {value('lf_town02')}, Town04 {value('lf_town04')}, Town05 {value('lf_town05')} "
                         "on routes_testing.xml"),
                   Prose(rf"timed out at {value('lf_timeout_pct')} %"),
                   Prose(rf"Over all {value('lf_routes')} routes its infractions were {value('lf_min_speed')} min-speed, "
                         rf"{value('lf_outside')} outside route lanes, {value('lf_collisions')} vehicle collisions and "
                         rf"{value('lf_red')} red lights"),
                   Prose(rf"took {value('lf_minutes')} minutes on 2 cores"),
                   Prose(rf"gets blocked on {value('pc_blocked')} of the {value('pc_routes')} routes \(Town02 "
                         rf"{value('pc_town02')}, Town04 {value('pc_town04')}, Town05 {value('pc_town05')};"),
                   Prose(rf"\({value('pc_red')} red lights run\)"))),),
           measure_carla_routes, tolerances={"lf_minutes": TIME}, needs_carla=True),
    *(carla_file_figure(agent, split) for agent in ("pdm_closed", "pdm_lane_following") for split in CARLA_FILES),
    Figure("town-load", "~20 s (benchmarks/town_load.py)",
           (Place("README.md", "town-load",
                  (Table({"load": {0: "seconds"}, "lanes": {0: "lanes"}, "of which connectors": {0: "connectors"},
                          "traffic lights": {0: "lights"}, "stop signs": {0: "stop_signs"}, "lane km": {0: "lane_km"}},
                         {f"Town{n}": f"Town{n}" for n in ("01", "02", "03", "04", "05", "06", "07", "10HD")}),)),),
           measure_town_load, tolerances={"*.seconds": TIME}, needs_carla=True),
    Figure("baseline-scores", "~40 s (benchmarks/baseline_scores.py, v1.1 and v2.2)",
           (Place("README.md", "baseline-scores",
                  (Prose(rf"`--version v2.2`; {value('seconds')} s on 2 cores"),
                   Table({header: {0: f"{agent}.v1.1", 1: f"{agent}.v2.2"} for header, agent in BASELINE_COLUMNS.items()},
                         BASELINE_FAMILIES))),),
           measure_baseline_scores, tolerances={"seconds": TIME}),
    Figure("checkpoint", "~5 s (loads the shipped checkpoint)",
           (Place(CARD, "checkpoint-size", (Prose(rf"{value('params')}M parameters"),), provenance=False),
            Place(CARD, "checkpoint-file", (Prose(rf"sha256 begins `{text_value('sha', '[0-9a-f]+')}`"),),
                  provenance=False)),
           measure_checkpoint, tolerances={"sha": Prefix()}),
    Figure("world-model", "~1 min (benchmarks/world_model_quality.py on the shipped checkpoint)",
           (Place(CARD, "world-model", WORLD_MODEL_FIGURES),), measure_world_model),
    Figure("collect-hash", "~4-7 min (w0sim collect --scenes 4000, all workers)",
           (Place(CARD, "collect-hash", (Prose(rf"content hash `{text_value('hash', '[0-9a-f]+')}…`"),)),
            Place(RESULTS, "collect-hash", (Prose(rf"content hash `{text_value('hash', '[0-9a-f]+')}…`"),))),
           measure_collect_hash, tolerances={"hash": Prefix()}),
    Figure("scaling-csv", "instant (reads docs/results/scaling_tiny.csv)",
           (Place(RESULTS, "scaling", (SCALING_TABLE,), provenance=False),
            Place("README.md", "scaling", (SCALING_PROSE,), provenance=False),
            Place(CARD, "scaling", (SCALING_PROSE,), provenance=False)),
           measure_scaling_csv),
    Figure("scaling", "~1.7 h (collect, the image tokenizer, then 8 trainings, 4 and 2 epochs at 500 and 2,000 samples, "
           "2 seeds, and their evaluations)",
           (Place(RESULTS, "scaling", (SCALING_TABLE,)), Place("README.md", "scaling", (SCALING_PROSE,)),
            Place(CARD, "scaling", (SCALING_PROSE,))),
           measure_scaling, tolerances={"*": Absolute(0.05)},
           slow="close to two hours of training; a re-run is compared within ±0.05 PDMS, not to the printed digit",
           artifacts=lambda ctx: {"docs/results/scaling_tiny.csv": ctx.out / "scaling" / "scaling.csv",
                                  "docs/results/scaling_tiny.png": ctx.out / "scaling" / "scaling.png"}),
    Figure("training", "~1 h (collect, then stages 0-2 of the tiny checkpoint on two threads)",
           (Place(CARD, "training-time", (Prose(rf"{value('seconds')} s \({value('minutes')} min\)"),), provenance=False),),
           measure_training, tolerances={"*": TIME},
           slow="an hour of training; only its wall time is published, compared within x3"),
)

NOT_CHECKED = (
    ("README.md, Benchmarks", "throughput and latency (benchmarks/sim_throughput.py, scoring_throughput.py, "
     "policy_latency.py, tracker_latency.py, route_densify.py; eval tokens/s)",
     "wall-clock figures that vary by up to 2x between runs of the shared 2-core machine; re-run the benchmarks by hand"),
    ("README.md, Reference suite; CARLA's route planner; the Leaderboard's statistics code",
     "agreement with NAVSIM's and CARLA's own code, and their timings",
     "need the reference venvs (tests/reference, pytest -m navsim / carla_reference), which are tests with their own verdict"),
    ("README.md, NAVSIM logs and nuPlan maps", "export round trip to 1.1e-12 / 2.8e-9",
     "a bound checked token by token by the reference suite's export, not a published score"),
    ("README.md main job; model card and docs/results commands", "'about a minute', '~7 min', '3 min' on 2 cores",
     "rough wall-clock guidance, not measurements"),
    ("docs/results/scaling_tiny.csv", "train_minutes", "wall clock of the first runs, beside another process"),
    ("README.md, model card, docs/results", "figures marked before / was / first run, in brackets",
     "history: what earlier code measured"),
)


# ---------------------------------------------------------------- comparing, printing, rewriting


@dataclass
class Row:
    """One value compared: figure, where, published, measured, tolerance, verdict."""

    figure: str
    where: str
    key: str
    published: str
    measured: str
    tolerance: str
    ok: bool | None
    note: str = ""


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def shown_measured(published: str, measured: float | str, tolerance) -> str:
    """The measured value for the table: as printed, a score with six significant digits so that a near miss shows."""
    if isinstance(measured, str) or isinstance(tolerance, Prefix):
        return format_like(published, measured, tolerance)
    if not isinstance(tolerance, Ratio) and decimals_of(published) > 0:
        return f"{measured:.6g}"
    return format_like(published, measured, tolerance)


def compare(figure: Figure, place: Place, text: str, values: list[Published], measured: dict) -> list[Row]:
    """A row per published value of `place`, judged against `measured`."""
    rows = []
    for value_ in values:
        where = f"{place.file}:{line_of(text, value_.start)}"
        tolerance = figure.tolerance(value_.key, value_.text)
        if value_.key not in measured:
            rows.append(Row(figure.name, where, value_.key, value_.text, "-", tolerance.describe(value_.text), False,
                            "not measured"))
            continue
        got = measured[value_.key]
        ok = tolerance.ok(value_.text, got)
        rows.append(Row(figure.name, where, value_.key, value_.text, shown_measured(value_.text, got, tolerance),
                        tolerance.describe(value_.text), ok))
    return rows


def print_table(rows: list[Row]) -> None:
    header = ("figure", "where", "value", "published", "measured", "tolerance", "ok")
    cells = [header] + [(r.figure, r.where, r.key, r.published, r.measured, r.tolerance, verdict(r)) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())


def verdict(row: Row) -> str:
    if row.ok is None:
        return f"skip: {row.note}"
    return ("ok" if row.ok else "DIFFERS") + (f" ({row.note})" if row.note else "")


def moved(value_: Published, measured: dict, figure: Figure) -> bool:
    return value_.key in measured and not figure.tolerance(value_.key, value_.text).ok(value_.text, measured[value_.key])


def rewrite(text: str, values: list[Published], measured: dict, figure: Figure) -> str:
    """`text` with each value beyond its tolerance replaced by the measured one, the old one beside it. When one time
    of a block has moved, all its times are rewritten that printed differently (one measurement, not a mix of two)."""
    times_moved = any(isinstance(figure.tolerance(v.key, v.text), Ratio) and moved(v, measured, figure) for v in values)
    for value_ in sorted(values, key=lambda v: v.start, reverse=True):
        tolerance = figure.tolerance(value_.key, value_.text)
        refresh = times_moved and isinstance(tolerance, Ratio) and value_.key in measured
        if not moved(value_, measured, figure) and not (refresh and format_like(value_.text, measured[value_.key],
                                                                                  tolerance) != value_.text):
            continue
        text = replace_value(text, value_, format_like(value_.text, measured[value_.key], tolerance))
    return text


def replace_value(text: str, value_: Published, new: str) -> str:
    """`text` with `value_` replaced by `new` and the old value beside it, "new (was old)" (a value inside a code
    span: "`new…` (was `old…`)"), instead of any "(was ...)" already there."""
    start, end = value_.start, value_.end
    line_start = text.rfind("\n", 0, start) + 1
    close = text.find("`", end) if text.count("`", line_start, start) % 2 else -1
    if close < 0:
        annotation = WAS.match(text, end)
        return text[:start] + f"{new} (was {value_.text})" + text[annotation.end() if annotation else end:]
    rest = text[end:close]  # what the code span holds after the value, e.g. "…"
    annotation = WAS.match(text, close + 1)
    return (text[:start] + f"{new}{rest}` (was `{value_.text}{rest}`)"
            + text[annotation.end() if annotation else close + 1:])


def with_provenance(text: str, place: Place, line: str) -> str:
    """`text` with the provenance line of `place`'s block replaced by `line` (added at the block's end if absent)."""
    start, end = block_span(text, place.file, place.block)
    body = PROVENANCE.sub("\n", text[start:end]).rstrip("\n")
    return text[:start] + body + f"\n\n<sub>Provenance: {line}</sub>\n" + text[end:]


def commit_description() -> str:
    """The commit measured, and whether code outside tests and docs differed from it."""
    commit = git("rev-parse", "--short=7", "HEAD")
    changed = git("diff", "--name-only", "HEAD").splitlines()
    code = [p for p in changed if not p.endswith(".md") and not p.startswith(("tests/", "docs/"))]
    return f"`{commit}`" + (f" (plus uncommitted changes to {', '.join(code)})" if code else "")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def provenance_line(figure: Figure, ctx: Context, commit: str) -> str:
    commands = "; ".join(f"`{c}`" for c in dict.fromkeys(ctx.used))
    data = "; ".join(f"{k} `{v}…`" for k, v in ctx.data.items())
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = " (OUT: a temporary folder)" if "OUT/" in commands else ""
    return (f"measured {date} at commit {commit} by {commands}{out}" + (f"; {data}" if data else "")
            + f"; check: `.venv/bin/python scripts/check_figures.py --only {figure.name}`")


# ---------------------------------------------------------------- the command


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these figures only (a slow one included when named)")
    parser.add_argument("--list", action="store_true", help="list the figures with their cost, and what is not checked")
    parser.add_argument("--write", action="store_true",
                        help="rewrite moved values (old beside new) and each measured block's provenance line")
    parser.add_argument("--slow", action="store_true", help="also the figures that take hours")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the runs (default: all cores)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    return parser.parse_args(argv)


def select(args: argparse.Namespace) -> list[Figure]:
    names = {figure.name for figure in FIGURES}
    unknown = [name for name in args.only or () if name not in names]
    if unknown:
        raise FigureError(f"no figure named {', '.join(unknown)} (--list lists them)")
    if args.only:
        return [figure for figure in FIGURES if figure.name in args.only]
    return [figure for figure in FIGURES if args.slow or figure.slow is None]


def print_list() -> None:
    for figure in FIGURES:
        where = ", ".join(dict.fromkeys(place.file for place in figure.places))
        slow = f"  [not by default: {figure.slow}]" if figure.slow else ""
        carla = "  [needs the CARLA fixtures]" if figure.needs_carla else ""
        print(f"{figure.name:32s} {figure.cost}; in {where}{slow}{carla}")
    print("\nNot checked:")
    for where, what, why in NOT_CHECKED:
        print(f"- {where}: {what}: {why}")


def read_published(figures: list[Figure]) -> None:
    """Read every selected figure's published values before anything is measured (FigureError: one is not there)."""
    for figure in figures:
        for place in figure.places:
            read_place((ROOT / place.file).read_text(), place)


def skip_reason(figure: Figure) -> str | None:
    if figure.needs_carla and not (CARLA / "maps").is_dir():
        return f"no CARLA fixtures at {CARLA} (set W0SIM_SHARED)"
    return None


def check(figure: Figure, ctx: Context) -> tuple[list[Row], dict | None]:
    """Measure `figure` and compare; the measured values (None when skipped or failed) for --write."""
    reason = skip_reason(figure)
    if reason:
        return [Row(figure.name, place.file, "*", "", "", "", None, reason) for place in figure.places], None
    print(f"measuring {figure.name} ({figure.cost})", file=sys.stderr, flush=True)
    ctx.begin()
    try:
        measured = figure.measure(ctx)
    except Exception as error:  # one figure's failure is reported in its rows; the others are still measured
        reason = str(error) if isinstance(error, MeasureError) else f"{type(error).__name__}: {error}"
        return [Row(figure.name, place.file, "*", "", "", "", False, reason) for place in figure.places], None
    rows = []
    for place in figure.places:
        text = (ROOT / place.file).read_text()  # read again: --write may have moved the lines since
        rows += compare(figure, place, text, read_place(text, place), measured)
    return rows, measured


def write_figure(figure: Figure, ctx: Context, measured: dict, commit: str) -> list[str]:
    """Rewrite `figure`'s places (and artifacts when a value moved); the files changed."""
    changed, moved = [], False
    line = provenance_line(figure, ctx, commit)
    for place in figure.places:
        path = ROOT / place.file
        text = path.read_text()
        new = rewrite(text, read_place(text, place), measured, figure)
        moved = moved or new != text
        if place.provenance:
            new = with_provenance(new, place, line)
        if new != text:
            path.write_text(new)
            changed.append(place.file)
    if moved and figure.artifacts:
        for destination, source in figure.artifacts(ctx).items():
            shutil.copyfile(source, ROOT / destination)
            changed.append(destination)
    return changed


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.list:
        print_list()
        return 0
    try:
        figures = select(args)
        read_published(figures)
    except FigureError as error:
        print(f"check_figures: {error}", file=sys.stderr)
        return 2
    out = Path(tempfile.mkdtemp(prefix="check_figures-"))
    ctx, commit, rows, started = Context(out, args.workers), commit_description(), [], time.perf_counter()
    try:
        for figure in figures:
            ctx_rows, measured = check(figure, ctx)
            rows += ctx_rows
            if args.write and measured is not None:
                changed = write_figure(figure, ctx, measured, commit)
                if changed:
                    print(f"  wrote {', '.join(dict.fromkeys(changed))}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"runs kept in {out}", file=sys.stderr)
        else:
            shutil.rmtree(out, ignore_errors=True)
    print_table(rows)
    return summarize(rows, figures, args, time.perf_counter() - started)


def summarize(rows: list[Row], figures: list[Figure], args: argparse.Namespace, seconds: float) -> int:
    failed = [r for r in rows if r.ok is False]
    checked = sum(r.ok is not None for r in rows)
    print(f"\n{checked} values of {len(figures)} figures checked in {seconds / 60:.1f} min: "
          f"{len(failed)} beyond tolerance{' (rewritten)' if args.write and failed else ''}; "
          f"{sum(r.ok is None for r in rows)} skipped")
    for figure in FIGURES:
        if figure.slow and figure not in figures:
            print(f"not measured: {figure.name} ({figure.cost}): {figure.slow}; --slow or --only {figure.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
