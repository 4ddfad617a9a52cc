"""One training step: which parameters train, in which precision, with and without activation checkpointing."""
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

from policies.model import DriveVLAW0ForDriving
from policies.noise import BatchNoise
from tests.policies.checkpoints import MICRO_EMU3, micro_config
from tests.training.test_training import _samples
from training.dataset import collate
from training.trainer import TrainConfig, Trainer, trainable_groups

MODELS = {
    "vq, query": {},
    "vq, flow": {"expert_decoder": "flow"},
    "vq, ar": {"expert_decoder": "ar"},
    "vq, no world model": {"use_world_model": False},
    "vit, diffusion": {"image_input": "vit"},
    "vq emu3, query": MICRO_EMU3,
}


def _trained_stages(stages: list) -> list:
    """(model name, *stage arguments) for every model that has those stages: the Qwen track has no stage 2."""
    return [(name, *args) for name in MODELS for args in stages
            if not (args[0] == 2 and MODELS[name].get("image_input") == "vit")]


def _batch(config, n: int = 2) -> dict:
    samples = _samples(config, n)
    samples[-1] = {**samples[-1], "text": "turn left at the next junction", "command": torch.tensor(0),
                   "ego_poses": torch.tensor([[-13.5, 0.5, 0.1], [-9.0, 0.2, 0.05], [-4.5, 0.0, 0.0], [0.0, 0.0, 0.0]])}
    return collate(samples)


def _loss(model, batch, stage):
    return model(**batch, stage=stage, noise=BatchNoise(torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("model_name, stage, backbone_lr_scale",
                         _trained_stages([(0, 1.0), (1, 1.0), (2, 1.0), (2, 0.0)]))
def test_every_parameter_a_stage_trains_gets_a_gradient_and_no_other_does(model_name, stage, backbone_lr_scale):
    """DDP needs a gradient for every trained parameter at every step (else it stops with "Expected to have finished
    reduction"); a parameter the stage does not train must get none."""
    config = micro_config(**MODELS[model_name])
    torch.manual_seed(0)
    model = DriveVLAW0ForDriving(config)
    groups = trainable_groups(model, TrainConfig(stage=stage, backbone_lr_scale=backbone_lr_scale))
    trained = {id(p) for g in groups for p in g["params"]}
    model.train()
    _loss(model, _batch(config), stage).loss.backward()
    names = dict((id(p), n) for n, p in model.named_parameters())
    without = sorted(names[i] for i in trained if model.get_parameter(names[i]).grad is None)
    assert without == []
    assert all(p.grad is None for p in model.parameters() if id(p) not in trained)
    assert trained == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one state per process, whose mixed precision cannot change: start and leave it unset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("precision, expected", [("bf16", torch.bfloat16), ("no", torch.float32)])
def test_under_bf16_the_loss_is_computed_in_bf16(tmp_path, precision, expected, fresh_accelerate_state):
    """Mixed precision applies to the trainer's forward: the backbone's and the expert's activations are bfloat16
    under "bf16" (the weights stay float32), float32 under "no"."""
    config = micro_config(expert_decoder="flow")
    model = DriveVLAW0ForDriving(config)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)
        return hook

    hooks = [module.register_forward_hook(record(name))
             for name, module in (("backbone", model.policy.backbone.model.layers[0].mlp),
                                  ("lm_head", model.policy.backbone.lm_head),
                                  ("expert", model.policy.expert.layers[0].mlp))]
    for stage in (1, 2):
        seen.clear()
        trainer = Trainer(model, _samples(config, 2), TrainConfig(stage=stage, steps=1, batch_size=2,
                                                                   mixed_precision=precision), tmp_path / str(stage),
                          show_progress=False)
        assert trainer.accelerator.mixed_precision == precision
        trainer.compute_loss(trainer.batch(0), 0)["loss"].backward()
        assert seen == ({"backbone": expected, "lm_head": expected} if stage == 1 else
                        {"backbone": expected, "expert": expected}), stage
        assert all(p.dtype == torch.float32 for p in model.parameters())
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("model_name, stage", _trained_stages([(1,), (2,)]))
def test_activation_checkpointing_gives_the_same_losses_and_gradients(model_name, stage):
    """Checkpointing recomputes each backbone, expert and UNet layer in the backward pass; the step must not change
    (stage 2 trains the backbone through the context's K/V, which a KV cache would lose under checkpointing)."""
    config = micro_config(**MODELS[model_name], num_hidden_layers=2)
    batch = _batch(config)
    runs = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = DriveVLAW0ForDriving(config)
        trainable_groups(model, TrainConfig(stage=stage))
        if checkpointed:
            model.activation_checkpointing_enable({"use_reentrant": False})
        model.train()
        for tokenizer in (model.vq, model.vae):
            if tokenizer is not None:
                tokenizer.eval()
        calls = _count_recomputed_layers(model) if checkpointed else None
        out = _loss(model, batch, stage)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        runs.append((out.parts(), grads, calls))
    (plain, plain_grads, _), (checked, checked_grads, calls) = runs
    assert plain.keys() == checked.keys()
    for key in plain:
        torch.testing.assert_close(checked[key], plain[key], rtol=1e-6, atol=1e-7)
    assert plain_grads.keys() == checked_grads.keys() and plain_grads
    for name in plain_grads:
        torch.testing.assert_close(checked_grads[name], plain_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    # Each layer ran twice: forward, and again in the backward pass (2 layers; the expert runs in stage 2 only, where
    # the last backbone layer's MLP, which does not feed the expert, is not recomputed).
    assert calls == ({"backbone": 2 * 2, "expert": 0} if stage == 1 else {"backbone": 2 + 1, "expert": 2 * 2})


def _count_recomputed_layers(model) -> dict[str, int]:
    """Calls of the backbone's and the expert's layer MLPs, recomputation included (module hooks do not run in a
    recomputation, so the MLPs' forward is wrapped)."""
    calls = {"backbone": 0, "expert": 0}

    def counting(part, forward):
        def counted(x):
            calls[part] += 1
            return forward(x)
        return counted

    parts = [("backbone", model.backbone.model.layers)]
    if model.policy is not None:
        parts.append(("expert", model.policy.expert.layers))
    for part, layers in parts:
        for layer in layers:
            layer.mlp.forward = counting(part, layer.mlp.forward)
    return calls


def test_an_accelerator_that_does_not_split_batches_or_runs_fewer_processes_than_launched_is_refused(tmp_path,
                                                                                                      monkeypatch):
    config = micro_config()
    samples = _samples(config, 2)
    train = TrainConfig(stage=1, steps=1, batch_size=2)
    with pytest.raises(ValueError, match="must split batches"):
        Trainer(DriveVLAW0ForDriving(config), samples, train, tmp_path, accelerator=Accelerator(cpu=True))
    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(split_batches=True))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="launched as 2 processes, but accelerate runs 1"):
        Trainer(DriveVLAW0ForDriving(config), samples, train, tmp_path, accelerator=accelerator)


def test_an_unknown_mixed_precision_is_refused():
    with pytest.raises(ValueError, match="mixed_precision='fp8'; choose from auto, no, bf16, fp16"):
        TrainConfig(stage=1, mixed_precision="fp8")


def test_fp16_where_accelerate_cannot_autocast_to_it_is_refused_not_run_in_float32(tmp_path, fresh_accelerate_state):
    """On a CPU accelerate accepts fp16 but neither autocasts nor scales the loss: the trainer says so."""
    if torch.cuda.is_available():
        pytest.skip("a GPU computes in fp16")
    config = micro_config()
    with pytest.raises(ValueError, match="mixed precision fp16 is not available on cpu"):
        Trainer(DriveVLAW0ForDriving(config), _samples(config, 2), TrainConfig(stage=1, steps=1, batch_size=2,
                                                                               mixed_precision="fp16"), tmp_path)


def test_a_global_batch_that_does_not_split_evenly_over_the_processes_is_refused(monkeypatch):
    """Unequal shares would weight the processes' mean losses unequally (the step would not be 1 process's)."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from training.trainer import _check_launch

    two = SimpleNamespace(num_processes=2, mixed_precision="no", native_amp=False, split_batches=True,
                          distributed_type=DistributedType.MULTI_CPU, device=torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    _check_launch(two, TrainConfig(stage=1, batch_size=6))
    with pytest.raises(ValueError, match="a global batch of 5 does not split evenly over 2 processes"):
        _check_launch(two, TrainConfig(stage=1, batch_size=5))
