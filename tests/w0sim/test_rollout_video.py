"""World-model rollout videos: `w0sim render`, `w0sim eval --videos` and `render_rollout` on the shipped tiny checkpoint.

One navtest scene is rendered once through each entry point (module fixtures) and the checks read the files back:
the mp4 (lossy H.264, so compared with a tolerance) and the contact sheet png (lossless, so compared exactly).

Layout of a video frame (and of each contact-sheet tile, one tile per frame in a single column):
    rows [0, 256): simulator camera | world model (frame 0: the current input frame) | 256 x 256 BEV
    rows [256, 296): white caption bar
The camera panels are the policy's frames (64 x 128 for the tiny model) scaled up by nearest neighbour to a
height of 256, under a black label bar over their top 23 rows.
"""
from __future__ import annotations

import csv
import json
import math
import re

import imageio.v2 as imageio_v2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agents.drivevla_w0 import DriveVLAW0Agent
from scenarios.generator import generate_scene
from scenarios.scene import load_scene, save_scene
from scenarios.splits import resolve_split
from sim.envs.frames import EXECUTED_COLOUR, read_rgb
from sim.envs.navsim_env import NavsimSceneEnv
from sim.render.camera import CameraRenderer, downsample_frames
from tests.conftest import REPO_ROOT
from w0sim.cli import app
from w0sim.rollout_video import RolloutVideo, render_rollout

CHECKPOINT = REPO_ROOT / "checkpoints" / "drivevla-w0-tiny"
CONFIG = json.loads((CHECKPOINT / "config.json").read_text())
PANEL_HEIGHT, CAPTION_HEIGHT, LABEL_ROWS = 256, 40, 23  # the label bar covers rows 0..22 of a camera panel
SCALE = PANEL_HEIGHT // CONFIG["image_height"]  # nearest-neighbour upscaling of the policy's frames
PANEL_WIDTH = CONFIG["image_width"] * SCALE
FRAME_SHAPE = (PANEL_HEIGHT + CAPTION_HEIGHT, 2 * PANEL_WIDTH + PANEL_HEIGHT, 3)
HORIZON_S = CONFIG["num_poses"] * CONFIG["pose_interval_s"]
STEPS = int(round(HORIZON_S / CONFIG["frame_interval_s"]))  # world-model frames over the plan's horizon
STRIDE = int(round(CONFIG["frame_interval_s"] / 0.1))  # 10 Hz simulator steps per world-model frame

runner = CliRunner()
pytestmark = pytest.mark.skipif(not (CHECKPOINT / "model.safetensors").is_file(),
                                reason=f"the shipped checkpoint {CHECKPOINT} is absent")


def squashed(text: str) -> str:
    """Output without whitespace: rich wraps long lines (and paths) at the console width."""
    return re.sub(r"\s+", "", text)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_video(path) -> np.ndarray:
    with imageio_v2.get_reader(path) as reader:  # not list(reader): its length hint is sys.maxsize
        return np.stack([frame for frame in reader])


def tiles(sheet: np.ndarray) -> np.ndarray:
    """The contact sheet's tiles (one column of video frames)."""
    assert sheet.shape[1:] == FRAME_SHAPE[1:] and sheet.shape[0] % FRAME_SHAPE[0] == 0, sheet.shape
    return sheet.reshape(-1, *FRAME_SHAPE)


def panels(frame: np.ndarray):
    """(simulator, world model, BEV) panels of a frame, camera panels without their label rows."""
    top = frame[:PANEL_HEIGHT]
    return (top[LABEL_ROWS:, :PANEL_WIDTH], top[LABEL_ROWS:, PANEL_WIDTH:2 * PANEL_WIDTH],
            top[:, 2 * PANEL_WIDTH:])


def upscaled(frame: np.ndarray) -> np.ndarray:
    """A policy-resolution frame as a panel shows it, without the label rows."""
    return np.repeat(np.repeat(frame, SCALE, axis=0), SCALE, axis=1)[LABEL_ROWS:]


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: fast on the shared 2-core machine, and the same float results in every call below
    (the CLI runs in this process; the planner's output moves in the last digits with the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    """The first navtest scene, generated and saved as a scene file (so `render` and `eval` see one scene)."""
    ref = resolve_split("builtin:navtest", 1)[0]
    path = tmp_path_factory.mktemp("scene") / "navtest_0.npz"
    save_scene(generate_scene(ref.family, ref.seed), path)
    assert load_scene(path).token == ref.token
    return path


@pytest.fixture(scope="module")
def scene(scene_file):
    return load_scene(scene_file)


@pytest.fixture(scope="module")
def rendered(one_thread, scene_file, tmp_path_factory):
    """`w0sim render` of the scene, seed 0."""
    out = tmp_path_factory.mktemp("render") / "rollout.mp4"
    result = invoke("render", "--checkpoint", CHECKPOINT, "--scene", scene_file, "--out", out, "--seed", 0)
    assert result.exit_code == 0, result.output
    return out, out.with_name("rollout_contact_sheet.png"), result.output


@pytest.fixture(scope="module")
def api(one_thread, scene, tmp_path_factory):
    """`render_rollout` with a fresh seed-0 agent (greedy world model, as `w0sim render` by default), and again with the
    same agent, its world model sampling from its 8 most likely codes with seed 1."""
    out = tmp_path_factory.mktemp("api")
    agent = DriveVLAW0Agent(CHECKPOINT, seed=0)
    first = render_rollout(agent, scene, out / "seed0.mp4", "v1.1", 0)
    other = render_rollout(agent, scene, out / "seed1.mp4", "v1.1", 1, top_k=8)
    return first, other


@pytest.fixture(scope="module")
def evaluated(one_thread, scene, tmp_path_factory):
    """`w0sim eval --agent drivevla_w0 --videos 1` on the first navtest scene."""
    out = tmp_path_factory.mktemp("eval")
    result = invoke("eval", "--agent", "drivevla_w0", "--checkpoint", CHECKPOINT, "--split", "builtin:navtest",
                    "--limit", 1, "--videos", 1, "--workers", 1, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_render_writes_one_frame_per_world_model_step_three_panels_wide(rendered, scene):
    video, sheet, output = rendered
    frames = read_video(video)
    assert STEPS >= 2
    assert frames.shape == (1 + STEPS, *FRAME_SHAPE)
    assert f"{1 + STEPS}frames" in squashed(output)
    assert squashed(str(sheet)) in squashed(output)
    # the caption bar is white with dark text
    bar = read_rgb(str(sheet))[PANEL_HEIGHT:FRAME_SHAPE[0]]
    white = (bar >= 250).all(axis=-1).mean()
    assert 0.6 < white < 1.0


def test_each_panel_is_labelled_in_white_on_a_black_bar_across_its_top(rendered):
    """Rows 0..22 of every frame (all three panels) are the label bar: black, with the labels' white anti-aliased
    text, 1 px thick, the only other (grey) pixels."""
    _, sheet, _ = rendered
    for tile in tiles(read_rgb(str(sheet))):
        bar = tile[:LABEL_ROWS].astype(int)
        assert (bar[..., 0] == bar[..., 1]).all() and (bar[..., 1] == bar[..., 2]).all()  # black, white or grey
        black = (bar == 0).all(axis=-1)
        assert 0.8 < black.mean() < 1.0 and bar.max() == 255  # mostly bar, and some text in pure white
        # strokes 1 px thick: 1.8 % of the bar is near-white; 2 px strokes take nearly twice that
        assert (bar >= 200).all(axis=-1).mean() < 0.025


def test_contact_sheet_holds_every_frame_in_order(rendered):
    video, sheet, _ = rendered
    frames, sheet_tiles = read_video(video), tiles(read_rgb(str(sheet)))
    assert len(sheet_tiles) == len(frames) == 1 + STEPS  # fewer than 12 frames: all of them, one column
    for k, tile in enumerate(sheet_tiles):
        distances = [mean_abs(tile, frame) for frame in frames]
        assert distances[k] < 2.0, (k, distances)  # H.264 loss only
        assert int(np.argmin(distances)) == k, (k, distances)
    # the frames differ: the ego moves and the world model predicts new frames
    assert all(mean_abs(sheet_tiles[k], sheet_tiles[k + 1]) > 1.0 for k in range(len(sheet_tiles) - 1))


def test_frame_zero_shows_the_simulator_camera_at_the_current_frame(rendered, scene):
    video, sheet, _ = rendered
    env = NavsimSceneEnv(scenes=[scene])
    _, info = env.reset(seed=0)
    current = upscaled(downsample_frames(info["agent_input"].cameras[-1], CONFIG["image_height"],
                                        CONFIG["image_width"]))
    simulator, world_model, _ = panels(tiles(read_rgb(str(sheet)))[0])
    np.testing.assert_array_equal(simulator, current)
    np.testing.assert_array_equal(world_model, current)  # frame 0: the input frame beside the ground truth
    simulator_mp4, world_model_mp4, _ = panels(read_video(video)[0])
    assert mean_abs(simulator_mp4, current) < 3.0
    assert mean_abs(world_model_mp4, current) < 3.0


def test_simulator_panels_follow_the_executed_plan(rendered, scene):
    """Frame k's left panel is the camera at the pose the tracked plan reaches k * frame_interval_s later,
    with the logged objects and lights of that time; the BEV shows the executed path."""
    _, sheet, _ = rendered
    env = NavsimSceneEnv(scenes=[scene])
    _, info = env.reset(seed=0)
    agent = DriveVLAW0Agent(CHECKPOINT, seed=0)
    agent.initialize()
    trajectory = agent.compute_trajectory(info["agent_input"], info.get("world"))
    _, _, _, _, result = env.step(trajectory.poses)
    executed = result["simulated_states"]
    camera = CameraRenderer(scene.map, env.camera)
    for k, tile in enumerate(tiles(read_rgb(str(sheet)))):
        t = min(scene.current_index + k * STRIDE, scene.num_steps - 1)
        pose = executed[min(k * STRIDE, len(executed) - 1), :3]
        truth = downsample_frames(camera.render(pose, scene.agents.at(t), scene.light_status_at(t)),
                                  CONFIG["image_height"], CONFIG["image_width"])
        simulator, _, bev = panels(tile)
        assert mean_abs(simulator, upscaled(truth)) < 0.5, k
        assert bev.shape == (PANEL_HEIGHT, PANEL_HEIGHT, 3)
        assert (bev == EXECUTED_COLOUR).all(axis=-1).sum() > 20, k


def test_rollout_errors_one_per_predicted_frame_and_match_the_panels(api):
    first, _ = api
    frames = read_video(first.video)
    assert first.frames == len(frames) == 1 + STEPS
    assert len(first.mean_abs_error) == first.frames - 1 == STEPS
    assert all(math.isfinite(e) and 0.0 < e < 255.0 for e in first.mean_abs_error)
    assert math.isfinite(first.score) and 0.0 <= first.score <= 1.0
    # each error is the mean |prediction - ground truth| over the policy's frame: the panels show all but the
    # rows under the label, so the error lies between the visible rows' share and that plus the hidden rows' most
    height = CONFIG["image_height"]
    hidden = -(-LABEL_ROWS // SCALE)  # policy rows touched by the label bar
    for k, tile in enumerate(tiles(read_rgb(str(first.contact_sheet)))[1:], start=1):
        simulator, world_model, _ = panels(tile)
        start = hidden * SCALE - LABEL_ROWS
        visible = mean_abs(simulator[start::SCALE, ::SCALE], world_model[start::SCALE, ::SCALE])
        low = visible * (height - hidden) / height
        assert low - 1e-6 <= first.mean_abs_error[k - 1] <= low + 255.0 * hidden / height + 1e-6, k
        assert visible > 0.5, k  # a prediction, not a copy of the ground truth


def test_same_seed_same_video_and_the_cli_matches_the_api(rendered, api):
    video, sheet, output = rendered
    first, _ = api
    np.testing.assert_array_equal(read_video(first.video), read_video(video))
    np.testing.assert_array_equal(read_rgb(str(first.contact_sheet)), read_rgb(str(sheet)))
    assert f"PDMS{first.score:.3f}" in squashed(output)


def test_sampling_the_world_model_changes_only_the_predictions(api):
    first, other = api
    assert other.score == first.score  # same agent, same plan
    assert other.mean_abs_error != first.mean_abs_error
    a, b = tiles(read_rgb(str(first.contact_sheet))), tiles(read_rgb(str(other.contact_sheet)))
    for k in range(len(a)):
        sim_a, wm_a, bev_a = panels(a[k])
        sim_b, wm_b, bev_b = panels(b[k])
        np.testing.assert_array_equal(sim_a, sim_b)
        np.testing.assert_array_equal(bev_a, bev_b)
        if k == 0:
            np.testing.assert_array_equal(wm_a, wm_b)
        else:
            assert mean_abs(wm_a, wm_b) > 0.5, k


def test_eval_videos_writes_the_render_video_and_the_csv_score(evaluated, rendered, api, scene):
    out, output = evaluated
    video, sheet = out / "videos" / f"{scene.token}.mp4", out / "videos" / f"{scene.token}_contact_sheet.png"
    assert video.is_file() and sheet.is_file(), sorted(p.name for p in out.rglob("*"))
    assert squashed(str(video)) in squashed(output)
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted([video.name, sheet.name])  # one scene
    # the same scene, checkpoint and seed as `w0sim render`: the same frames
    np.testing.assert_array_equal(read_video(video), read_video(rendered[0]))
    np.testing.assert_array_equal(read_rgb(str(sheet)), read_rgb(str(rendered[1])))
    rows = {row["token"]: row for row in csv.DictReader((out / "scores.csv").open())}
    assert rows[scene.token]["valid"].lower() == "true"
    assert float(rows[scene.token]["score"]) == pytest.approx(api[0].score, rel=1e-12, abs=1e-12)


def test_eval_videos_without_a_world_model_is_refused_before_the_run(one_thread, tmp_path):
    out = tmp_path / "cv"
    result = invoke("eval", "--agent", "constant_velocity", "--split", "builtin:navtest", "--limit", 1,
                    "--videos", 1, "--workers", 1, "--out", out)
    assert result.exit_code == 2, result.output
    assert "needsanagentwithaworldmodel;constant_velocityhasnone" in squashed(result.output), result.output
    assert not (out / "rows.jsonl").exists()  # refused before any scene ran


def test_render_with_a_bad_checkpoint_or_scene_exits_2_and_writes_nothing(one_thread, scene_file, tmp_path):
    empty = tmp_path / "empty_checkpoint"
    empty.mkdir()
    result = invoke("render", "--checkpoint", empty, "--scene", scene_file, "--out", tmp_path / "a.mp4")
    assert result.exit_code == 2, result.output
    assert "empty_checkpoint" in squashed(result.output)
    missing = tmp_path / "no_such_scene.npz"
    result = invoke("render", "--checkpoint", CHECKPOINT, "--scene", missing, "--out", tmp_path / "b.mp4")
    assert result.exit_code == 2, result.output
    assert "no_such_scene.npz" in squashed(result.output)
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob("*.png"))


def test_render_names_the_score_of_the_version_it_scored(scene_file, tmp_path, monkeypatch):
    """`w0sim render --pdm-version v2.2` reports EPDMS, v1.1 PDMS (the video's caption names it the same way)."""
    import w0sim.rollout_video

    asked = []

    def fake_render(agent, scene, out, pdm_version, seed, top_k):
        asked.append((seed, top_k))
        return RolloutVideo(out, out.with_name("sheet.png"), 3, 0.25, [1.0, 2.0])

    monkeypatch.setattr(w0sim.rollout_video, "render_rollout", fake_render)
    for version, name in (("v2.2", "EPDMS"), ("v1.1", "PDMS")):
        result = invoke("render", "--checkpoint", CHECKPOINT, "--scene", scene_file, "--out", tmp_path / "r.mp4",
                        "--pdm-version", version, *(["--top-k", "5", "--seed", "3"] if version == "v1.1" else []))
        assert result.exit_code == 0, result.output
        assert squashed(result.output) == squashed(f"{tmp_path / 'r.mp4'} (3 frames, {name} 0.250); "
                                                   f"{tmp_path / 'sheet.png'}")
    assert asked == [(0, 0), (3, 5)]  # greedy by default; --top-k samples with --seed
