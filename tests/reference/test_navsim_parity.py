"""Reference suite: NAVSIM's own code scores w0sim's exported scenes; w0sim must give the same numbers per token.

Opt-in (`pytest -m navsim tests/reference`): it needs a venv per NAVSIM tag made by
`scripts/navsim_reference_env.sh`, named by W0SIM_NAVSIM_V1_1_PYTHON / W0SIM_NAVSIM_V2_2_PYTHON (a version whose
variable is unset, or whose python cannot import navsim and nuplan, is skipped). W0SIM_NAVSIM_SCENES scenes of
builtin:navtest (default 10) are exported with `w0sim scenes export-navsim` (logs, maps and the scene filter of their
tokens, which both sides use); `navsim_harness.py` scores them with
NAVSIM (constant velocity, human, NAVSIM's cached PDM-Closed trajectory); w0sim scores the same logs with
`w0sim eval --split navsim:navtest` (constant velocity, human) and, for PDM-Closed, scores NAVSIM's own PDM-Closed
poses (written by the harness) with w0sim's scorer of that scene (`SceneScorer`, what `w0sim eval` scores with), so
both sides score identical poses. Every column of every token must agree to 1e-6 (NaN equals NaN).
v2.2 runs twice: with NAVSIM's human penalty filter (its default) and without it, on both sides.
A second export is one log scored at every frame (`tests/ghost_scene.py`): the ego overlaps a car at the first
token that stands ahead at the next, so NAVSIM's caching planner, which keeps what the ego overlapped at a log's
earlier tokens, plans the next token as if the car were not there; w0sim must do the same.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.navsim

HARNESS = Path(__file__).with_name("navsim_harness.py")
PYTHON_VARS = {"v1.1": "W0SIM_NAVSIM_V1_1_PYTHON", "v2.2": "W0SIM_NAVSIM_V2_2_PYTHON"}
COLUMNS = {
    "v1.1": ("no_at_fault_collisions", "drivable_area_compliance", "ego_progress", "time_to_collision_within_bound",
             "comfort", "driving_direction_compliance", "score"),
    "v2.2": ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
             "traffic_light_compliance", "ego_progress", "time_to_collision_within_bound", "lane_keeping",
             "history_comfort", "two_frame_extended_comfort", "score"),
}
AGENTS = ("constant_velocity", "human", "pdm_closed")
TOLERANCE = 1e-6
PLAN_TOLERANCE = 1e-5  # NAVSIM's Trajectory holds float32 poses: ~4e-6 m at 40 m
PDM_CLOSED_POSES = 40  # the harness writes NAVSIM's PDM-Closed as 40 poses at 0.1 s
SPLIT = "navtest"


def reference_python(version: str) -> str:
    """The reference venv's python for `version`, or skip with the reason."""
    var = PYTHON_VARS[version]
    python = os.environ.get(var)
    if not python:
        pytest.skip(f"{var} is not set: make a NAVSIM {version} venv with scripts/navsim_reference_env.sh and point "
                    f"{var} at its bin/python")
    try:
        check = subprocess.run([python, "-c", "import navsim, nuplan"], capture_output=True, text=True, timeout=300)
    except OSError as err:
        pytest.skip(f"{var}={python} does not run: {err}")
    if check.returncode != 0:
        pytest.skip(f"{var}={python} cannot import navsim and nuplan: {check.stderr.strip().splitlines()[-1:]}")
    return python


def w0sim_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "w0sim.cli", *args]


def run(command: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - start


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """builtin:navtest's first W0SIM_NAVSIM_SCENES scenes as NAVSIM logs and nuPlan maps."""
    count = int(os.environ.get("W0SIM_NAVSIM_SCENES", "10"))
    out = tmp_path_factory.mktemp("navsim_export")
    done, _ = run(w0sim_command("scenes", "export-navsim", "--split", "builtin:navtest", "--limit", str(count),
                                "--name", SPLIT, "--out", str(out)), timeout=1800)
    assert done.returncode == 0, f"w0sim scenes export-navsim failed:\n{done.stdout}\n{done.stderr}"
    return {"count": count, "logs": out / "navsim_logs", "maps": out / "maps",
            "scene_filter": out / "scene_filters" / f"{SPLIT}.yaml"}


@pytest.fixture(scope="module")
def exported_carry(tmp_path_factory) -> dict:
    """The ghost scene as one NAVSIM log, every window of it (frame interval 1, no token list)."""
    from scenarios.scene import save_scene
    from scenarios.scene_filter import SceneFilter
    from scenarios.splits import resolve_split
    from tests.ghost_scene import ghost_scene

    scenes = tmp_path_factory.mktemp("ghost_scenes")
    save_scene(ghost_scene(), scenes / "ghost.npz")
    out = tmp_path_factory.mktemp("navsim_export_carry")
    done, _ = run(w0sim_command("scenes", "export-navsim", "--split", str(scenes), "--name", SPLIT, "--out", str(out)),
                  timeout=600)
    assert done.returncode == 0, f"w0sim scenes export-navsim failed:\n{done.stdout}\n{done.stderr}"
    scene_filter = SceneFilter(frame_interval=1).write_yaml(out / "scene_filters" / f"{SPLIT}.yaml")
    windows = resolve_split(f"navsim:{SPLIT}", navsim_logs=out / "navsim_logs", nuplan_maps=out / "maps",
                            scene_filter=scene_filter)
    assert len(windows) > 2 and windows[1].earlier_windows, "the ghost log has no second window"
    return {"count": len(windows), "logs": out / "navsim_logs", "maps": out / "maps", "scene_filter": scene_filter}


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= TOLERANCE


def as_number(value) -> float | None:
    if value is None or value == "":
        return None
    value = float(value)
    return None if math.isnan(value) else value


def w0sim_eval_scores(exported: dict, agent: str, version: str, out: Path,
                      human_filter: bool = True) -> tuple[dict, float, str]:
    """{token: {column: value}} from `w0sim eval` on the exported logs, its wall time, and its error text."""
    done, seconds = run(w0sim_command("eval", "--agent", agent, "--split", f"navsim:{SPLIT}", "--navsim-logs",
                                      str(exported["logs"]), "--nuplan-maps", str(exported["maps"]), "--scene-filter",
                                      str(exported["scene_filter"]), "--pdm-version", version, "--workers", "1",
                                      "--out", str(out), "--human-filter" if human_filter else "--no-human-filter"),
                    timeout=3600)
    scores = {}
    if (out / "scores.csv").is_file():
        with open(out / "scores.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row["token"].startswith("average"):
                    continue
                if row["valid"] in ("True", "true", "1"):
                    scores[row["token"]] = {c: as_number(row.get(c)) for c in COLUMNS[version]}
    error = "" if done.returncode == 0 else f"w0sim eval --agent {agent} exited {done.returncode}: {done.stderr[-2000:]}"
    return scores, seconds, error


def w0sim_pdm_closed_scores(exported: dict, version: str, navsim: dict,
                            human_filter: bool = True) -> tuple[dict, dict, str, float]:
    """w0sim's scores of NAVSIM's own PDM-Closed poses per token (v2.2: with the two-frame comfort of adjacent
    frames, as `w0sim eval` adds it), w0sim's seconds per token (cache + score), the errors, and the largest
    difference between w0sim's own PDM-Closed plan and NAVSIM's (its 40 poses in the ego frame)."""
    import numpy as np

    from scenarios.splits import resolve_split
    from sim.envs.scene_scoring import SceneScorer
    from sim.geometry import global_to_local
    from w0sim.one_shot import with_extended_comfort

    seconds, errors, refs, rows, plan_diff = {}, [], [], [], 0.0
    for ref in resolve_split(f"navsim:{SPLIT}", navsim_logs=exported["logs"], nuplan_maps=exported["maps"],
                             scene_filter=exported["scene_filter"]):
        try:
            entry = navsim["tokens"].get(ref.token)
            if entry is None:
                continue
            scene = ref.load()
            start = time.perf_counter()
            scorer = SceneScorer(scene, version, human_filter=human_filter)
            scored, score = scorer.score(entry["pdm_closed_poses"], entry["pdm_closed_interval"])
            seconds[scene.token] = time.perf_counter() - start
            ours = global_to_local(scorer.pdm_closed.poses[1 : PDM_CLOSED_POSES + 1], scorer.reference.initial_state[:3])
            plan_diff = max(plan_diff, float(np.abs(ours - np.asarray(entry["pdm_closed_poses"])).max()))
            valid = bool(scored.valid[0])
            row = {**scored.result(0), "score": score, "simulated_states": scored.states[0]} if valid else {}
            refs.append(ref)
            rows.append({"token": ref.token, "valid": valid, **row})
        except Exception as err:  # reported in the table, not raised: the other tokens are still compared
            errors.append(f"{ref.token}: {type(err).__name__}: {err}")
    if version == "v2.2":
        rows = with_extended_comfort(refs, rows)
    scores = {row["token"]: {c: as_number(row.get(c, math.nan)) for c in COLUMNS[version]} for row in rows}
    return scores, seconds, "\n".join(errors), plan_diff


def compare(version: str, tokens: list[str], navsim: dict, ours: dict[str, dict]) -> dict:
    """Per agent: tokens agreeing / total and, per column, how many tokens differ and the largest difference."""
    table = {}
    for agent in AGENTS:
        agreeing, columns, missing = 0, {}, []
        for token in tokens:
            theirs = navsim["tokens"].get(token, {}).get("scores", {}).get(agent)
            mine = ours[agent].get(token)
            if theirs is None or mine is None:
                missing.append(f"{token} ({'NAVSIM' if theirs is None else 'w0sim'} has no score)")
                continue
            ok = True
            for c in COLUMNS[version]:
                if not same(theirs.get(c), mine.get(c)):
                    ok = False
                    a, b = theirs.get(c), mine.get(c)
                    diff = abs(a - b) if a is not None and b is not None else math.inf
                    stat = columns.setdefault(c, {"tokens": 0, "max_abs_diff": 0.0, "worst_token": None})
                    stat["tokens"] += 1
                    if diff >= stat["max_abs_diff"]:
                        stat.update(max_abs_diff=diff, worst_token=token, navsim=a, w0sim=b)
            agreeing += ok
        worst = dict(sorted(columns.items(), key=lambda kv: (-kv[1]["tokens"], -kv[1]["max_abs_diff"])))
        table[agent] = {"agreeing": agreeing, "total": len(tokens), "worst_columns": worst, "missing": missing}
    return table


def markdown(version: str, table: dict, timing: dict, notes: list[str]) -> str:
    lines = [f"# NAVSIM {version} vs w0sim, per token (tolerance {TOLERANCE:g})", "",
             "| agent | tokens agreeing / total | worst columns (tokens differing, max abs diff) |", "|---|---|---|"]
    for agent, row in table.items():
        worst = ", ".join(f"{c} ({s['tokens']}, {s['max_abs_diff']:.3g})" for c, s in list(row["worst_columns"].items())[:4])
        if row["missing"]:
            worst = (worst + "; " if worst else "") + f"{len(row['missing'])} without a score on one side"
        lines.append(f"| {agent} | {row['agreeing']} / {row['total']} | {worst or '-'} |")
    lines += ["", "Seconds per token: " + ", ".join(f"{k} {v:.4f}" for k, v in timing.items())]
    lines += [""] + [f"- {note}" for note in notes if note]
    return "\n".join(lines) + "\n"


@pytest.fixture
def navsim_python(version) -> str:
    """The reference python, checked before anything is exported."""
    return reference_python(version)


@pytest.mark.timeout(7200)
@pytest.mark.parametrize("export", ["exported", "exported_carry"], ids=["navtest", "carry"])
@pytest.mark.parametrize("version, human_filter", [("v1.1", True), ("v2.2", True), ("v2.2", False)],
                         ids=["v1.1", "v2.2", "v2.2-no-human-filter"])
def test_navsim_scores_equal_w0sim_scores_per_token(version, human_filter, export, navsim_python, request, tmp_path):
    python = navsim_python
    exported = request.getfixturevalue(export)
    count = exported["count"]
    navsim_json = tmp_path / f"navsim_{version}.json"
    command = [python, str(HARNESS), str(exported["logs"] / SPLIT), str(exported["maps"]), version, str(navsim_json),
               "--scene-filter", str(exported["scene_filter"])]
    if version == "v2.2" and not human_filter:
        command.append("--no-human-filter")
    harness, harness_seconds = run(command, timeout=3600)
    assert navsim_json.is_file(), f"the NAVSIM harness wrote nothing (exit {harness.returncode}):\n{harness.stderr[-4000:]}"
    navsim = json.loads(navsim_json.read_text())

    ours, w0sim_seconds, notes = {}, {}, []
    for agent in ("constant_velocity", "human"):
        ours[agent], seconds, error = w0sim_eval_scores(exported, agent, version, tmp_path / f"w0sim_{version}_{agent}",
                                                        human_filter)
        w0sim_seconds[f"w0sim eval {agent} (wall, start-up included)"] = seconds / count
        notes.append(error)
    ours["pdm_closed"], pdm_seconds, error, plan_diff = w0sim_pdm_closed_scores(exported, version, navsim, human_filter)
    notes.append(f"w0sim's own PDM-Closed plan vs NAVSIM's: largest pose difference {plan_diff:.2g} (m / rad; NAVSIM "
                 f"stores float32 poses, allowed {PLAN_TOLERANCE:g})")
    notes.append(error)

    tokens = sorted(set(ours["constant_velocity"]) | set(ours["human"]) | set(navsim["tokens"]) | set(navsim["errors"]))
    table = compare(version, tokens, navsim, ours)
    per_token = list(navsim["tokens"].values())
    timing = {f"NAVSIM {k}": sum(e["seconds"][k] for e in per_token) / len(per_token)
              for k in ("metric_cache", *AGENTS)} if per_token else {}
    timing["NAVSIM harness (wall, start-up included)"] = harness_seconds / count
    timing.update(w0sim_seconds)
    if pdm_seconds:
        timing["w0sim pdm_closed (SceneScorer: cache + score)"] = sum(pdm_seconds.values()) / len(pdm_seconds)
    if navsim["error"]:
        notes.insert(0, "NAVSIM failed before scoring: " + navsim["error"].strip().splitlines()[-1])
    if navsim["errors"]:
        first, text = next(iter(navsim["errors"].items()))
        notes.insert(0, f"NAVSIM failed on {len(navsim['errors'])} of {len(tokens)} tokens; first ({first}): "
                        + text.strip().splitlines()[-1])
    report = {"version": version, "tolerance": TOLERANCE, "human_filter": navsim.get("human_filter"), "table": table,
              "seconds_per_token": timing, "notes": [n for n in notes if n], "navsim_errors": navsim["errors"],
              "navsim_error": navsim["error"]}
    label = version if version == "v1.1" else f"{version}, human filter {'on' if human_filter else 'off'}"
    (tmp_path / f"navsim_parity_{version}.json").write_text(json.dumps(report, indent=1))
    md = markdown(label, table, timing, notes)
    md_path = tmp_path / f"navsim_parity_{version}.md"
    md_path.write_text(md)
    print(f"\n{md}\ncomparison table: {md_path} (and .json)")

    assert tokens, f"no tokens on either side\n{md}"
    agree = all(row["agreeing"] == row["total"] for row in table.values())
    assert agree, f"NAVSIM {version} and w0sim disagree (table: {md_path}):\n{md}"
    assert plan_diff <= PLAN_TOLERANCE, f"w0sim's PDM-Closed plan is not NAVSIM's:\n{md}"
