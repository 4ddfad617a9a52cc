"""One-shot (NAVSIM-style) evaluation: each scene's current frame scored in `w0sim/NavsimScene-v0`, NAVSIM's CSV.

Each scene runs through the environment exactly as a user's loop would (the agent input and, for a
privileged agent, the world view a NAVSIM log allows; the trajectory scored against the scene's
PDM-Closed reference). The CSV is NAVSIM's layout (v1.1: `token, valid, <6 sub-scores>, score` and an
`average` row; v2.2: its 9 sub-scores and `average_all_frames`), in split order whatever order scenes
finished in. v2.2's two-frame extended comfort is NAVSIM's one-stage rule: a token whose log's previous frame is
also in the split is compared with that frame's simulated states, and its score recomputed; other tokens keep
EC NaN (its weight 0).
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from agents.base import Agent, AgentUnavailable
from agents.registry import AgentSpec
from metrics.comfort import two_frame_extended_comfort
from metrics.pdm import SUBSCORE_COLUMNS, VERSIONS, epdms_with_extended_comfort
from scenarios.splits import SceneRef, resolve_split
from w0sim.latency import DecisionTimer
from w0sim.runner import RunError, atomic_write, check_workers, failure_reason, output_folder, run_manifest, run_split

AVERAGE_TOKEN = {"v1.1": "average", "v2.2": "average_all_frames"}


def csv_columns(version: str) -> list[str]:
    return ["token", "valid", *SUBSCORE_COLUMNS[version], "score"]


def evaluate_scene(ref: SceneRef, index: int, agent: Agent, version: str = "v1.1", human_filter: bool = True) -> dict:
    """The row of one scene: NAVSIM's columns plus family, the decision's `latency` (`DecisionTimer.summary`) and,
    for a failed scene, the reason (`rerun` when the agent could not be reached). `human_filter`: NAVSIM's v2.2
    human penalty filter (its default)."""
    from sim.envs.navsim_env import NavsimSceneEnv

    row = {"token": ref.token, "family": ref.family, "valid": False, "reason": ""}
    doing = "loading the scene"
    try:
        scene = ref.load()
        row["token"], row["family"] = scene.token, scene.family  # the scene's own token (the CSV's)
        doing = "setting up the scene's environment"
        env = NavsimSceneEnv(scenes=[scene], cameras=agent.get_sensor_config().cameras, pdm_version=version,
                             privileged=agent.privileged, human_filter=human_filter)
        _, info = env.reset(seed=0)
        doing = f"agent {agent.name()} planning"
        timer = DecisionTimer()
        trajectory = timer.plan(agent, info["agent_input"], info.get("world"))
        row["latency"] = timer.summary()
        doing = "scoring the planned trajectory"
        _, _, _, _, result = env.step(trajectory.poses)
    except Exception as err:  # the scene (or the agent on it) failed: a failed row, the run goes on
        row["reason"] = failure_reason(err, doing)
        if isinstance(err, AgentUnavailable):
            row["rerun"] = True
        return row
    if not result["valid"]:
        row["reason"] = " ".join(str(result.get("failure_reason") or "").split()) or "invalid trajectory (no reason given)"
        return row
    scores = result["scores"]
    row["valid"] = True
    for name in SUBSCORE_COLUMNS[version]:
        row[name] = float(scores.get(name, math.nan))
    row["score"] = float(scores["score"])
    if version == "v2.2":  # the two-frame comfort of the next frame of this log compares with these
        row["simulated_states"] = np.asarray(result["simulated_states"]).tolist()
    return row


def evaluate_split(split: str, agent: AgentSpec, out_dir: str | Path, version: str = "v1.1",
                   limit: int | None = None, workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None, ray_address: str | None = None,
                   split_options: dict | None = None, human_filter: bool = True) -> list[dict]:
    """Score `agent` on the first `limit` scenes of `split` (`split_options`: see `resolve_split`); writes
    rows.jsonl and scores.csv to `out_dir` and returns the rows in split order (see `run_split` for workers,
    Ray and resume). `out_dir` is held while the run writes to it and records the run's manifest
    (`output_folder`): a folder of another agent, checkpoint, split, version or options is refused (RunError)."""
    out_dir = Path(out_dir)
    check_version(version)
    check_workers(workers)
    refs = resolve_split(split, limit, **(split_options or {}))
    manifest = one_shot_manifest(agent, split, version, limit, human_filter, split_options)
    with output_folder(out_dir, manifest) as folder:
        task = partial(evaluate_scene, version=version, human_filter=human_filter)
        folder.write_manifest()
        rows = run_split(refs, agent, task, out_dir, workers, ray_address, progress)
        if version == "v2.2":
            rows = with_extended_comfort(refs, rows)
        write_csv(rows, out_dir / "scores.csv", version)
    return rows


def one_shot_manifest(agent: AgentSpec, split: str, version: str, limit: int | None, human_filter: bool,
                      split_options: dict | None) -> dict:
    """The manifest of a one-shot run (`run_manifest`): the human filter only where it changes scores (v2.2)."""
    return run_manifest(agent, split, "one_shot", limit=limit, pdm_version=version,
                        human_filter=human_filter if version == "v2.2" else None, split_options=split_options)


def check_version(version: str) -> None:
    """A RunError for a PDM score version other than NAVSIM's v1.1 (PDMS) and v2.2 (EPDMS)."""
    if version not in VERSIONS:
        raise RunError(f"--pdm-version {version!r} is not a PDM score version; expected one of {', '.join(VERSIONS)}")


def with_extended_comfort(refs: list[SceneRef], rows: list[dict]) -> list[dict]:
    """Rows (split order, aligned with `refs`) with v2.2's two-frame EC and the score it changes, for every valid
    token whose log's previous frame is a valid token of the split too."""
    index = {ref.log_frame: k for k, ref in enumerate(refs)}
    out = []
    for k, (ref, row) in enumerate(zip(refs, rows)):
        log, frame = ref.log_frame
        before = index.get((log, frame - 1))
        row = {k: v for k, v in row.items() if k != "simulated_states"}
        if row["valid"] and before is not None and rows[before]["valid"]:
            now, prev = np.asarray(rows[k]["simulated_states"]), np.asarray(rows[before]["simulated_states"])
            row["two_frame_extended_comfort"] = float(two_frame_extended_comfort(now, prev))
            row["score"] = epdms_with_extended_comfort(row, row["two_frame_extended_comfort"])
        out.append(row)
    return out


def write_csv(rows: list[dict], path: Path, version: str) -> None:
    """NAVSIM's CSV: a row per scene, then the average row (means skipping NaN, valid = all valid); NaN as an empty
    cell, as pandas writes NAVSIM's."""
    columns = csv_columns(version)
    metric_columns = columns[2:]
    table = [{c: row.get(c, math.nan) for c in columns} for row in rows]
    average = {"token": AVERAGE_TOKEN[version], "valid": all(bool(r["valid"]) for r in rows)}
    for c in metric_columns:
        values = np.array([float(r.get(c, math.nan)) for r in rows], dtype=np.float64)
        average[c] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows({c: "" if isinstance(v, float) and math.isnan(v) else v for c, v in row.items()}
                     for row in table + [average])
    atomic_write(path, text.getvalue())  # a temporary file of this run's own, renamed over the CSV


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


__all__ = ["check_version", "csv_columns", "evaluate_scene", "evaluate_split", "one_shot_manifest", "summarize",
           "summary_markdown", "write_csv"]
