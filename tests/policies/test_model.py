"""DriveVLAW0ForDriving: inputs (ego poses -> past motions and the state token), losses of every stage, trajectories,
world-model rollouts (greedy or sampled, moving the ego along the plan) and save/load, on both image paths and every
decoder."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from policies.action_tokens import ActionTokenizer
from policies.config import COMMANDS
from policies.model import DriveVLAW0ForDriving, _advance, frames_to_model
from policies.motion import poses_to_deltas
from policies.noise import BatchNoise
from policies.sequence import TokenType
from tests.policies.checkpoints import driving_motion, micro_config
from tests.policies.frames import road_frames

SMALL = dict(num_hidden_layers=2, vq_codebook_size=16, diffusion_sample_steps=2, flow_steps=3)
TEXTS = ["go straight", "turn left at the next intersection"]
# (image_input, action expert decoder or None for the baseline VLA)
VARIANTS = [("vq", None), ("vq", "query"), ("vq", "ar"), ("vq", "flow"), ("vit", None)]


def _model(image_input: str = "vq", decoder: str | None = None, seed: int = 0, **overrides) -> DriveVLAW0ForDriving:
    config = micro_config(**SMALL, image_input=image_input, use_action_expert=decoder is not None,
                          expert_decoder=decoder or "query", **overrides)
    torch.manual_seed(seed)
    return DriveVLAW0ForDriving(config)


def _raw(config, seed: int = 0) -> dict:
    """A training batch: history frames (B,F,3,H,W) in [0,1], texts, ego poses (B,4,3), command, plan poses (B,8,3)
    and the future frame; made-up drives from `driving_motion`."""
    b, f = len(TEXTS), config.num_history_frames
    frames = road_frames(b * (f + 1), config.image_height, config.image_width, seed=seed)
    frames = frames.view(b, f + 1, 3, config.image_height, config.image_width)
    ego_poses, plans = driving_motion(b, seed=seed + 1)
    return dict(history_frames=frames[:, :f], texts=TEXTS, ego_poses=ego_poses, command=torch.tensor([1, 0]),
                poses=plans, future_frame=frames[:, f])


def _training(raw: dict) -> dict:
    """`build_inputs` arguments of a training batch (the future frame is the data set's, not an input)."""
    return {k: v for k, v in raw.items() if k != "future_frame"}


def _prompt(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k not in ("poses", "future_frame")}


def _perturb(model: DriveVLAW0ForDriving) -> None:
    # Zero-initialised heads (query / flow outputs, diffusion image channels) would make outputs input-independent at
    # init, and at 0.02-std weights the greedy image codes hardly depend on the context (near-uniform attention):
    # perturb every weight so the checks below see real dependencies.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)


# --- pose helpers, written out here rather than taken from policies.motion ----------------------------------------
def _to_world(origin: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Poses (B,K,3) in the frame of `origin` (B,3) -> the frame `origin` is given in."""
    c, s = origin[:, None, 2].cos(), origin[:, None, 2].sin()
    x = origin[:, None, 0] + c * local[..., 0] - s * local[..., 1]
    y = origin[:, None, 1] + s * local[..., 0] + c * local[..., 1]
    return torch.stack([x, y, origin[:, None, 2] + local[..., 2]], -1)


def _in_frame(world: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """Poses (B,K,3) -> the frame of `origin` (B,3), headings wrapped to (-pi, pi]."""
    c, s = origin[:, None, 2].cos(), origin[:, None, 2].sin()
    dx, dy = world[..., 0] - origin[:, None, 0], world[..., 1] - origin[:, None, 1]
    yaw = world[..., 2] - origin[:, None, 2]
    return torch.stack([c * dx + s * dy, -s * dx + c * dy, torch.atan2(yaw.sin(), yaw.cos())], -1)


# --- losses, trajectories and rollouts of every variant ------------------------------------------------------------
@pytest.mark.parametrize("image_input,decoder", VARIANTS)
def test_losses_trajectory_and_rollout(image_input, decoder):
    model = _model(image_input, decoder)
    config = model.config
    raw = _raw(config)
    inputs = model.build_inputs(**_training(raw), noise=BatchNoise(torch.Generator().manual_seed(1)))
    stage1 = model.loss(inputs, stage=1, noise=BatchNoise(torch.Generator().manual_seed(0)))
    assert torch.isfinite(stage1.loss) and torch.isfinite(stage1.action_loss)
    assert stage1.world_model_loss is not None and torch.isfinite(stage1.world_model_loss)
    assert set(stage1.parts()) == {"loss", "action_loss", "world_model_loss"}
    stage1.loss.backward()
    assert model.backbone.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    if decoder is None:
        with pytest.raises(ValueError):
            model.loss(inputs, stage=2)
    else:
        model.zero_grad()
        inputs = model.build_inputs(**_training(raw))
        stage2 = model.loss(inputs, stage=2, noise=BatchNoise(torch.Generator().manual_seed(0)))
        assert torch.isfinite(stage2.loss) and stage2.world_model_loss is None
        assert torch.equal(stage2.loss, stage2.action_loss)
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


@pytest.mark.parametrize("image_input,decoder", [("vq", "flow"), ("vit", None)])
def test_forward_takes_the_data_sets_uint8_batch(image_input, decoder):
    """`forward` (what the trainer calls) on uint8 (B,F,H,W,3) frames gives the losses of `loss(build_inputs(...))`;
    on the Qwen track with the diffusion target of the second history frame's VAE latent, drawn from the same noise
    stream first."""
    model = _model(image_input, decoder)
    raw = _raw(model.config)
    history, future = ((raw[k] * 255).round().to(torch.uint8).movedim(-3, -1) for k in ("history_frames", "future_frame"))
    batch = dict(history_frames=history, future_frame=future, trajectory=raw["poses"], ego_poses=raw["ego_poses"],
                 command=raw["command"], text=raw["texts"])
    for stage in (1, 2) if decoder else (1,):
        got = model(**batch, stage=stage, noise=BatchNoise(torch.Generator().manual_seed(0)))
        noise = BatchNoise(torch.Generator().manual_seed(0))
        expected = model.build_inputs(frames_to_model(history), raw["texts"], raw["ego_poses"], raw["command"],
                                      raw["poses"], noise)
        want = model.loss(expected, stage, noise)
        assert got.parts().keys() == want.parts().keys()
        for name, value in got.parts().items():
            torch.testing.assert_close(value, want.parts()[name])
    stage0 = model(**batch, stage=0)
    assert stage0.reconstruction_loss is not None and stage0.action_loss is None and torch.isfinite(stage0.loss)


# --- inputs -------------------------------------------------------------------------------------------------------
def test_the_state_token_input_is_the_current_frames_normalised_past_motions_and_the_command_one_hot():
    model = _model("vq", "query")
    config, raw = model.config, _raw(model.config)
    inputs = model.build_inputs(**_prompt(raw))
    p = raw["ego_poses"].double()
    # (B,3,3): each of the 3 motions is a pose seen from the one before it
    motions = torch.stack([_in_frame(p[:, k + 1:k + 2], p[:, k])[:, 0] for k in range(3)], 1)
    low, high = torch.tensor(config.action_low).double(), torch.tensor(config.action_high).double()
    normalised = (2 * (motions - low) / (high - low) - 1).clamp(-1, 1)
    expected = torch.cat([normalised.flatten(1), F.one_hot(raw["command"], len(COMMANDS)).double()], 1)
    assert inputs.state.shape == (2, 13) and inputs.state.dtype == torch.float32
    torch.testing.assert_close(inputs.state, expected.float())
    # No speed or acceleration input: only the ego poses and the command move the state.
    turned = model.build_inputs(**dict(_prompt(raw), command=torch.tensor([3, 3])))
    assert torch.equal(turned.state[:, :9], inputs.state[:, :9]) and not torch.equal(turned.state, inputs.state)


@torch.no_grad()
def test_the_world_model_context_is_the_current_frame_and_the_plans_first_second():
    """vq: the next frame is predicted from the current frame's codes, its past motions and the action to the next frame
    (the plan's first `segment_action_steps` motions), after <boi> <img>, as the training sequence predicts frame 2."""
    model = _model("vq", "query").eval()
    config, raw = model.config, _raw(model.config)
    captured = []
    real = model.backbone.generate_image_codes

    def spy(context, *args, **kwargs):
        captured.append(context)
        return real(context, *args, **kwargs)

    model.backbone.generate_image_codes = spy
    images = model.encode_frames(raw["history_frames"])
    frame, codes = model.predict_next_frame(images, raw["texts"], raw["ego_poses"], raw["command"], raw["poses"])
    assert frame.shape == (2, 3, config.image_height, config.image_width) and codes.shape == (2, *config.image_grid)
    (ctx,) = captured
    assert (ctx.input_ids[:, -2:] == torch.tensor([config.special_id("<boi>"), config.special_id("<img>")])).all()
    assert ctx.image_index.shape[1] == 1  # the current frame only
    rows = torch.arange(2)[:, None]
    assert torch.equal(ctx.input_ids[rows, ctx.image_index[:, 0]] - config.image_offset, images[:, -1].flatten(1))
    step = ActionTokenizer(config).encode(poses_to_deltas(raw["poses"].double())[:, :config.segment_action_steps])
    for r in range(2):
        assert ctx.input_ids[r][ctx.plan_mask[r]].tolist() == step[r]
        assert (ctx.type_ids[r] == TokenType.ACTION).sum() == len(step[r])


def test_inputs_are_built_on_the_device_of_the_history_images():
    """Text, ego poses and command arrive on the CPU; the model's inputs must all be where the images are (a GPU in use;
    here the meta device, which holds shapes only, stands in for it: the Qwen track, whose pixel patches the sequence
    builder never reads)."""
    model = _model("vit")
    config = model.config
    feats = torch.zeros(2, config.num_history_frames, 128, 48, device="meta")
    inputs = model._inputs(feats, TEXTS, driving_motion(2)[0], torch.tensor([1, 2]))
    assert inputs.state.device.type == "meta" and inputs.state.dtype == torch.float32
    seq = inputs.sequence
    assert {t.device.type for t in (seq.input_ids, seq.attention_mask, seq.position_ids, seq.type_ids,
                                    seq.image_index, seq.context_mask, seq.plan_mask)} == {"meta"}


# --- rollouts ---------------------------------------------------------------------------------------------------
def test_advancing_the_ego_re_expresses_the_history_in_the_frame_of_the_last_driven_pose():
    # Straight at 1 m a step: the history relative to the ego looks the same after driving on.
    straight = torch.tensor([[[-3.0, 0, 0], [-2, 0, 0], [-1, 0, 0], [0, 0, 0]]]).double()
    torch.testing.assert_close(_advance(straight, torch.tensor([[[1.0, 0, 0], [2, 0, 0]]]).double()), straight)
    # Standing still, then a quarter turn to the left: one step forward (ending facing +y), one step left of it.
    still = torch.zeros(1, 4, 3).double()
    driven = torch.tensor([[[1.0, 0, math.pi / 2], [1, 1, math.pi / 2]]]).double()
    expected = torch.tensor([[[-1.0, 1, -math.pi / 2], [-1, 1, -math.pi / 2], [-1, 0, 0], [0, 0, 0]]]).double()
    torch.testing.assert_close(_advance(still, driven), expected)
    # Three driven poses: only the last four of history + driven are kept.
    three = torch.tensor([[[1.0, 0, 0], [2, 0, 0], [3, 0, 0]]]).double()
    torch.testing.assert_close(_advance(straight, three), straight)


@torch.no_grad()
@pytest.mark.parametrize("given", [False, True])
def test_rollouts_move_the_ego_along_the_plan(given):
    """Each step calls predict_next_frame with the ego poses after driving the previous steps' plans for one
    frame interval (two 0.5 s poses): the last 4 poses of the path driven so far, seen from its last pose."""
    model = _model("vq", "query").eval()
    _perturb(model)
    raw = _raw(model.config)
    calls = []
    real = model.predict_next_frame

    def spy(images, texts, ego_poses, command, plan, *args, **kwargs):
        calls.append((ego_poses.clone(), plan.clone()))
        return real(images, texts, ego_poses, command, plan, *args, **kwargs)

    model.predict_next_frame = spy
    steps = 3
    per_step = torch.stack([raw["poses"], raw["poses"] * 0.5, raw["poses"].flip(1)], 1) if given else None
    model.rollout_frames(**_prompt(raw), steps=steps, poses=per_step)
    assert len(calls) == steps
    world = raw["ego_poses"].double()  # the path so far, in the frame of the first current pose
    for k, (ego, plan) in enumerate(calls):
        torch.testing.assert_close(ego.double(), _in_frame(world[:, -4:], world[:, -1]), atol=1e-5, rtol=0)
        if given:
            assert torch.equal(plan, per_step[:, k])
        world = torch.cat([world, _to_world(world[:, -1], plan.double()[:, :2])], 1)
    assert (world[:, -1, :2].norm(dim=-1) > 1).all()  # the ego did move


@torch.no_grad()
@pytest.mark.parametrize("decoder", [None, "query"])
def test_a_rollout_is_greedy_by_default_and_sampling_is_reproducible_with_a_seeded_generator(decoder):
    model = _model("vq", decoder).eval()
    _perturb(model)
    prompt = _prompt(_raw(model.config))
    greedy = model.rollout_frames(**prompt, steps=2)
    torch.manual_seed(123)  # no generator: greedy decoding draws nothing
    assert torch.equal(model.rollout_frames(**prompt, steps=2), greedy)

    def sampled(seed: int) -> torch.Tensor:
        return model.rollout_frames(**prompt, steps=2, temperature=1.0, top_k=4,
                                    generator=torch.Generator().manual_seed(seed))

    first = sampled(0)
    assert torch.equal(sampled(0), first)
    assert (first - greedy).abs().max() > 1e-4 and (sampled(1) - first).abs().max() > 1e-4
    # top_k=1 samples the greedy codes at any temperature.
    raw = _raw(model.config)
    images = model.encode_frames(raw["history_frames"])
    ctx = model._inputs(images, raw["texts"], raw["ego_poses"], raw["command"], raw["poses"], open_image=True)
    codes = model.backbone.generate_image_codes(ctx.sequence)
    hot = model.backbone.generate_image_codes(ctx.sequence, temperature=5.0, top_k=1,
                                              generator=torch.Generator().manual_seed(0))
    assert torch.equal(hot, codes) and codes.min() >= 0 and codes.max() < model.config.vq_codebook_size


@torch.no_grad()
@pytest.mark.parametrize("image_input,decoder", [("vq", "flow"), ("vit", None)])
def test_a_rollout_follows_the_poses_it_is_given_step_by_step(image_input, decoder):
    """Per-step poses (B,steps,P,3): step k's frame depends on poses[:, k] and on no later step's poses."""
    model = _model(image_input, decoder).eval()
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
    """Two steps equal one step, then one more from [newest history frame, first prediction] with the ego advanced
    along the first step's poses (Qwen track, where a predicted frame is re-encoded exactly as a camera frame is),
    with the same noise stream."""
    model = _model("vit").eval()
    _perturb(model)
    raw = _raw(model.config)
    prompt, per_step = _prompt(raw), torch.stack([raw["poses"], raw["poses"] * 0.5], 1)
    both = model.rollout_frames(**prompt, steps=2, poses=per_step, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    first = model.rollout_frames(**prompt, steps=1, poses=per_step[:, :1], generator=g)
    slid = torch.cat([prompt["history_frames"][:, 1:], first], 1)
    moved = _advance(raw["ego_poses"].double(), per_step[:, 0, :2].double()).float()
    second = model.rollout_frames(**dict(prompt, history_frames=slid, ego_poses=moved), steps=1,
                                  poses=per_step[:, 1:], generator=g)
    torch.testing.assert_close(both, torch.cat([first, second], 1))
    stale = model.rollout_frames(**prompt, steps=1, poses=per_step[:, 1:],
                                 generator=torch.Generator().manual_seed(0))  # no slide: the old history again
    assert (stale[:, 0] - both[:, 1]).abs().max() > 1e-4


# --- misuse and save / load ---------------------------------------------------------------------------------------
def test_invalid_use():
    model = _model("vq", None)
    raw = _raw(model.config)
    with pytest.raises(ValueError, match="target poses"):
        model.loss(model.build_inputs(**_prompt(raw)))
    with pytest.raises(ValueError, match="stage"):
        model.loss(model.build_inputs(**_training(raw)), stage=3)
    images = model.encode_frames(raw["history_frames"])
    with pytest.raises(ValueError, match="plan"):
        model._inputs(images, raw["texts"], raw["ego_poses"], raw["command"], open_image=True)
    no_wm = _model("vq", None, use_world_model=False)
    out = no_wm.loss(no_wm.build_inputs(**_training(raw)))
    assert out.world_model_loss is None and torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, out.action_loss)  # no image code carries a label
    with pytest.raises(ValueError, match="world model"):
        no_wm.rollout_frames(**_prompt(raw), steps=1)
    no_vae = _model("vit", None, use_world_model=False)
    assert no_vae.vq is None and no_vae.vae is None and no_vae.diffusion_wm is None
    with pytest.raises(ValueError, match="image tokenizer"):
        no_vae(raw["history_frames"], raw["future_frame"], None, None, None, None, stage=0)
    with pytest.raises(ValueError, match="action expert"):
        _model("vit", "query")


@torch.no_grad()
@pytest.mark.parametrize("image_input,decoder", [("vq", "query"), ("vq", "flow"), ("vit", None)])
def test_save_load_round_trip(tmp_path, image_input, decoder):
    model = _model(image_input, decoder).eval()
    _perturb(model)
    prompt = _prompt(_raw(model.config))
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors"}
    loaded = DriveVLAW0ForDriving.from_pretrained(tmp_path).eval()
    for name in ("image_input", "use_action_expert", "expert_decoder", "vq_channels", "action_low", "action_high",
                 "fast_tokenizer"):
        assert getattr(loaded.config, name) == getattr(model.config, name)
    a = model.predict_trajectory(**prompt, generator=torch.Generator().manual_seed(0))
    b = loaded.predict_trajectory(**prompt, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    a = model.rollout_frames(**prompt, steps=1, generator=torch.Generator().manual_seed(0))
    b = loaded.rollout_frames(**prompt, steps=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
