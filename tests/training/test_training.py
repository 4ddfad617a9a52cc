"""Training: collect -> stage 0 -> 1 -> 2 -> evaluation end to end, and a killed run resumes to the same loss curve."""
import csv
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from agents.drivevla_w0 import CheckpointError, DriveVLAW0Agent
from policies.config import DriveVLAW0Config
from scenarios.splits import resolve_split
from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.envs.navsim_env import NavsimSceneEnv
from training.collect import CollectConfig, collect
from training.pipeline import model_config, train_stages

TINY_STEPS = {0: {"steps": 4, "batch_size": 4}, 1: {"steps": 3, "batch_size": 4}, 2: {"steps": 3, "batch_size": 4}}


def test_collect_train_all_stages_and_evaluate_end_to_end(tmp_path):
    data = tmp_path / "data"
    collect("builtin:navtrain", 4, data, CollectConfig(scenes_per_shard=2), workers=2)
    model_dir = train_stages(data, tmp_path / "run", (0, 1, 2), model_config("tiny"), TINY_STEPS, show_progress=False)
    assert (model_dir / "model.safetensors").exists() and model_dir.parent.name == "stage2"
    for stage in (0, 1, 2):
        rows = list(csv.DictReader((tmp_path / "run" / f"stage{stage}" / "metrics.csv").open()))
        assert rows and all(np.isfinite(float(r["loss"])) for r in rows)
    agent = DriveVLAW0Agent(model_dir)
    env = NavsimSceneEnv(scenes=[ref.load() for ref in resolve_split("builtin:navtest", 2)])
    trajectories = []
    for seed in range(2):
        _, info = env.reset(seed=seed)
        trajectory = agent.compute_trajectory(info["agent_input"])
        _, reward, _, _, step_info = env.step(trajectory.poses)
        assert trajectory.poses.shape == (8, 3) and np.isfinite(trajectory.poses).all()
        assert step_info["valid"] and 0.0 <= reward <= 1.0
        trajectories.append(trajectory.poses)
    assert not np.allclose(trajectories[0], trajectories[1])  # the output depends on the input
    closed = ClosedLoopEnv(scenes=[resolve_split("builtin:routes", 1)[0].load()])
    _, info = closed.reset(seed=0)
    for _ in range(3):  # the same agent drives closed loop from the frames the simulator renders
        _, _, terminated, _, info = closed.step(agent.compute_trajectory(closed.agent_input).poses)
        assert "failure_reason" not in info and not terminated


def _train_command(data, out, steps):
    code = "from w0sim.cli import app; app()"
    return [sys.executable, "-c", code, "train", "--data", str(data), "--out", str(out), "--stage", "0",
            "--steps", str(steps), "--batch-size", "2", "--checkpoint-every", "10"]


def _curve(run):
    rows = list(csv.DictReader((run / "stage0" / "metrics.csv").open()))
    return [(r["step"], r["loss"], r["reconstruction_loss"], r["lr"]) for r in rows]


@pytest.mark.timeout(900)  # about 26 s on a quiet 2-core machine; the 300 s guard against hangs failed it on a busy one
def test_a_killed_run_resumes_to_the_same_loss_curve_and_weights(tmp_path):
    data = tmp_path / "data"
    collect("builtin:navtrain", 2, data, CollectConfig(scenes_per_shard=2), workers=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 30
    subprocess.run(_train_command(data, tmp_path / "straight", steps), check=True, env=env, capture_output=True)
    process = subprocess.Popen(_train_command(data, tmp_path / "killed", steps), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "stage0" / "checkpoints" / "step_0000010" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "stage0" / "model").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(_train_command(data, tmp_path / "killed", steps), check=True, env=env, capture_output=True,
                             text=True)
    # It resumed from the checkpoint: its progress starts at the checkpoint's step, not at 0 (training being
    # deterministic, a run started afresh would give the same curve and weights).
    first = re.search(rf"(\d+)/{steps}", resumed.stderr)
    assert first is not None and int(first.group(1)) >= 10, resumed.stderr[-2000:]
    assert _curve(tmp_path / "killed") == _curve(tmp_path / "straight")
    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "stage0" / "model" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "stage0" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_corrupt_checkpoint_folder_gives_a_clear_error(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        DriveVLAW0Agent(folder).initialize()
    DriveVLAW0Config.preset("tiny").save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        DriveVLAW0Agent(folder).initialize()
