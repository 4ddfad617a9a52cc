"""2 Hz log frames and NAVSIM's 10 Hz interpolation; one-shot scoring reads nothing else of a scene."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from scenarios.generator import generate_scene
from scenarios.log_frames import FRAME_STRIDE, frame_steps, hold_frames, interpolate_states, interpolate_tracks, window_steps
from sim.envs.scene_scoring import SceneScorer
from sim.state import StateIndex, TrafficLightStatus
from sim.world_view import logged_ego_state
from tests.envs.helpers import logged_future_trajectory


def _frames(**arrays):
    return {name: np.asarray(arrays.get(name, np.zeros_like(arrays["x"])), dtype=np.float64)
            for name in ("x", "y", "heading", "vx", "vy")}


def test_frames_are_exact_and_steps_between_are_linear():
    x = np.array([[0.0], [5.0], [7.0]])
    out, valid = interpolate_tracks(_frames(x=x), np.ones((3, 1), bool))
    assert out["x"].shape == (11, 1) and valid.all()
    np.testing.assert_array_equal(out["x"][::FRAME_STRIDE, 0], x[:, 0])
    np.testing.assert_allclose(out["x"][:6, 0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(out["x"][5:, 0], [5, 5.4, 5.8, 6.2, 6.6, 7.0])


def test_a_track_is_absent_outside_its_frames_and_bridged_across_a_missing_frame():
    x = np.array([[0.0], [99.0], [10.0], [20.0]])
    seen = np.array([[False], [True], [False], [True]])
    x[1, 0] = 0.0
    out, valid = interpolate_tracks(_frames(x=x), seen)
    assert not valid[:5, 0].any() and valid[5:, 0].all()
    # Frame 2 is missing: the track moves from 0 (frame 1) to 20 (frame 3) in 10 steps.
    np.testing.assert_allclose(out["x"][5:, 0], np.linspace(0.0, 20.0, 11))


def test_heading_takes_the_short_way_round():
    heading = np.array([[np.pi - 0.1], [-np.pi + 0.1]])
    out, _ = interpolate_tracks(_frames(x=np.zeros((2, 1)), heading=heading), np.ones((2, 1), bool))
    assert np.all(np.abs(out["heading"][:, 0]) > np.pi - 0.11)
    assert abs(abs(out["heading"][2, 0]) - (np.pi - 0.02)) < 1e-12


def test_a_single_frame_track_is_held_only_when_asked():
    x = np.array([[0.0], [3.0], [0.0]])
    seen = np.array([[False], [True], [False]])
    _, valid = interpolate_tracks(_frames(x=x), seen)
    assert valid[:, 0].tolist() == [i == 5 for i in range(11)]
    held, valid = interpolate_tracks(_frames(x=x), seen, hold_single=True)
    assert valid.all() and np.all(held["x"] == 3.0)


def test_ego_states_keep_what_a_log_holds():
    frames = np.arange(22, dtype=np.float64).reshape(2, 11)
    frames[:, StateIndex.HEADING] = 0.0
    states = interpolate_states(frames)
    np.testing.assert_array_equal(states[[0, -1]], logged_ego_state(frames))
    assert not states[:, StateIndex.STEERING_ANGLE:].any()
    np.testing.assert_allclose(states[2, StateIndex.X], 0.0 + 0.4 * 11)


def test_steps_of_frames_and_windows():
    assert frame_steps(15, 96).tolist() == list(range(0, 96, 5))
    assert frame_steps(7, 20).tolist() == [2, 7, 12, 17]
    assert window_steps(15, 4, 30).tolist() == [15, 20, 25, 25]
    assert hold_frames(np.array([1, 2, 3])).tolist() == [1] * 5 + [2] * 5 + [3]


@pytest.mark.parametrize("version", ["v1.1", "v2.2"])
def test_scoring_reads_only_the_logged_frames(version):
    """Moving objects between frames, changing the ego's steering or yellow for green leaves every score unchanged."""
    scene = generate_scene("intersection", 4)
    changed = copy.deepcopy(scene)
    between = np.ones(scene.num_steps, dtype=bool)
    between[frame_steps(scene.current_index, scene.num_steps)] = False
    changed.agents.x[between] += 3.0
    changed.ego_log[:, StateIndex.STEERING_ANGLE:] += 0.05
    green = changed.light_status == TrafficLightStatus.GREEN
    changed.light_status[green] = TrafficLightStatus.YELLOW  # a log knows red or not red
    trajectory = logged_future_trajectory(scene)
    rows, score = SceneScorer(scene, version).score(trajectory, 0.5)
    rows_changed, score_changed = SceneScorer(changed, version).score(trajectory, 0.5)
    assert score == score_changed
    np.testing.assert_array_equal(rows.states, rows_changed.states)
