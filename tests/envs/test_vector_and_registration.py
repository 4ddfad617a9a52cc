"""Registration of the environment ids, vector environments, and a smoke check of generated scenes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest

import sim.envs
from scenarios.generator import FAMILIES, generate_scene
from scenarios.scene import save_scene
from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.envs.navsim_env import NavsimSceneEnv
from tests.conftest import REPO_ROOT
from tests.envs.helpers import straight_trajectory
from w0sim.scene_check import check_scene

NUM_ENVS = 4


# --- registration ---------------------------------------------------------------------------------


def test_ids_are_registered_after_import():
    assert set(sim.envs.ENV_IDS) == {"w0sim/NavsimScene-v0", "w0sim/ClosedLoop-v0", "w0sim/Carla-v0"}
    for env_id in sim.envs.ENV_IDS:
        assert env_id in gym.registry


@pytest.mark.parametrize(("env_id", "cls"), [("w0sim/NavsimScene-v0", NavsimSceneEnv), ("w0sim/ClosedLoop-v0", ClosedLoopEnv)])
def test_make_passes_kwargs(env_id, cls):
    env = gym.make(env_id, cameras=False, render_mode="rgb_array")
    assert isinstance(env.unwrapped, cls)
    assert "cameras" not in env.observation_space.spaces
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert "token" in info
    frame = env.render()
    assert frame.ndim == 3 and frame.dtype == np.uint8
    env.close()


def test_reimporting_does_not_fail():
    import importlib

    importlib.reload(sim.envs)  # registration is idempotent
    assert "w0sim/ClosedLoop-v0" in gym.registry


FRESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import gymnasium
    assert not any(m == "sim.envs" or m.startswith("sim.envs.") for m in sys.modules), "sim.envs imported early"
    env = gymnasium.make(sys.argv[1], cameras=False)
    obs, info = env.reset(seed=0)
    action = env.action_space.sample() * 0 + 1.0
    _, reward, terminated, truncated, step_info = env.step(action)
    print(json.dumps({"class": type(env.unwrapped).__name__, "token": info["token"],
                      "keys": sorted(obs), "terminated": bool(terminated)}))
""")


@pytest.mark.parametrize(("env_id", "cls", "one_step"), [
    ("sim.envs:w0sim/NavsimScene-v0", "NavsimSceneEnv", True),
    ("sim.envs:w0sim/ClosedLoop-v0", "ClosedLoopEnv", False),
])
def test_make_in_fresh_interpreter_without_importing_sim_envs(env_id, cls, one_step):
    result = subprocess.run([sys.executable, "-c", FRESH_SCRIPT, env_id], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["class"] == cls
    assert out["keys"] == ["driving_command", "ego_acceleration", "ego_poses", "ego_velocity"]
    assert out["terminated"] is one_step
    # The same seed gives the same scene in that process as in this one.
    here = gym.make(env_id.split(":", 1)[1], cameras=False)
    assert here.reset(seed=0)[1]["token"] == out["token"]


# --- vector environments --------------------------------------------------------------------------


def _make_closed_loop(cameras: bool = False):
    return lambda: gym.make("w0sim/ClosedLoop-v0", cameras=cameras)


def _batched_actions(speeds):
    return np.stack([straight_trajectory(v) for v in speeds])


def _run_vector(vector_cls, cameras: bool = False, steps: int = 3, **kwargs):
    venv = vector_cls([_make_closed_loop(cameras) for _ in range(NUM_ENVS)], **kwargs)
    try:
        obs, info = venv.reset(seed=11)
        record = {"reset_obs": obs, "tokens": list(info["token"]), "families": list(info["family"]), "steps": []}
        assert venv.single_action_space.shape == (8, 3)
        assert venv.action_space.shape == (NUM_ENVS, 8, 3)
        for k in range(steps):
            obs, reward, terminated, truncated, info = venv.step(_batched_actions([4.0, 6.0, 8.0, 10.0]))
            record["steps"].append((obs, reward, terminated, truncated, info))
        return record
    finally:
        venv.close()


def _check_batched(record, cameras: bool):
    expected = {"ego_poses": (NUM_ENVS, 4, 3), "ego_velocity": (NUM_ENVS, 4, 2),
                "ego_acceleration": (NUM_ENVS, 4, 2), "driving_command": (NUM_ENVS, 4)}
    if cameras:
        expected["cameras"] = (NUM_ENVS, 4, 128, 256, 3)
    for obs in [record["reset_obs"]] + [s[0] for s in record["steps"]]:
        assert {k: v.shape for k, v in obs.items()} == expected
    for _, reward, terminated, truncated, info in record["steps"]:
        assert reward.shape == (NUM_ENVS,) and terminated.shape == (NUM_ENVS,) and truncated.shape == (NUM_ENVS,)
        assert not terminated.any() and not truncated.any()
        assert (reward >= 0).all()
        np.testing.assert_allclose(info["time_s"], info["time_s"][0])
    # Each sub-environment draws its own scene.
    assert len(set(record["tokens"])) == NUM_ENVS
    # After the steps, every sub-environment has moved forwards (the oldest history pose lies behind).
    last_obs = record["steps"][-1][0]
    assert (last_obs["ego_poses"][:, -1] == 0).all()
    assert (last_obs["ego_poses"][:, -2, 0] < -1.0).all()


def test_sync_vector_env():
    record = _run_vector(gym.vector.SyncVectorEnv)
    _check_batched(record, cameras=False)


def test_async_vector_env_matches_sync():
    sync = _run_vector(gym.vector.SyncVectorEnv)
    asynchronous = _run_vector(gym.vector.AsyncVectorEnv)
    _check_batched(asynchronous, cameras=False)
    assert asynchronous["tokens"] == sync["tokens"]
    for (obs_a, rew_a, *_), (obs_s, rew_s, *_) in zip(asynchronous["steps"], sync["steps"]):
        np.testing.assert_array_equal(rew_a, rew_s)
        for key in obs_s:
            np.testing.assert_array_equal(obs_a[key], obs_s[key])


def test_async_vector_env_with_cameras():
    record = _run_vector(gym.vector.AsyncVectorEnv, cameras=True, steps=2)
    _check_batched(record, cameras=True)
    cams = record["steps"][-1][0]["cameras"]
    assert cams.dtype == np.uint8
    # Different scenes give different current camera frames.
    assert len({cams[i, -1].tobytes() for i in range(NUM_ENVS)}) == NUM_ENVS


def test_vector_env_direct_control():
    venv = gym.vector.SyncVectorEnv([lambda: gym.make("w0sim/ClosedLoop-v0", cameras=False, control="direct")
                                     for _ in range(NUM_ENVS)])
    try:
        venv.reset(seed=0)
        for _ in range(3):
            obs, reward, terminated, truncated, info = venv.step(np.tile(np.array([0.5, 0.0], np.float32), (NUM_ENVS, 1)))
        assert obs["ego_poses"].shape == (NUM_ENVS, 4, 3)
        np.testing.assert_allclose(info["time_s"], 0.3)
    finally:
        venv.close()


# --- smoke check of generated scenes -----------------------------------------------------------------


def test_generated_scenes_of_every_family_pass_the_scene_check(tmp_path):
    start = time.perf_counter()
    paths = []
    for family in FAMILIES:
        for seed in (0, 1):
            paths.append(save_scene(generate_scene(family, seed), tmp_path / f"{family}_{seed}.npz"))
    results = [check_scene(path) for path in paths]
    failures = [f"{r.path}: {r.reason}" for r in results if not r.ok]
    assert not failures, "\n".join(failures)
    assert sorted(r.family for r in results) == sorted(FAMILIES * 2)
    for r in results:
        assert r.decisions > 0
        assert r.route_fraction > 0.8, f"{r.path}: the route follower covered only {r.route_fraction:.0%}"
    elapsed = time.perf_counter() - start
    print(f"scene check of {len(paths)} scenes: {elapsed:.1f} s")


def test_scene_check_reports_a_corrupt_file(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    result = check_scene(bad)
    assert not result.ok
    assert "broken.npz" in result.reason
