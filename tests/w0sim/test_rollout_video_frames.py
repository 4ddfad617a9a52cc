"""w0sim.rollout_video in full, with scripted stand-ins for the agent, the environment and the renderers: the label
bar, the nearest-neighbour panels, which pose, time and frame each panel of each video frame shows, their labels, the
caption, the frame rate, the contact sheet and every field of the RolloutVideo.

A video frame (policy frames of 8 x 16 scaled by 32 to 256 x 512):
    rows [0, 256): simulator camera (512) | world model (512; frame 0: the current input frame) | BEV (256)
    rows [256, 296): white caption bar, the text in black at (8, 26)
"""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import w0sim.rollout_video as rollout_video
from sim.envs.frames import COMPOSITE_BEV, EXECUTED_COLOUR, LOGGED_COLOUR, PLANNED_COLOUR, read_rgb
from w0sim.rollout_video import RolloutVideo, _label, _panel, render_rollout

H, W = 8, 16  # the policy's frames
SCALE = 32  # 256 / 8
NOW, NUM_STEPS = 3, 50
FONT = cv2.FONT_HERSHEY_SIMPLEX


def pattern(seed: int, high: int = 200) -> np.ndarray:
    """A policy-size frame with every pixel's colour drawn at random (nearest-neighbour scaling shows as blocks)."""
    return np.random.default_rng(seed).integers(0, high, (H, W, 3), dtype=np.uint8)


def doubled(image: np.ndarray) -> np.ndarray:
    """A camera-size frame (2x): area-averaging it back to the policy's size gives `image` exactly."""
    return np.repeat(np.repeat(image, 2, axis=-3), 2, axis=-2)


def upscaled(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(image, SCALE, axis=0), SCALE, axis=1)


def truth_at(t: int) -> np.ndarray:
    return pattern(1000 + t)


def bev_colour(call: int) -> tuple:
    return (40 + call, 90 + call, 140 + call)


def caption_bar(text: str, width: int) -> np.ndarray:
    """The caption as documented: a white bar 40 rows high, the text black, Hershey simplex 0.5, 1 px, anti-aliased,
    its baseline starting at (8, 26)."""
    bar = np.full((40, width, 3), 255, np.uint8)
    cv2.putText(bar, text, (8, 26), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


class Stage:
    """The stand-ins and what each was given."""

    def __init__(self, interval=2.0, horizon=6.0, result=None, score=0.123456, executed_rows=45):
        self.interval, self.horizon, self.score = interval, horizon, score
        self.calls = {name: [] for name in ("initialize", "env", "reset", "plan", "step", "predict", "camera",
                                            "render", "channels", "rgb", "polylines", "label", "mp4")}
        self.executed = np.arange(executed_rows * 5, dtype=float).reshape(executed_rows, 5)
        self.planned = np.arange(8 * 3, dtype=float).reshape(8, 3) + 0.5
        self.result = {"simulated_states": self.executed, "trajectory_global": self.planned,
                       "scores": {"no_at_fault_collisions": 1.0, "score": 0.9, "ego_progress": 0.5678}} \
            if result is None else result
        self.cameras = np.stack([doubled(pattern(500 + i)) for i in range(3)])
        self.scene = SimpleNamespace(
            current_index=NOW, num_steps=NUM_STEPS, initial_ego_state=np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
            ego_log=np.arange(NUM_STEPS * 4, dtype=float).reshape(NUM_STEPS, 4), map="the map", route="the route",
            agents=SimpleNamespace(at=lambda t: ("agents", t)), light_status_at=lambda t: ("lights", t),
            family="curve", token="tok123")
        self.agent_input = SimpleNamespace(cameras=self.cameras)
        self.steps = int(round(horizon / interval))
        self.predicted = None

    def ts(self):
        """The simulator time of each frame: now + k * stride, at most the scene's last step."""
        stride = int(round(self.interval / 0.1))
        return [min(NOW + k * stride, NUM_STEPS - 1) for k in range(self.steps + 1)]

    def install(self, monkeypatch, tmp_path):
        stage, calls = self, self.calls

        class Agent:
            privileged = True
            frame_interval_s = stage.interval

            def initialize(self):
                calls["initialize"].append(True)

            def compute_trajectory(self, agent_input, world):
                calls["plan"].append((agent_input, world))
                return SimpleNamespace(poses="the poses", sampling=SimpleNamespace(time_horizon=stage.horizon))

            def predict_frames(self, agent_input, steps, seed, top_k=0):
                calls["predict"].append((agent_input, steps, seed))
                # frame k predicts the truth at frame k's time, off by 10 * k everywhere
                stage.predicted = np.stack([truth_at(t) + 10 * k for k, t in enumerate(stage.ts()) if k > 0])
                return stage.predicted

        class Env:
            camera = "the camera config"

            def __init__(self, **kwargs):
                calls["env"].append(kwargs)

            def reset(self, seed=None):
                calls["reset"].append(seed)
                return "obs", {"agent_input": stage.agent_input, "world": "the world"}

            def step(self, poses):
                calls["step"].append(poses)
                return "obs", stage.score, True, False, stage.result

        class Camera:
            def __init__(self, *args):
                calls["camera"].append(args)

            def render(self, pose, agents, lights):
                calls["render"].append((tuple(pose), agents, lights))
                return doubled(truth_at(agents[1]))

        def render_bev_channels(road_map, pose, agents, route, config):
            calls["channels"].append((road_map, tuple(pose), agents, route, config))
            return ("channels", len(calls["channels"]) - 1)

        def bev_to_rgb(channels):
            calls["rgb"].append(channels)
            return np.full((64, 64, 3), bev_colour(channels[1]), np.uint8)

        def draw_bev_polylines(bev, pose, polylines, colours, config, **kwargs):
            calls["polylines"].append((bev[0, 0].tolist(), tuple(pose), [p.tolist() for p in polylines], colours,
                                       config, kwargs))

        def label(image, text):
            calls["label"].append((image.copy(), text))
            return image

        def write_mp4(frames, path, **kwargs):
            calls["mp4"].append(([f.copy() for f in frames], path, kwargs))
            return tmp_path / "written.mp4"

        for name, value in {"NavsimSceneEnv": Env, "CameraRenderer": Camera, "render_bev_channels": render_bev_channels,
                            "bev_to_rgb": bev_to_rgb, "draw_bev_polylines": draw_bev_polylines, "_label": label,
                            "write_mp4": write_mp4}.items():
            monkeypatch.setattr(rollout_video, name, value)
        return Agent()


@pytest.fixture
def stage(monkeypatch, tmp_path):
    def make(**options):
        s = Stage(**options)
        return s, s.install(monkeypatch, tmp_path)

    return make


def test_a_label_is_a_black_bar_over_the_top_23_rows_with_the_text_in_white():
    image = np.random.default_rng(0).integers(60, 250, (40, 300, 3), dtype=np.uint8)
    before = image.copy()
    out = _label(image, "world model, t+2 s")
    np.testing.assert_array_equal(image, before)  # a copy is labelled
    np.testing.assert_array_equal(out[23:], image[23:])
    bar = out[:23].astype(int)
    assert (bar[..., 0] == bar[..., 1]).all() and (bar[..., 1] == bar[..., 2]).all()  # black, white or grey
    assert (bar[:, :5] == 0).all() and (bar[:, 200:] == 0).all()  # the bar spans the width; the text starts at x 6
    expected = image.copy()
    expected[:23] = 0
    cv2.putText(expected, "world model, t+2 s", (6, 16), FONT, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    np.testing.assert_array_equal(out, expected)


def test_a_panel_is_the_frame_scaled_to_256_rows_by_nearest_neighbour():
    image = pattern(3)
    np.testing.assert_array_equal(_panel(image, 512), upscaled(image))
    assert _panel(image, 100).shape == (256, 100, 3)


def test_each_frame_shows_the_simulator_the_world_model_and_the_bev_at_the_executed_pose(stage, tmp_path):
    """interval 2 s, horizon 6 s: 3 world-model steps, 4 frames; a frame every 20 simulator steps (0.1 s) from step 3
    (3, 23, 43, then 63 held at the scene's last step 49), at executed states 0, 20, 40 and 44 (the last of 45)."""
    s, agent = stage()
    out = tmp_path / "video" / "rollout.mp4"
    (tmp_path / "video").mkdir()
    result = render_rollout(agent, s.scene, str(out))
    assert s.ts() == [3, 23, 43, 49]
    calls = s.calls
    assert calls["initialize"] == [True]
    assert calls["env"] == [{"scenes": [s.scene], "pdm_version": "v1.1", "privileged": True}]
    assert calls["reset"] == [0]
    assert calls["plan"] == [(s.agent_input, "the world")]
    assert calls["step"] == ["the poses"]
    assert calls["predict"] == [(s.agent_input, 3, 0)]  # 6 s / 2 s world-model steps, the default seed 0
    assert calls["camera"] == [("the map", "the camera config")]
    poses = [tuple(s.executed[i, :3]) for i in (0, 20, 40, 44)]
    assert calls["render"] == [(pose, ("agents", t), ("lights", t)) for pose, t in zip(poses, s.ts())]
    assert calls["channels"] == [("the map", pose, ("agents", t), "the route", COMPOSITE_BEV)
                                 for pose, t in zip(poses, s.ts())]
    assert calls["rgb"] == [("channels", k) for k in range(4)]
    logged = s.scene.ego_log[NOW:, :2].tolist()
    assert calls["polylines"] == [
        (list(bev_colour(k)), pose, [logged, s.planned[:, :2].tolist(), s.executed[:, :2].tolist()],
         [LOGGED_COLOUR, PLANNED_COLOUR, EXECUTED_COLOUR], COMPOSITE_BEV, {"thickness": 2, "point_radius": 0})
        for k, pose in enumerate(poses)]
    # the labels, and the panels they were put on
    guesses = [pattern(500 + 2)] + list(s.predicted)
    texts = [text for _, text in calls["label"]]
    assert texts == ["simulator, t+0 s", "current frame (input)", "BEV",
                     "simulator, t+2 s", "world model, t+2 s", "BEV",
                     "simulator, t+4 s", "world model, t+4 s", "BEV",
                     "simulator, t+6 s", "world model, t+6 s", "BEV"]
    text = "curve tok123  PDMS 0.123  NC 1.00 EP 0.57"
    [(frames, path, kwargs)] = calls["mp4"]
    assert path == out and kwargs == {"fps": 1.0}
    assert len(frames) == 4
    for k, t in enumerate(s.ts()):
        simulator, world_model, bev = (image for image, _ in calls["label"][3 * k:3 * k + 3])
        np.testing.assert_array_equal(simulator, upscaled(truth_at(t)))
        np.testing.assert_array_equal(world_model, upscaled(guesses[k]))
        np.testing.assert_array_equal(bev, np.full((256, 256, 3), bev_colour(k), np.uint8))
        expected = np.concatenate([np.concatenate([simulator, world_model, bev], axis=1), caption_bar(text, 1280)])
        np.testing.assert_array_equal(frames[k], expected)
    sheet = tmp_path / "video" / "rollout_contact_sheet.png"
    np.testing.assert_array_equal(read_rgb(str(sheet)), np.concatenate(frames, axis=0))  # one column, every frame
    assert result == RolloutVideo(tmp_path / "written.mp4", sheet, 4, 0.123456, [10.0, 20.0, 30.0])


def test_without_an_executed_path_the_frames_stay_at_the_initial_pose_and_draw_the_logged_path_only(stage, tmp_path):
    """No simulated states, planned path or scores: every frame at the scene's initial pose, only the logged path in
    the BEV, an empty score caption; v2.2 scores EPDMS; the world-model seed is passed on."""
    s, agent = stage(interval=1.0, horizon=2.0, result={}, score=0.5)
    result = render_rollout(agent, s.scene, tmp_path / "r.mp4", "v2.2", 7)
    assert s.ts() == [3, 13, 23]
    calls = s.calls
    assert calls["env"] == [{"scenes": [s.scene], "pdm_version": "v2.2", "privileged": True}]
    assert calls["predict"] == [(s.agent_input, 2, 7)]
    assert calls["render"] == [((1.0, 2.0, 3.0), ("agents", t), ("lights", t)) for t in (3, 13, 23)]
    logged = s.scene.ego_log[NOW:, :2].tolist()
    assert [(p[1], p[2], p[3]) for p in calls["polylines"]] == [((1.0, 2.0, 3.0), [logged], [LOGGED_COLOUR])] * 3
    assert [text for _, text in calls["label"]][3:] == ["simulator, t+1 s", "world model, t+1 s", "BEV",
                                                         "simulator, t+2 s", "world model, t+2 s", "BEV"]
    [(frames, _, _)] = calls["mp4"]
    for frame in frames:
        np.testing.assert_array_equal(frame[256:], caption_bar("curve tok123  EPDMS 0.500  ", 1280))
    assert result == RolloutVideo(tmp_path / "written.mp4", tmp_path / "r_contact_sheet.png", 3, 0.5, [10.0, 20.0])


def test_panels_at_sub_second_intervals_are_labelled_with_the_fraction(stage, tmp_path):
    """A 0.5 s world-model interval labels its panels t+0.5 s, t+1 s, t+1.5 s (not rounded to whole seconds)."""
    s, agent = stage(interval=0.5, horizon=1.5, result={}, score=0.5)
    render_rollout(agent, s.scene, tmp_path / "r.mp4", "v1.1", 0)
    assert [text for _, text in s.calls["label"]][3:] == [
        "simulator, t+0.5 s", "world model, t+0.5 s", "BEV", "simulator, t+1 s", "world model, t+1 s", "BEV",
        "simulator, t+1.5 s", "world model, t+1.5 s", "BEV"]
