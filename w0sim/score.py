"""Score arbitrary trajectories on a scene file (`w0sim score`): NAVSIM PDMS v1.1 or EPDMS v2.2 per trajectory.

The trajectories file is JSON (`w0sim score --help` shows examples): a list of objects, or a dict name -> object,
each `{"name": ..., "poses": [[x, y, heading], ...], "interval": 0.5}` (`interval` optional, default 0.5 s;
`name` optional, default the dict key or `trajectory_<i>`) or a bare list of poses, poses in the ego rear-axle
frame of the scene's current frame. A trajectory that cannot be scored (NaN / inf, non-numeric, wrong shape, empty,
bad interval, poses beyond the plausibility bounds of `sim.limits`) gives a failed row (valid False, NaN metrics,
the reason) instead of stopping the run; a missing or malformed scene or JSON file raises `ScoreInputError` naming
the file and the problem.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metrics.pdm import SUBSCORE_COLUMNS, VERSIONS
from sim.limits import MAX_TRAJECTORY_INTERVAL_S, MAX_TRAJECTORY_POSES

DEFAULT_INTERVAL = 0.5
SHORT_NAMES = {"no_at_fault_collisions": "NC", "drivable_area_compliance": "DAC",
               "driving_direction_compliance": "DDC", "traffic_light_compliance": "TLC", "ego_progress": "EP",
               "time_to_collision_within_bound": "TTC", "comfort": "C", "lane_keeping": "LK",
               "history_comfort": "HC", "two_frame_extended_comfort": "EC"}


class ScoreInputError(ValueError):
    """A scene or trajectories file cannot be used: the message names the file and the problem."""


@dataclass
class TrajectorySpec:
    name: str
    poses: object  # as read from JSON; validated by the scorer (bad poses give a failed row)
    interval: object = DEFAULT_INTERVAL


@dataclass
class ScoreReport:
    token: str
    version: str
    rows: list[dict] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return columns(self.version)


def columns(version: str) -> list[str]:
    """CSV columns: NAVSIM's (token, valid, sub-scores, score) plus name and reason."""
    return ["token", "name", "valid", *SUBSCORE_COLUMNS[version], "score", "reason"]


def load_trajectories(path: str | Path) -> list[TrajectorySpec]:
    """Read a trajectories JSON file; ScoreInputError naming the file for a missing file or a bad layout."""
    path = Path(path)
    if not path.is_file():
        raise ScoreInputError(f"{path}: no such trajectories file")
    try:
        document = json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise ScoreInputError(f"{path}: not a text (UTF-8) JSON file ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ScoreInputError(f"{path}: invalid JSON ({exc})") from exc
    if isinstance(document, dict):
        entries = [(str(key), value) for key, value in document.items()]
    elif isinstance(document, list):
        entries = [(None, value) for value in document]
    else:
        raise ScoreInputError(f"{path}: expected a list of trajectories or a dict name -> trajectory, "
                              f"got a JSON {type(document).__name__}")
    if not entries:
        raise ScoreInputError(f"{path}: holds no trajectories")
    specs, seen = [], set()
    for i, (key, value) in enumerate(entries):
        where = f"trajectory {key!r}" if key is not None else f"trajectory #{i}"
        if isinstance(value, list):  # a bare pose list is accepted as a trajectory
            value = {"poses": value}
        if not isinstance(value, dict):
            raise ScoreInputError(f"{path}: {where} must be an object with 'poses', got a JSON {type(value).__name__}")
        if "poses" not in value:
            raise ScoreInputError(f"{path}: {where} has no 'poses'")
        name = value.get("name", key if key is not None else f"trajectory_{i}")
        name = str(name)
        if name in seen:
            raise ScoreInputError(f"{path}: trajectory name {name!r} appears twice")
        seen.add(name)
        specs.append(TrajectorySpec(name, value["poses"], value.get("interval", DEFAULT_INTERVAL)))
    return specs


def _load_scene(path: Path):
    from scenarios.scene import SceneFormatError, load_scene

    try:
        return load_scene(path)
    except SceneFormatError as exc:
        raise ScoreInputError(str(exc)) from None


def _pose_problem(poses, interval) -> str | None:
    """Why a trajectory cannot be scored, for what the scorer's own check (non-finite, shape, empty, interval) lets
    through: non-numeric values (JSON strings or booleans), too many poses, an interval beyond the bound, and poses
    beyond the plausibility bounds of actions (`sim.envs.observation.action_problem`), which would otherwise give
    numbers from a tracker pushed past float range."""
    from sim.envs.observation import action_problem

    try:
        array = np.asarray(poses)
    except (TypeError, ValueError):
        return None  # ragged: the scorer names the problem
    if array.dtype.kind not in "iuf" and array.size:
        return f"trajectory poses must be numbers (got {array.dtype.name} values)"
    if array.ndim == 2 and array.shape[0] > MAX_TRAJECTORY_POSES:
        return f"trajectory has {array.shape[0]} poses, more than the bound {MAX_TRAJECTORY_POSES}"
    if isinstance(interval, bool) or (isinstance(interval, (int, float)) and interval > MAX_TRAJECTORY_INTERVAL_S):
        return f"trajectory interval must be a number of seconds in (0, {MAX_TRAJECTORY_INTERVAL_S:g}], got {interval!r}"
    if array.ndim == 2 and array.shape[1:] == (3,) and array.size and array.dtype.kind in "iuf":
        values = array.astype(np.float64)
        if np.isfinite(values).all():
            return action_problem(values, "trajectory")
    return None


def _score_row(scorer, spec: TrajectorySpec, version: str) -> tuple[object, float]:
    """(PDMRows, score) of one trajectory: a failed row for poses the checks refuse or that scoring cannot handle."""
    from shapely.errors import GEOSException

    from metrics.pdm import PDMRows

    problem = _pose_problem(spec.poses, spec.interval)
    if problem is not None:
        return PDMRows.failed(version, problem), 0.0
    try:
        rows, score = scorer.score(spec.poses, spec.interval)
    except (ValueError, TypeError, IndexError, FloatingPointError, GEOSException) as exc:
        return PDMRows.failed(version, f"scoring failed: {type(exc).__name__}: {exc}"), 0.0
    if rows.valid[0]:
        values = [float(getattr(rows, name)[0]) for name in SUBSCORE_COLUMNS[version]]
        if not (math.isfinite(score) and 0.0 <= score <= 1.0) or any(
                math.isinf(v) or not (math.isnan(v) or 0.0 <= v <= 1.0) for v in values):
            return PDMRows.failed(version, f"scoring gave a value outside [0, 1] (score {score!r})"), 0.0
    return rows, score


def score_trajectories(scene_path: str | Path, trajectories, version: str = "v1.1") -> ScoreReport:
    """Score each trajectory (a trajectories file path or a list of TrajectorySpec) on the scene file's current
    frame; one row per trajectory with every sub-score of `version`, the reported score, valid and reason."""
    from shapely.errors import GEOSException

    from sim.envs.scene_scoring import SceneScorer

    if version not in VERSIONS:
        raise ScoreInputError(f"unknown version {version!r}; choose one of {', '.join(VERSIONS)}")
    specs = trajectories if isinstance(trajectories, list) else load_trajectories(trajectories)
    scene_path = Path(scene_path)
    scene = _load_scene(scene_path)
    try:
        scorer = SceneScorer(scene, version)
    except (ValueError, KeyError, IndexError, TypeError, FloatingPointError, GEOSException) as exc:
        raise ScoreInputError(f"{scene_path}: cannot build the metric cache of this scene "
                              f"({type(exc).__name__}: {exc})") from None
    report = ScoreReport(scene.token, version)
    for spec in specs:
        rows, score = _score_row(scorer, spec, version)
        valid = bool(rows.valid[0])
        row = {"token": scene.token, "name": spec.name, "valid": valid}
        for name in SUBSCORE_COLUMNS[version]:
            row[name] = float(getattr(rows, name)[0])  # NaN where the version lacks it
        row["score"] = float(score) if valid else math.nan
        row["reason"] = rows.reason[0]
        report.rows.append(row)
    return report


def _csv_value(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def write_csv(report: ScoreReport, path: str | Path) -> Path:
    """Write the rows as CSV (NaN as an empty cell, as pandas writes NAVSIM's failed rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(report.columns)
        for row in report.rows:
            writer.writerow([_csv_value(row[c]) for c in report.columns])
    return path


def render_table(report: ScoreReport):
    """A rich Table of the rows: name, ok, the score, then the sub-scores by their short names (2 decimals; the CSV
    has full precision, in NAVSIM's column order). The score comes first so that a terminal too narrow for every
    column crops sub-scores, never the score.

    Failed rows' reasons are listed by `failure_lines` (a reason column would not fit an 80-column terminal).
    """
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{report.token} {'PDMS' if report.version == 'v1.1' else 'EPDMS'} {report.version}",
                  box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), pad_edge=False)
    table.add_column("name", overflow="fold", min_width=min(12, max(len(r["name"]) for r in report.rows)))
    table.add_column("ok", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    for name in SUBSCORE_COLUMNS[report.version]:
        table.add_column(SHORT_NAMES[name], justify="right", no_wrap=True)
    fmt = lambda v: "-" if isinstance(v, float) and np.isnan(v) else f"{v:.2f}"  # noqa: E731
    for row in report.rows:
        table.add_row(escape(row["name"]), "yes" if row["valid"] else "[red]no[/red]", fmt(row["score"]),
                      *[fmt(row[n]) for n in SUBSCORE_COLUMNS[report.version]])
    return table


def failure_lines(report: ScoreReport) -> list[str]:
    """'name: reason' for every failed row."""
    return [f"{row['name']}: {row['reason']}" for row in report.rows if not row["valid"]]


__all__ = ["ScoreInputError", "ScoreReport", "TrajectorySpec", "columns", "failure_lines", "load_trajectories",
           "render_table", "score_trajectories", "write_csv"]
