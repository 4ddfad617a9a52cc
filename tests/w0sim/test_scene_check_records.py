"""w0sim.scene_check.check_scene's records in full, with scripted stand-ins for the loader, the renderer, the
environment and the route follower: every field of every SceneCheck, the whole reason of each failure, what each
stand-in was given, and the decision loop's bounds (the default 400 decisions, terminated or truncated ends it)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import w0sim.scene_check as scene_check
from scenarios.scene import SceneFormatError
from sim.map import MapError
from sim.render.camera import CameraConfig
from w0sim.scene_check import SceneCheck, check_scene

PATH = "scenes/00001_curve_7.npz"
GOOD_FRAME = np.full((4, 6, 3), 9, np.uint8)


def make_scene():
    return SimpleNamespace(family="curve", map="the map", initial_ego_state="ego state", current_index=4,
                           agents=SimpleNamespace(at=lambda t: ("agents at", t)), light_status_at=lambda t: ("lights at", t),
                           route="the route")


class Script:
    """What the stand-ins do and what they were given."""

    def __init__(self, frame=GOOD_FRAME, ends_at=None, end="terminated", nan_at=None, raises=None):
        self.frame, self.ends_at, self.end, self.nan_at, self.raises = frame, ends_at, end, nan_at, raises
        self.scene = make_scene()
        self.loaded, self.renderers, self.composites, self.envs, self.seeds, self.plans, self.inputs = ([] for _ in range(7))

    def info(self, step: int) -> dict:
        return {"agent_input": ("input", step), "world": ("world", step), "route_fraction": step / 8, "collisions": step % 3}

    def install(self, monkeypatch):
        script = self

        def load_scene(path):
            script.loaded.append(path)
            return script.scene

        class Renderer:
            def __init__(self, *args):
                script.renderers.append(args)

            def composite(self, *args):
                script.composites.append(args)
                if script.raises is not None:
                    raise_deep(script.raises)
                return script.frame

        class Env:
            def __init__(self, **kwargs):
                script.envs.append(kwargs)

            def reset(self, seed=None):
                script.seeds.append(seed)
                return "obs", script.info(0)

            def step(self, plan):
                script.plans.append(plan)
                n = len(script.plans)
                done = script.ends_at is not None and n >= script.ends_at
                return "obs", 0.0, done and script.end == "terminated", done and script.end == "truncated", script.info(n)

        class Driver:
            def compute_trajectory(self, agent_input, world):
                script.inputs.append((agent_input, world))
                decision = len(script.inputs)
                value = np.nan if decision == script.nan_at else float(decision)
                return SimpleNamespace(poses=np.full((2, 3), value))

        monkeypatch.setattr(scene_check, "load_scene", load_scene)
        monkeypatch.setattr(scene_check, "FrameRenderer", Renderer)
        monkeypatch.setattr(scene_check, "ClosedLoopEnv", Env)
        monkeypatch.setattr(scene_check, "RouteFollowerAgent", Driver)
        return self


def raise_deep(exc):
    """Two frames below the renderer's composite, so that a traceback cut at 3 frames leaves this one out."""
    _deeper(exc)


def _deeper(exc):
    raise exc


@pytest.fixture
def script(monkeypatch):
    return lambda **options: Script(**options).install(monkeypatch)


def test_a_scene_that_drives_to_its_end_is_ok_with_the_last_steps_figures(script):
    run = script(ends_at=2)
    assert check_scene(PATH, max_decisions=5) == SceneCheck(PATH, "curve", True, "", 2, 0.25, 2)
    assert run.loaded == [Path(PATH)]
    assert run.renderers == [("the map", CameraConfig())]
    assert run.composites == [("ego state", ("agents at", 4), ("lights at", 4), "the route")]
    assert run.envs == [{"scenes": [run.scene], "cameras": False, "privileged": True}]
    assert run.seeds == [0]
    assert run.inputs == [(("input", 0), ("world", 0)), (("input", 1), ("world", 1))]  # each step's info
    np.testing.assert_array_equal(np.array(run.plans), [np.full((2, 3), 1.0), np.full((2, 3), 2.0)])


def test_a_truncated_episode_ends_the_check_as_well(script):
    run = script(ends_at=3, end="truncated")
    assert check_scene(Path(PATH), max_decisions=5) == SceneCheck(PATH, "curve", True, "", 3, 0.375, 0)
    assert len(run.plans) == 3


def test_an_episode_that_never_ends_stops_after_max_decisions(script):
    run = script()
    assert check_scene(PATH, max_decisions=3) == SceneCheck(PATH, "curve", True, "", 3, 0.375, 0)
    assert len(run.plans) == 3


def test_by_default_a_check_drives_400_decisions_at_most(script):
    run = script()
    assert check_scene(PATH) == SceneCheck(PATH, "curve", True, "", 400, 50.0, 1)
    assert len(run.plans) == 400


def test_non_finite_poses_fail_the_check_at_the_decision_that_planned_them(script):
    run = script(nan_at=3)
    assert check_scene(PATH, max_decisions=5) == SceneCheck(PATH, "curve", False, "route follower planned non-finite poses",
                                                             3, 0.0, 0)
    assert len(run.plans) == 2  # the non-finite plan is not driven


@pytest.mark.parametrize("frame", [np.zeros((4, 6, 3), np.uint8), np.ones((4, 6), np.uint8)],
                         ids=["black", "two-dimensional"])
def test_a_black_or_flat_rendered_frame_fails_the_check_before_driving(script, frame):
    run = script(frame=frame)
    assert check_scene(PATH, max_decisions=3) == SceneCheck(PATH, "curve", False, "rendered an empty frame", 0, 0.0, 0)
    assert run.envs == []


def test_a_malformed_file_fails_with_the_loaders_reason_and_an_unknown_family(monkeypatch):
    def load_scene(path):
        raise SceneFormatError(f"{path}: no header entry; not a w0sim scene file")

    monkeypatch.setattr(scene_check, "load_scene", load_scene)
    assert check_scene(PATH) == SceneCheck(PATH, "?", False, f"{PATH}: no header entry; not a w0sim scene file", 0, 0.0, 0)


def test_a_map_error_fails_with_the_file_and_the_maps_reason(script):
    script(raises=MapError("area 'bow' cannot be combined"))
    assert check_scene(PATH) == SceneCheck(PATH, "curve", False, f"{PATH}: MapError: area 'bow' cannot be combined",
                                           0, 0.0, 0)


def test_any_other_error_fails_with_its_type_message_and_the_top_three_frames_of_its_traceback(script):
    script(raises=RuntimeError("renderer out of order"))
    check = check_scene(PATH)
    assert dataclasses.replace(check, reason="") == SceneCheck(PATH, "curve", False, "", 0, 0.0, 0)
    frame = r'  File "[^"\n]+{file}", line \d+, in {function}\n(?:    .*\n)+'
    pattern = ("RuntimeError: renderer out of order\nTraceback \\(most recent call last\\):\n"
               + frame.format(file=r"scene_check\.py", function=r"\w*check_scene\w*")
               + frame.format(file=r"test_scene_check_records\.py", function="composite")
               + frame.format(file=r"test_scene_check_records\.py", function="raise_deep")
               + "RuntimeError: renderer out of order\n")
    assert re.fullmatch(pattern, check.reason), check.reason
