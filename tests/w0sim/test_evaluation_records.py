"""`w0sim eval` as a function pinned whole: each refusal's message, the arguments each kind of run gets, the folder it
holds, the Evaluation it returns (summary, scores file, failures, videos, count and unit) and the rollout videos' count."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from agents.base import AgentError, AgentOptions, WorldModelAgent
from agents.constant_velocity import ConstantVelocityAgent
from agents.registry import AgentSpec
from scenarios.generator import generate_scene
from scenarios.scene import save_scene
from scenarios.splits import SplitError, resolve_split
from tests.w0sim.records import scored_record
from w0sim import __version__, closed_loop, evaluation, one_shot
from w0sim.evaluation import SPLIT_OPTIONS, Evaluation, check_split_options, evaluate
from w0sim.runner import MANIFEST_FORMAT, RunError, output_folder


class WorldModel(WorldModelAgent):
    """A constant-velocity planner with a world model of grey frames (enough for `--videos` to accept it)."""

    frame_interval_s = 0.5

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ready = False

    def initialize(self) -> None:
        self.ready = True

    def compute_trajectory(self, agent_input, world=None):
        return ConstantVelocityAgent(self.trajectory_sampling).compute_trajectory(agent_input, world)

    def predict_frames(self, agent_input, steps, seed=0, top_k=0):
        return np.zeros((steps, 4, 4, 3), np.uint8)


CV = AgentSpec("constant_velocity")
WORLD_MODEL = AgentSpec("tests.w0sim.test_evaluation_records:WorldModel")


# ---- refusals -------------------------------------------------------------------------------------------------------

def _workers_message(workers: int) -> str:
    cores = os.cpu_count()
    return (f"--workers {workers}: expected 1 to {min(4 * cores, 256)} (4 per CPU core, at most 256; this machine has "
            f"{cores} cores)")


@pytest.mark.parametrize("split, spec, options, error, message", [
    ("builtin:navtest", CV, {"pdm_version": "v9"}, RunError,
     "--pdm-version 'v9' is not a PDM score version; expected one of v1.1, v2.2"),
    ("builtin:navtest", CV, {"workers": 0}, RunError, _workers_message(0)),
    ("builtin:navtest", CV, {"limit": 0}, RunError, "--limit must be at least 1, got 0"),
    ("builtin:routes", CV, {"limit": -3}, RunError, "--limit must be at least 1, got -3"),
    ("builtin:routes", CV, {"split_options": {"town_dir": "/towns"}}, RunError,
     "--town-dir applies to carla:NAME splits only, not to 'builtin:routes'"),
    ("builtin:navtest", CV, {"split_options": {"scene_filter": "f.yaml"}}, RunError,
     "--scene-filter applies to navsim:NAME splits only, not to 'builtin:navtest'"),
    ("builtin:routes", CV, {"repetitions": 0}, RunError, "--repetitions must be at least 1, got 0"),
    ("builtin:navtest", CV, {"repetitions": 2}, RunError,
     "--repetitions 2: repetitions are closed-loop route runs, and builtin:navtest is scored one-shot here (use a "
     "closed-loop split or --closed-loop)"),
    ("builtin:routes", CV, {"repetitions": 3, "closed_loop": False}, RunError,
     "--repetitions 3: repetitions are closed-loop route runs, and builtin:routes is scored one-shot here (use a "
     "closed-loop split or --closed-loop)"),
    ("builtin:navtest", WORLD_MODEL, {"videos": -1}, RunError, "--videos must be at least 0, got -1"),
    ("builtin:routes", WORLD_MODEL, {"videos": 1}, AgentError,
     "--videos renders one-shot rollouts; it does not apply to a closed-loop run"),
    ("builtin:navtest", CV, {"videos": 2}, AgentError,
     "--videos needs an agent with a world model; constant_velocity has none"),
])
def test_a_run_that_cannot_start_as_asked_is_refused_saying_why_before_it_writes(tmp_path, split, spec, options, error,
                                                                                    message):
    with pytest.raises(error) as err:
        evaluate(split, spec, tmp_path / "out", **options)
    assert type(err.value) is error and str(err.value) == message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, split", [("navsim_logs", "carla:r.xml"), ("nuplan_maps", "builtin:navtest"),
                                         ("sensor_blobs", "scenes"), ("scene_filter", "carla:r.xml"),
                                         ("town_dir", "navsim:navtest")])
def test_each_split_option_given_to_another_kind_of_split_is_refused_by_its_option_name(name, split):
    applies = SPLIT_OPTIONS[name]
    with pytest.raises(RunError) as err:
        check_split_options(split, {name: "x"})
    assert str(err.value) == f"--{name.replace('_', '-')} applies to {applies}NAME splits only, not to {split!r}"


def test_split_options_left_unset_or_unknown_or_for_the_right_split_pass():
    check_split_options("builtin:routes", {"town_dir": None, "navsim_logs": None, "workers_hint": "x"})
    check_split_options("carla:r.xml", {"town_dir": "/towns"})
    check_split_options("navsim:navtest", {"navsim_logs": "/l", "nuplan_maps": "/m", "sensor_blobs": "/b",
                                           "scene_filter": "/f"})


def test_the_split_options_table_names_the_split_kind_of_each_option():
    assert SPLIT_OPTIONS == {"navsim_logs": "navsim:", "nuplan_maps": "navsim:", "sensor_blobs": "navsim:",
                             "scene_filter": "navsim:", "town_dir": "carla:"}


# ---- a closed-loop run, its routes driven by a stand-in ------------------------------------------------------------

def _manifest(split: str, mode: str, split_options: dict, limit=None, repetitions=1, pdm_version=None,
              human_filter=None, agent="constant_velocity", target="agents.constant_velocity:ConstantVelocityAgent"):
    return {"format": MANIFEST_FORMAT, "w0sim_version": __version__, "mode": mode, "agent": agent,
            "agent_class": target, "checkpoint": None, "checkpoint_sha256": None, "seed": 0, "device": "cpu",
            "dtype": "float32", "split": split, "split_options": split_options, "limit": limit,
            "repetitions": repetitions, "pdm_version": pdm_version, "human_filter": human_filter}


def _spy_routes(monkeypatch, results: dict, rows: str = "", manifest: dict | None = None) -> list:
    """Replace evaluate_routes by one that keeps its arguments, holds the run's folder again with `manifest` (refused
    if the run holds it with other settings), writes `rows` as rows.jsonl and returns `results`."""
    calls = []

    def evaluate_routes(*args, **kwargs):
        calls.append((args, kwargs))
        out_dir = args[2]
        if manifest is not None:
            with output_folder(out_dir, manifest):
                pass
        (out_dir / "rows.jsonl").write_text(rows)
        return results

    monkeypatch.setattr(closed_loop, "evaluate_routes", evaluate_routes)
    return calls


ROUTE_RESULTS = {"_checkpoint": {
    "global_record": {"scores_mean": {"score_composed": 37.5, "score_route": 45.0, "score_penalty": 0.625}},
    "progress": [3, 4],
    "records": [scored_record("RouteScenario_12_rep0", "Perfect", 100.0, 100, 1.0),
                scored_record("RouteScenario_12_rep1", "Failed - Agent crashed", 0.0, 0.0, 1.0),
                scored_record("RouteScenario_5_rep1", "Completed", 50.0, 80.0, 0.5)]}}
CRASH_ROW = ('{"ref": "RouteScenario_12_rep1", "record": {"status": "Failed - Agent crashed"}, '
             '"reason": "agent X planning decision 0 (t = 0.0 s): RuntimeError: no plan", "latency": {"decisions": 4, '
             '"wall_s_mean": 0.02, "wall_s_p95": 0.04, "wall_s_max": 0.05, "inference_s_mean": 0.015}}\n')
FAILED_ROW = '{"ref": "RouteScenario_5_rep0", "valid": false, "reason": "loading the route\'s scene: OSError: gone"}\n'


def test_a_closed_loop_run_drives_the_routes_as_asked_and_returns_its_summary_and_failures(tmp_path, monkeypatch,
                                                                                          route_file):
    """A carla: split is closed loop; the run gets every setting, holds the folder as the run's (the route file and
    town folder by their absolute paths), and reports the Leaderboard's means, one Town01 family and each route."""
    routes, towns = route_file
    out = tmp_path / "out"
    split = f"carla:{routes}"
    manifest = _manifest(f"carla:{routes.resolve()}", "closed_loop", {"town_dir": str(towns.resolve())}, 2, 2)
    calls = _spy_routes(monkeypatch, ROUTE_RESULTS, CRASH_ROW + FAILED_ROW, manifest)
    run = evaluate(split, CV, str(out), limit=2, workers=1, ray_address="ray://head:10001", progress=print,
                   split_options={"town_dir": towns}, repetitions=2)
    assert calls == [((split, CV, out, 2, 1, print, {"town_dir": towns}, "ray://head:10001", 2, 0.0, None), {})]
    summary = (f"# constant_velocity on {split} (closed loop, Leaderboard 2.0 scoring)\n"
               "\n"
               "driving score 37.50, route completion 45.00, infraction penalty 0.625 over 4 routes\n"
               "\n"
               "| family | routes | driving score | route completion | penalty |\n"
               "|---|---|---|---|---|\n"
               "| Town01 | 3 | 50.00 | 60.00 | 0.833 |\n"
               "\n"
               "| route | status | driving score | route completion | penalty |\n"
               "|---|---|---|---|---|\n"
               "| RouteScenario_12_rep0 | Perfect | 100.00 | 100.00 | 1.000 |\n"
               "| RouteScenario_12_rep1 | Failed - Agent crashed | 0.00 | 0.00 | 1.000 |\n"
               "| RouteScenario_5_rep1 | Completed | 50.00 | 80.00 | 0.500 |\n"
               "\n"
               "Policy time per decision: mean 20.0 ms, max 50.0 ms over 4 decisions; the served policy's own compute "
               "15.0 ms of it on average, the rest the wire.\n")
    assert run == Evaluation(summary, out / "results.json", [
        ("RouteScenario_12_rep1", "Failed - Agent crashed: agent X planning decision 0 (t = 0.0 s): RuntimeError: no plan"),
        ("RouteScenario_5_rep0", "loading the route's scene: OSError: gone")], [], 4, "routes")
    assert (out / "summary.md").read_text() == summary


def _scene_files(folder: Path, *names: str) -> Path:
    folder.mkdir()
    for name in names:
        (folder / f"{name}.npz").write_text("")
    return folder


def test_routes_of_a_scene_folder_are_one_family_of_scene_files(tmp_path, monkeypatch):
    scenes = _scene_files(tmp_path / "scenes", "a", "b")
    results = {"_checkpoint": {
        "global_record": {"scores_mean": {"score_composed": 75.0, "score_route": 75.0, "score_penalty": 1.0}},
        "progress": [2, 2],
        "records": [scored_record("RouteScenario_0_rep0", "Perfect", 100.0, 100, 1.0),
                    scored_record("RouteScenario_1_rep0", "Failed", 50.0, 50.0, 1.0)]}}
    calls = _spy_routes(monkeypatch, results, manifest=_manifest(str(scenes), "closed_loop", {}))
    run = evaluate(str(scenes), CV, tmp_path / "out", closed_loop=True)
    assert calls == [((str(scenes), CV, tmp_path / "out", None, None, None, {}, None, 1, 0.0, None), {})]
    assert run.summary.splitlines()[4:7] == ["| family | routes | driving score | route completion | penalty |",
                                             "|---|---|---|---|---|", "| scene files | 2 | 75.00 | 75.00 | 1.000 |"]
    assert (run.failures, run.videos, run.total, run.unit) == ([], [], 2, "routes")


# ---- a one-shot run, its scenes scored by a stand-in ---------------------------------------------------------------

ROWS = [{"token": "a", "family": "straight", "valid": True, "score": 0.5},
        {"token": "b", "family": None, "valid": False, "score": 0.0, "reason": "loading the scene: OSError: gone"},
        {"token": "c", "family": "curve", "valid": True, "score": 0.7}]


def _spy_scenes(monkeypatch, manifest: dict | None = None, made: list | None = None) -> tuple[list, list]:
    """Replace evaluate_split (returning ROWS, after holding the folder again with `manifest`) and the rollout videos
    (returning `made`); both keep their arguments."""
    scored, rendered = [], []

    def evaluate_split(*args, **kwargs):
        scored.append((args, kwargs))
        if manifest is not None:
            with output_folder(args[2], manifest):
                pass
        return ROWS

    def rollout_videos(*args):
        rendered.append(args)
        return made

    monkeypatch.setattr(one_shot, "evaluate_split", evaluate_split)
    monkeypatch.setattr(evaluation, "_rollout_videos", rollout_videos)
    return scored, rendered


def test_a_one_shot_run_scores_the_scenes_as_asked_and_returns_its_summary_and_failures(tmp_path, monkeypatch):
    """builtin:navtest is one-shot; v2.2 with the human filter off: the summary's means leave the failed scene out."""
    manifest = _manifest("builtin:navtest", "one_shot", {}, 3, pdm_version="v2.2", human_filter=False)
    scored, rendered = _spy_scenes(monkeypatch, manifest)
    out = tmp_path / "out"
    run = evaluate("builtin:navtest", CV, str(out), pdm_version="v2.2", limit=3, workers=2, ray_address="local",
                   split_options={"navsim_logs": None}, progress=print, human_filter=False)
    assert scored == [(("builtin:navtest", CV, out, "v2.2", 3, 2, print, "local", {"navsim_logs": None}, False), {})]
    assert rendered == []
    summary = ("# constant_velocity on builtin:navtest (EPDMS v2.2)\n"
               "\n"
               "| scenes | count | failed | EPDMS |\n"
               "|---|---|---|---|\n"
               "| all | 3 | 1 | 0.6000 |\n"
               "| straight | 1 | 0 | 0.5000 |\n"
               "| unknown | 1 | 1 | nan |\n"
               "| curve | 1 | 0 | 0.7000 |\n")
    assert run == Evaluation(summary, out / "scores.csv", [("b", "loading the scene: OSError: gone")], [], 3, "scenes")
    assert (out / "summary.md").read_text() == summary


def test_a_run_scores_pdms_v1_1_with_the_human_filter_on_all_scenes_without_videos_by_default(tmp_path, monkeypatch):
    scored, rendered = _spy_scenes(monkeypatch, _manifest("builtin:navtest", "one_shot", {}, pdm_version="v1.1"))
    run = evaluate("builtin:navtest", CV, tmp_path)
    assert scored == [(("builtin:navtest", CV, tmp_path, "v1.1", None, None, None, None, {}, True), {})]
    assert rendered == [] and run.videos == []
    assert run.summary.splitlines()[0] == "# constant_velocity on builtin:navtest (PDMS v1.1)"


def test_a_route_split_asked_one_shot_is_scored_one_shot(tmp_path, monkeypatch):
    scored, _ = _spy_scenes(monkeypatch)
    run = evaluate("builtin:routes", CV, tmp_path, closed_loop=False, limit=1)
    assert [args[0] for args, _ in scored] == ["builtin:routes"] and (run.total, run.unit) == (3, "scenes")


@pytest.mark.parametrize("videos, limit, count", [(3, 2, 2), (2, None, 2), (1, 5, 1)])
def test_videos_are_rendered_of_the_first_scenes_at_most_as_many_as_the_run_scores(tmp_path, monkeypatch, videos,
                                                                                   limit, count):
    made = [tmp_path / "videos" / "a.mp4"]
    _, rendered = _spy_scenes(monkeypatch, made=made)
    run = evaluate("builtin:navtest", WORLD_MODEL, tmp_path, pdm_version="v2.2", limit=limit, videos=videos,
                   split_options={"navsim_logs": None})
    assert rendered == [("builtin:navtest", WORLD_MODEL, tmp_path, "v2.2", count, {"navsim_logs": None})]
    assert run.videos == made


def test_the_rollout_videos_are_the_initialised_agents_plans_of_the_first_scenes_with_the_runs_seed(tmp_path,
                                                                                                   monkeypatch):
    import w0sim.rollout_video

    rendered = []

    def render_rollout(agent, scene, out_path, pdm_version, seed):
        rendered.append((type(agent), agent.ready, scene.token, out_path, pdm_version, seed))
        return SimpleNamespace(video=Path(f"{out_path}.done"))

    monkeypatch.setattr(w0sim.rollout_video, "render_rollout", render_rollout)
    spec = AgentSpec(WORLD_MODEL.name, AgentOptions(seed=7))
    tokens = [ref.token for ref in resolve_split("builtin:navtest", 2)]
    videos = evaluation._rollout_videos("builtin:navtest", spec, tmp_path, "v2.2", 2, {})
    assert rendered == [(WorldModel, True, token, tmp_path / "videos" / f"{token}.mp4", "v2.2", 7) for token in tokens]
    assert videos == [Path(f"{tmp_path / 'videos' / token}.mp4.done") for token in tokens]


def test_the_rollout_videos_take_the_runs_split_options(tmp_path):
    with pytest.raises(SplitError) as err:
        evaluation._rollout_videos("builtin:navtest", WORLD_MODEL, tmp_path, "v1.1", 1, {"scene_filter": "f.yaml"})
    assert str(err.value) == "a scene filter applies to navsim: splits only, not to 'builtin:navtest'"


# ---- whole runs -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory):
    """a.npz: not a scene; b.npz: a straight road, which the constant-velocity agent drives to its end."""
    folder = tmp_path_factory.mktemp("scenes")
    (folder / "a.npz").write_text("not a scene")
    save_scene(generate_scene("straight", 1), folder / "b.npz")
    return folder


def _not_a_scene(folder: Path) -> str:
    return (f"SceneFormatError: {folder / 'a.npz'}: not a w0sim scene file (not a zip of .npy arrays; truncated or "
            "another format)")


def test_a_whole_closed_loop_run_of_a_scene_folder_reports_the_route_that_could_not_run(tmp_path, scene_folder):
    """The route that ran is Perfect; the Leaderboard's means count the one that could not run as 0 of 2 routes."""
    run = evaluate(str(scene_folder), CV, tmp_path, closed_loop=True, workers=1, limit=2)
    decisions = json.loads((tmp_path / "rows.jsonl").read_text().splitlines()[-1])["latency"]["decisions"]
    assert decisions > 10  # the straight road driven to its end, a decision every 0.5 s
    summary = (f"# constant_velocity on {scene_folder} (closed loop, Leaderboard 2.0 scoring)\n"
               "\n"
               "driving score 50.00, route completion 50.00, infraction penalty 0.500 over 2 routes\n"
               "\n"
               "| family | routes | driving score | route completion | penalty |\n"
               "|---|---|---|---|---|\n"
               "| scene files | 1 | 100.00 | 100.00 | 1.000 |\n"
               "\n"
               "| route | status | driving score | route completion | penalty |\n"
               "|---|---|---|---|---|\n"
               "| RouteScenario_1_rep0 | Perfect | 100.00 | 100.00 | 1.000 |\n"
               "\n"
               f"Policy time per decision: mean 250.0 ms, max 250.0 ms over {decisions} decisions.\n")
    assert run == Evaluation(summary, tmp_path / "results.json",
                             [("RouteScenario_0_rep0", f"loading the route's scene: {_not_a_scene(scene_folder)}")], [], 2,
                             "routes")
    assert (tmp_path / "summary.md").read_text() == summary
    manifest = json.loads((tmp_path / "manifest.json").read_text())  # the settings the run was given, as written
    assert (manifest["mode"], manifest["limit"], manifest["repetitions"]) == ("closed_loop", 2, 1)


def test_a_whole_one_shot_run_of_a_scene_folder_reports_the_scene_that_could_not_load(tmp_path, scene_folder):
    run = evaluate(str(scene_folder), CV, tmp_path, workers=1, limit=2)
    assert (run.scores_file, run.failures, run.videos, run.total, run.unit) == (
        tmp_path / "scores.csv", [("a", f"loading the scene: {_not_a_scene(scene_folder)}")], [], 2, "scenes")
    assert (tmp_path / "summary.md").read_text() == run.summary
    lines = run.summary.splitlines()
    assert lines[:5] == [f"# constant_velocity on {scene_folder} (PDMS v1.1)", "", "| scenes | count | failed | PDMS |",
                         "|---|---|---|---|", lines[4]]
    score = lines[4].split(" | ")[-1].removesuffix(" |")
    assert lines[4:] == [f"| all | 2 | 1 | {score} |", "| unknown | 1 | 1 | nan |", f"| straight | 1 | 0 | {score} |",
                         "", "Policy time per decision: mean 250.0 ms, max 250.0 ms over 1 decision."]


def test_a_whole_v2_2_run_writes_the_limit_and_the_human_filter_it_was_given_into_its_manifest(tmp_path, scene_folder):
    evaluate(str(scene_folder), CV, tmp_path, workers=1, limit=1, pdm_version="v2.2")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["mode"], manifest["limit"], manifest["pdm_version"], manifest["human_filter"]) == (
        "one_shot", 1, "v2.2", True)
