"""The DriveVLA-W0 agent's checkpoints: the shipped one loads exactly as plain transformers loads it, and the broken or
mismatched checkpoints of issue 15 (item 5) are CheckpointErrors raised where the agent is built, before any worker."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from agents.base import AgentError, AgentOptions
from agents.drivevla_w0 import DEFAULT_CHECKPOINT, CheckpointError, DriveVLAW0Agent
from agents.registry import AgentSpec
from policies.checkpoint import CheckpointError as PolicyCheckpointError
from policies.checkpoint import config_fields
from policies.config import DriveVLAW0Config
from policies.model import DriveVLAW0ForDriving
from sim.state import TrajectorySampling
from tests.policies.checkpoints import edit_config, edit_tensors, same_state, save_micro

pytestmark = pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "model.safetensors").is_file(),
                                reason="the shipped checkpoint is not checked out")


def _build(folder) -> DriveVLAW0Agent:
    """What `w0sim eval --agent drivevla_w0 --checkpoint folder` does in the parent before it starts workers."""
    return AgentSpec("drivevla_w0", AgentOptions(checkpoint=str(folder))).build()


def _shipped_weights_with_config(tmp_path, config: dict):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(DEFAULT_CHECKPOINT / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_shipped_checkpoint_loads_exactly_as_transformers_loads_it():
    agent = _build(DEFAULT_CHECKPOINT)
    agent.initialize()
    plain = DriveVLAW0ForDriving.from_pretrained(DEFAULT_CHECKPOINT).eval()
    assert same_state(agent.model, plain)
    assert all(torch.equal(t, agent.model.state_dict()[k])
               for k, t in load_file(DEFAULT_CHECKPOINT / "model.safetensors").items())
    assert agent.model.config.to_dict() == plain.config.to_dict()
    assert config_fields(agent.config) == config_fields(plain.config)


def test_issue_15_deleted_expert_tensors_are_an_error_at_build(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_CHECKPOINT, folder)
    edit_tensors(folder, lambda t: {k: v for k, v in t.items() if not k.startswith("policy.expert.")})
    with pytest.raises(CheckpointError, match=r"model\.safetensors: 37 tensors missing: policy\.expert\..* and 32 more"):
        _build(folder)


def test_issue_15_a_config_over_another_configurations_weights_is_an_error_at_build(tmp_path):
    small = DriveVLAW0Config.preset("small", use_action_expert=True)
    folder = _shipped_weights_with_config(tmp_path, json.loads(small.to_json_string()))
    with pytest.raises(CheckpointError) as err:
        _build(folder)
    for field, config, weights in (("hidden_size", 384, 256), ("num_hidden_layers", 8, 4),
                                   ("vq_codebook_size", 1024, 512), ("expert_hidden_size", 192, 128)):
        assert f"{field} is {config} in config.json, {weights} in model.safetensors" in str(err.value)


def test_issue_15_swapped_action_bounds_are_an_error_at_build(tmp_path):
    config = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
    folder = _shipped_weights_with_config(tmp_path, {**config, "action_low": config["action_high"],
                                                     "action_high": config["action_low"]})
    with pytest.raises(CheckpointError, match=r"config\.json: action_low .* is not below action_high"):
        _build(folder)


def test_checkpoint_errors_are_agent_errors_of_both_kinds(tmp_path):
    with pytest.raises(CheckpointError) as err:
        _build(tmp_path / "absent")
    assert isinstance(err.value, AgentError) and isinstance(err.value, PolicyCheckpointError)


def test_errors_only_the_data_shows_come_from_initialize(tmp_path):
    save_micro(tmp_path / "ckpt")
    edit_tensors(tmp_path / "ckpt", lambda t: {**t, "policy.queries": torch.full_like(t["policy.queries"], 0.5)})
    agent = _build(tmp_path / "ckpt")  # names, shapes and config agree: only the data changed
    with pytest.raises(CheckpointError, match="do not hash to the sha256 recorded"):
        agent.initialize()
    assert agent.model is None


def test_a_checkpoint_for_another_trajectory_or_history_is_an_error_at_build(tmp_path):
    save_micro(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="plans 8 poses at 0.5 s"):
        DriveVLAW0Agent(tmp_path / "ckpt", TrajectorySampling(num_poses=4))
    save_micro(tmp_path / "long", num_history_frames=9)
    with pytest.raises(CheckpointError, match="wants 9 frames 1.0 s apart"):
        _build(tmp_path / "long")
    edit_config(tmp_path / "long", lambda c: c.update(num_history_frames=2))  # now contradicts the record
    with pytest.raises(CheckpointError, match="num_history_frames is 2 in config.json, 9 when the weights were saved"):
        _build(tmp_path / "long")


def test_the_policy_gets_the_ego_poses_command_and_the_newest_frames_in_order(tmp_path):
    """Each history frame with its own pose and camera image: the policy's inputs are the agent input's ego poses
    (its past motions), the command, and the newest camera frames, oldest first."""
    import numpy as np

    from sim.agent_input import AgentInput

    save_micro(tmp_path / "micro")
    agent = _build(tmp_path / "micro")
    agent.initialize()
    frames = 4  # the environments' history (NUM_HISTORY_FRAMES)
    cameras = np.stack([np.full((128, 256, 3), 40 * (k + 1), dtype=np.uint8) for k in range(frames)])
    poses = np.array([[-1.5 * (frames - 1 - k), 0.1 * k, 0.01 * k] for k in range(frames)], dtype=np.float32)
    agent_input = AgentInput(ego_poses=poses, ego_velocity=np.zeros((frames, 2), np.float32),
                             ego_acceleration=np.zeros((frames, 2), np.float32),
                             driving_command=np.array([0, 1, 0, 0], np.float32),
                             cameras=cameras, command_text="go straight", ego_state=np.zeros(11))
    inputs = agent.model_inputs(agent_input)
    assert set(inputs) == {"history_frames", "texts", "ego_poses", "command"}
    assert torch.equal(inputs["ego_poses"][0], torch.from_numpy(poses))
    assert inputs["command"].item() == 1 and inputs["texts"] == ["go straight"]
    brightness = inputs["history_frames"][0].mean(dim=(1, 2, 3))
    assert torch.all(brightness[1:] > brightness[:-1])  # oldest first, the newest last
    assert brightness[-1].item() == pytest.approx(40 * frames / 255, abs=1e-3)


def test_a_bfloat16_agent_gives_the_policy_its_ego_poses_unrounded(tmp_path):
    """Training feeds float32 poses, which become FAST tokens; in bf16 a pose of 7.99 m would round to 8.0 and may
    change a token, so a bf16 agent passes the float32 values and only its weights run in bf16."""
    import numpy as np

    from sim.agent_input import AgentInput

    save_micro(tmp_path / "micro")
    agent = AgentSpec("drivevla_w0", AgentOptions(checkpoint=str(tmp_path / "micro"), dtype="bfloat16")).build()
    agent.initialize()
    assert next(agent.model.parameters()).dtype == torch.bfloat16
    frames = 4
    poses = np.array([[-7.99 * (frames - 1 - k), 0.0, 0.0] for k in range(frames)], dtype=np.float32)
    agent_input = AgentInput(ego_poses=poses, ego_velocity=np.zeros((frames, 2), np.float32),
                             ego_acceleration=np.zeros((frames, 2), np.float32),
                             driving_command=np.array([0, 0, 1, 0], np.float32),
                             cameras=np.zeros((frames, 128, 256, 3), np.uint8), command_text="turn right",
                             ego_state=np.zeros(11))
    inputs = agent.model_inputs(agent_input)
    assert (inputs["ego_poses"].dtype, inputs["command"].dtype) == (torch.float32, torch.long)
    assert torch.equal(inputs["ego_poses"][0], torch.from_numpy(poses)) and inputs["command"].item() == 2
    default = torch.get_default_dtype()
    try:  # float32 as training fed them, not whatever torch's default dtype is in the process
        torch.set_default_dtype(torch.float64)
        inputs = agent.model_inputs(agent_input)
    finally:
        torch.set_default_dtype(default)
    assert inputs["ego_poses"].dtype == torch.float32
    assert agent.compute_trajectory(agent_input).poses.shape == (8, 3)  # the bf16 model plans from them
