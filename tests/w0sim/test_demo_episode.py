"""w0sim.demo.run_demo in full, with a scripted environment and driver in place of the simulator: the refusals' whole
messages, the environment it asks for, the loop (one decision per step until terminated or truncated, one frame
before the first step and one after each), the mp4 at 2 fps, the contact sheet and every field of the result."""
from __future__ import annotations

from types import SimpleNamespace

import imageio.v2 as imageio
import numpy as np
import pytest

import w0sim.demo as demo
from sim.envs.frames import read_rgb
from w0sim.demo import DemoResult, run_demo

FRAME_SHAPE = (8, 12, 3)


def frame(k: int) -> np.ndarray:
    """Render k: a uniform colour (R, G, B distinct, so a channel swap shows)."""
    return np.full(FRAME_SHAPE, (10 + 20 * k, 5 + 10 * k, 200 - 20 * k), np.uint8)


class ScriptedEnv:
    """Ends after `ends_at` steps with `end` ("terminated" or "truncated"); records what it was given."""

    made: list = []

    def __init__(self, ends_at: int = 3, end: str = "terminated", **kwargs):
        self.kwargs, self.ends_at, self.end = kwargs, ends_at, end
        self.seeds, self.actions, self.renders = [], [], 0
        ScriptedEnv.made.append(self)

    def info(self, step: int) -> dict:
        return {"agent_input": ("input", step), "world": ("world", step), "route_fraction": 0.25 * step,
                "collisions": 10 + step, "red_lights": 20 + step, "offroad_steps": 30 + step}

    def reset(self, seed=None):
        self.seeds.append(seed)
        return "obs", self.info(0)

    def step(self, action):
        self.actions.append(action)
        n = len(self.actions)
        done = n >= self.ends_at
        return "obs", 0.0, done and self.end == "terminated", done and self.end == "truncated", self.info(n)

    def render(self):
        self.renders += 1
        return frame(self.renders - 1)


class ScriptedDriver:
    def compute_trajectory(self, agent_input, world):
        assert agent_input[1] == world[1], (agent_input, world)  # the same step's input and world
        return SimpleNamespace(poses=("plan", agent_input[1]))


@pytest.fixture
def scripted(monkeypatch):
    """run_demo with ScriptedEnv(**options) for ClosedLoopEnv; returns the made environments."""
    ScriptedEnv.made = []

    def use(**options):
        monkeypatch.setattr(demo, "ClosedLoopEnv", lambda **kwargs: ScriptedEnv(**options, **kwargs))
        monkeypatch.setattr(demo, "RouteFollowerAgent", ScriptedDriver)
        return ScriptedEnv.made

    return use


def test_the_demo_drives_until_terminated_and_writes_every_frame(scripted, tmp_path):
    made = scripted(ends_at=3, end="terminated")
    out = tmp_path / "nested" / "demo"
    result = run_demo(str(out), family="merge", seed=7, traffic="replay")
    assert result == DemoResult(out / "demo.mp4", out / "demo_contact_sheet.png", 3, 0.75, 13, 23, 33)
    [env] = made
    assert env.kwargs == {"families": ["merge"], "traffic": "replay", "render_mode": "rgb_array", "cameras": False,
                          "privileged": True}
    assert env.seeds == [7]
    assert env.actions == [("plan", 0), ("plan", 1), ("plan", 2)]  # each step's plan from the info it returned
    with imageio.get_reader(result.video) as reader:
        meta = reader.get_meta_data()
        frames = [f for f in reader]
    assert meta["fps"] == 2.0 and len(frames) == 4  # the first render, then one a step
    for k, got in enumerate(frames):
        assert np.abs(got.astype(int) - frame(k)).max() <= 6, k  # H.264's loss only
    # the contact sheet: the 4 frames in a row of 4 cells, lossless
    np.testing.assert_array_equal(read_rgb(str(result.contact_sheet)), np.concatenate([frame(k) for k in range(4)], axis=1))


def test_a_truncated_episode_ends_the_demo_too(scripted, tmp_path):
    made = scripted(ends_at=2, end="truncated")
    result = run_demo(tmp_path)
    assert result == DemoResult(tmp_path / "demo.mp4", tmp_path / "demo_contact_sheet.png", 2, 0.5, 12, 22, 32)
    assert made[0].actions == [("plan", 0), ("plan", 1)] and made[0].renders == 3


def test_the_defaults_are_an_intersection_seed_0_among_reactive_traffic(scripted, tmp_path):
    made = scripted(ends_at=1)
    result = run_demo(tmp_path)
    assert result.steps == 1
    assert made[0].kwargs == {"families": ["intersection"], "traffic": "reactive", "render_mode": "rgb_array",
                              "cameras": False, "privileged": True}
    assert made[0].seeds == [0]


def test_seed_0_is_allowed_and_a_negative_seed_is_refused(scripted, tmp_path):
    made = scripted(ends_at=1)
    assert run_demo(tmp_path / "zero", seed=0).steps == 1 and made[0].seeds == [0]
    with pytest.raises(ValueError) as err:
        run_demo(tmp_path / "neg", seed=-1)
    assert str(err.value) == "seed must be non-negative, got -1"
    assert len(made) == 1 and not (tmp_path / "neg").exists()


def test_an_unknown_family_or_traffic_is_refused_listing_the_choices(scripted, tmp_path):
    made = scripted(ends_at=1)
    with pytest.raises(ValueError) as err:
        run_demo(tmp_path, family="roundabout")
    assert str(err.value) == "unknown scene family 'roundabout'; choose one of straight, curve, intersection, t_junction, merge"
    with pytest.raises(ValueError) as err:
        run_demo(tmp_path, traffic="dense")
    assert str(err.value) == "unknown traffic 'dense'; choose one of reactive, replay"
    assert made == [] and not list(tmp_path.iterdir())
