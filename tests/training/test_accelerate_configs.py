"""The shipped `accelerate` configurations load with accelerate's own reader and name what the model has."""
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from typer.testing import CliRunner

from policies.config import DriveVLAW0Config
from policies.model import DriveVLAW0ForDriving
from w0sim.cli import app

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
EXPECTED = {"one_gpu": "NO", "ddp": "MULTI_GPU", "fsdp_full_shard": "FSDP", "deepspeed_zero3_offload": "DEEPSPEED"}


def test_each_configuration_loads_as_a_bf16_launch_of_its_kind():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)
    for name, kind in EXPECTED.items():
        config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
        assert (config.distributed_type.name, config.mixed_precision, config.use_cpu) == (kind, "bf16", False), name


def test_fsdp_wraps_every_backbone_and_expert_layer_of_the_paper_model_as_a_shard_unit():
    """The classes FSDP wraps by name are the paper model's layers: one unit per backbone and per expert layer, which
    together hold most of the weights (a renamed class would leave the model one unsharded unit)."""
    fsdp = load_config_from_file(str(CONFIGS / "fsdp_full_shard.yaml")).fsdp_config
    names = set(fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","))
    with torch.device("meta"):
        model = DriveVLAW0ForDriving(DriveVLAW0Config.preset("paper", use_action_expert=True))
    units = [m for m in model.modules() if type(m).__name__ in names]
    assert len(units) == 2 * model.config.num_hidden_layers
    in_units = sum(p.numel() for m in units for p in m.parameters())
    assert in_units / model.num_parameters() > 0.8


def test_deepspeed_offloads_as_the_official_scripts_do():
    deepspeed = load_config_from_file(str(CONFIGS / "deepspeed_zero3_offload.yaml")).deepspeed_config
    assert (deepspeed["zero_stage"], deepspeed["offload_optimizer_device"], deepspeed["offload_param_device"]) == (
        3, "cpu", "cpu")


@pytest.mark.parametrize("value", ["fp8", "bfloat16"])
def test_train_refuses_an_unknown_mixed_precision_before_reading_data(tmp_path, value):
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run"),
                                      "--stage", "0", "--mixed-precision", value])
    assert result.exit_code == 2
    assert f"{value!r}; choose from auto, no, bf16, fp16" in result.output
    assert not (tmp_path / "run").exists()
