"""DriveVLAW0ForDriving: losses of both stages, trajectories, world-model rollouts and save/load, on both image paths and every
decoder."""
from __future__ import annotations

import pytest
import torch

from policies.config import DriveVLAW0Config
from policies.model import DriveVLAW0ForDriving
from policies.noise import BatchNoise
from tests.policies.frames import road_frames

TINY = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, expert_hidden_size=32, expert_intermediate_size=64,
            image_height=32, image_width=64, vq_channels=(8, 16, 16), vq_code_dim=8, vq_codebook_size=64,
            patch_dim=32, patch_layers=1, diffusion_channels=(16, 32), diffusion_cond_channels=8,
            diffusion_cross_dim=32, diffusion_sample_steps=2, flow_steps=3)
TEXTS = ["go straight", "turn left at the next intersection"]
# (image_input, action expert decoder or None for the baseline VLA)
VARIANTS = [("vq", None), ("vq", "query"), ("vq", "ar"), ("vq", "flow"), ("patch", None), ("patch", "flow")]


def _model(image_input: str, decoder: str | None, seed: int = 0) -> DriveVLAW0ForDriving:
    config = DriveVLAW0Config.preset("tiny", **TINY, image_input=image_input,
                                     use_action_expert=decoder is not None, expert_decoder=decoder or "query")
    torch.manual_seed(seed)
    return DriveVLAW0ForDriving(config)


def _raw(config: DriveVLAW0Config, seed: int = 0) -> dict:
    b, f = len(TEXTS), config.num_history_frames
    frames = road_frames(b * (f + 1), config.image_height, config.image_width, seed=seed).view(b, f + 1, 3,
                                                                                          config.image_height,
                                                                                          config.image_width)
    g = torch.Generator().manual_seed(seed)
    return dict(history_frames=frames[:, :f], texts=TEXTS, speed=torch.tensor([3.0, 9.0]),
                accel=torch.tensor([0.5, -1.0]), command=torch.tensor([1, 0]),
                poses=torch.cumsum(torch.rand(b, config.num_poses, 3, generator=g), 1),
                future_frame=frames[:, f])


def _prompt(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k not in ("poses", "future_frame")}


def _perturb(model: DriveVLAW0ForDriving) -> None:
    # Zero-initialised heads (query / flow outputs, diffusion image channels) would make outputs
    # input-independent at init; nudge every weight so the checks below see real dependencies.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)


@pytest.mark.parametrize("image_input,decoder", VARIANTS)
def test_losses_trajectory_and_rollout(image_input, decoder):
    model = _model(image_input, decoder)
    config = model.config
    raw = _raw(config)
    inputs = model.build_inputs(**raw)
    stage1 = model.loss(inputs, stage=1, noise=BatchNoise(torch.Generator().manual_seed(0)))
    assert torch.isfinite(stage1.loss) and torch.isfinite(stage1.action_loss)
    assert stage1.world_model_loss is not None and torch.isfinite(stage1.world_model_loss)
    stage1.loss.backward()
    assert model.backbone.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    if decoder is None:
        with pytest.raises(ValueError):
            model.loss(inputs, stage=2)
    else:
        model.zero_grad()
        inputs = model.build_inputs(**raw)  # patch features carry the stage-1 graph
        stage2 = model.loss(inputs, stage=2, noise=BatchNoise(torch.Generator().manual_seed(0)))
        assert torch.isfinite(stage2.loss) and stage2.world_model_loss is None
        stage2.loss.backward()
        expert_grads = [p.grad for n, p in model.policy.named_parameters()
                        if not n.startswith("backbone.") and p.grad is not None]
        assert any(g.abs().sum() > 0 for g in expert_grads)

    model.eval()
    _perturb(model)
    prompt = _prompt(raw)
    traj = model.predict_trajectory(**prompt, generator=torch.Generator().manual_seed(0))
    assert traj.shape == (2, config.num_poses, 3) and torch.isfinite(traj).all()

    k = 2
    frames = model.rollout_frames(**prompt, steps=k, generator=torch.Generator().manual_seed(0))
    assert frames.shape == (2, k, 3, config.image_height, config.image_width)
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    other = dict(prompt, history_frames=prompt["history_frames"].flip(1))  # swap the two frames
    moved = model.rollout_frames(**other, steps=k, generator=torch.Generator().manual_seed(0))
    assert (moved - frames).abs().max() > 1e-4
    # Counterfactual: the same history under a given trajectory.
    forced = model.rollout_frames(**prompt, steps=1, poses=raw["poses"], generator=torch.Generator().manual_seed(0))
    assert forced.shape == (2, 1, 3, config.image_height, config.image_width)


@torch.no_grad()
@pytest.mark.parametrize("image_input", ["vq", "patch"])
def test_a_rollout_follows_the_poses_it_is_given_step_by_step(image_input):
    """Per-step poses (B,steps,P,3): step k's frame depends on poses[:, k] and on no later step's poses."""
    model = _model(image_input, "flow").eval()
    _perturb(model)
    raw = _raw(model.config)
    a, b = raw["poses"], raw["poses"].flip(1) * torch.tensor([1.0, -1.0, -1.0])  # another path: mirrored, reversed

    def rollout(per_step):
        return model.rollout_frames(**_prompt(raw), steps=2, poses=torch.stack(per_step, 1),
                                    generator=torch.Generator().manual_seed(0))

    aa, ab, ba = rollout([a, a]), rollout([a, b]), rollout([b, a])
    assert torch.equal(aa[:, 0], ab[:, 0])  # step 0 does not look ahead
    assert (aa[:, 1] - ab[:, 1]).abs().max() > 1e-4  # step 1 follows its own poses
    assert (aa[:, 0] - ba[:, 0]).abs().max() > 1e-4  # step 0 follows its own poses, not the policy's plan


@torch.no_grad()
def test_a_rollout_slides_its_history_window_onto_its_own_prediction():
    """Two steps equal one step, then one more from [newest history frame, first prediction] (patch path, where a
    predicted frame is re-encoded exactly as a camera frame is), with the same noise stream."""
    model = _model("patch", "flow").eval()
    _perturb(model)
    raw = _raw(model.config)
    prompt, per_step = _prompt(raw), torch.stack([raw["poses"], raw["poses"] * 0.5], 1)
    both = model.rollout_frames(**prompt, steps=2, poses=per_step, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    first = model.rollout_frames(**prompt, steps=1, poses=per_step[:, :1], generator=g)
    slid = torch.cat([prompt["history_frames"][:, 1:], first], 1)
    second = model.rollout_frames(**dict(prompt, history_frames=slid), steps=1, poses=per_step[:, 1:], generator=g)
    torch.testing.assert_close(both, torch.cat([first, second], 1))
    stale = model.rollout_frames(**prompt, steps=1, poses=per_step[:, 1:],
                                 generator=torch.Generator().manual_seed(0))  # no slide: the old history again
    assert (stale[:, 0] - both[:, 1]).abs().max() > 1e-4


def test_inputs_are_built_on_the_device_of_the_history_images():
    """Text, state, speed and acceleration arrive on the CPU; the model's inputs must all be where the images are
    (a GPU in use; here the meta device, which holds shapes only, stands in for it)."""
    config = DriveVLAW0Config.preset("tiny", num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                                     num_attention_heads=2, num_key_value_heads=1, image_height=32, image_width=64)
    model = DriveVLAW0ForDriving(config)
    h, w = config.image_grid
    codes = torch.zeros(2, config.num_history_frames, h, w, dtype=torch.long, device="meta")
    inputs = model._inputs(codes, ["go straight", "turn left"], torch.tensor([3.0, 4.0]), torch.tensor([0.0, 1.0]),
                           torch.tensor([1, 2]))
    assert inputs.state.device.type == "meta" and inputs.state.dtype == torch.float32
    seq = inputs.sequence
    assert {t.device.type for t in (seq.input_ids, seq.attention_mask, seq.position_ids, seq.type_ids)} == {"meta"}


def test_invalid_use():
    model = _model("vq", None)
    raw = _raw(model.config)
    with pytest.raises(ValueError):
        model.loss(model.build_inputs(**_prompt(raw)))  # no target poses
    with pytest.raises(ValueError):
        model.loss(model.build_inputs(**raw), stage=3)
    no_wm = DriveVLAW0ForDriving(DriveVLAW0Config.preset("tiny", **TINY, use_world_model=False))
    assert no_wm.loss(no_wm.build_inputs(**raw)).world_model_loss is None
    with pytest.raises(ValueError):
        no_wm.rollout_frames(**_prompt(raw), steps=1)


@torch.no_grad()
@pytest.mark.parametrize("image_input,decoder", [("vq", "query"), ("vq", "flow"), ("patch", None)])
def test_save_load_round_trip(tmp_path, image_input, decoder):
    model = _model(image_input, decoder).eval()
    _perturb(model)
    prompt = _prompt(_raw(model.config))
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors"}
    loaded = DriveVLAW0ForDriving.from_pretrained(tmp_path).eval()
    for name in ("image_input", "use_action_expert", "expert_decoder", "vq_channels"):
        assert getattr(loaded.config, name) == getattr(model.config, name)
    a = model.predict_trajectory(**prompt, generator=torch.Generator().manual_seed(0))
    b = loaded.predict_trajectory(**prompt, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    a = model.rollout_frames(**prompt, steps=1, generator=torch.Generator().manual_seed(0))
    b = loaded.rollout_frames(**prompt, steps=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
