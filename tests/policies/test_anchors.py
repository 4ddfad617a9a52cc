"""The anchor variant of the query expert: k-means anchors, NeRF encoding, imitation targets, symmetric KL, the head
trained in stage 2 and its plans (the best-scored anchor), refused unfitted or on another decoder, saved with the
checkpoint, fitted by the training pipeline."""
from __future__ import annotations

import math

import pytest
import torch

from policies.anchors import anchor_targets, fit_anchors, positional_encoding, symmetric_kl
from policies.model import DriveVLAW0ForDriving
from policies.noise import BatchNoise
from tests.policies.checkpoints import driving_motion, micro_config

ANCHORED = dict(num_anchors=6, anchor_queries=4, anchor_layers=1, anchor_heads=2, num_hidden_layers=2)


def test_k_means_finds_the_centres_of_separated_clusters_reproducibly():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0, 10, 0]]).repeat(1, 2).view(3, 2, 3)
    plans = torch.cat([c + 0.05 * torch.randn(40, 2, 3, generator=g) for c in centres])
    anchors = fit_anchors(plans, 3, seed=1)
    assert anchors.shape == (3, 2, 3)
    distances = torch.cdist(centres.flatten(1), anchors.flatten(1))  # (true centre, anchor)
    assert (distances.min(1).values < 0.05).all() and distances.argmin(1).unique().numel() == 3
    assert torch.equal(fit_anchors(plans, 3, seed=1), anchors)
    with pytest.raises(ValueError, match="at least as many plans"):
        fit_anchors(plans[:2], 3)


def test_the_positional_encoding_is_nerfs_per_coordinate():
    value = torch.zeros(1, 8, 3, dtype=torch.float64)
    value[0, 2, 1] = 0.3  # pose 2, y
    enc = positional_encoding(value)
    assert enc.shape == (1, 8 * 3 * 20)
    block = enc[0].view(8, 3, 20)[2, 1]
    expected = [math.sin(2 ** f * math.pi * 0.3) for f in range(10)] + [math.cos(2 ** f * math.pi * 0.3)
                                                                        for f in range(10)]
    torch.testing.assert_close(block, torch.tensor(expected, dtype=torch.float64))
    assert torch.equal(enc[0].view(8, 3, 20)[0, 0], torch.tensor([0.0] * 10 + [1.0] * 10, dtype=torch.float64))


def test_targets_favour_the_nearest_anchor_and_the_loss_is_zero_at_the_target():
    anchors = torch.tensor([[[1.0, 0, 0]] * 8, [[5.0, 0, 0]] * 8, [[9.0, 0, 0]] * 8])
    plan = torch.tensor([[[4.0, 0, 0]] * 8])
    target = anchor_targets(anchors, plan)
    assert target.shape == (1, 3) and target.argmax() == 1
    torch.testing.assert_close(target.sum(), torch.tensor(1.0))
    # 0.1 x log softmax(-L2): the distances are sqrt(8) x (3, 1, 5), so the ratios are exp(-0.1 sqrt(8) (d - d'))
    d = torch.tensor([3.0, 1.0, 5.0]) * math.sqrt(8)
    torch.testing.assert_close(target[0], torch.softmax(-0.1 * d, 0))
    assert symmetric_kl(target.log(), target) < 1e-6
    assert symmetric_kl(torch.tensor([[5.0, 0.0, 0.0]]), target) > 0.1


def _model(**overrides) -> DriveVLAW0ForDriving:
    torch.manual_seed(0)
    return DriveVLAW0ForDriving(micro_config(**{**ANCHORED, **overrides}))


def _batch(config, n: int = 4):
    from tests.policies.frames import road_frames

    frames = road_frames(n * config.num_history_frames, config.image_height, config.image_width, seed=2)
    ego_poses, plans = driving_motion(n, seed=4)
    return (frames.view(n, config.num_history_frames, *frames.shape[1:]), ["go straight"] * n, ego_poses,
            torch.tensor([1] * n), plans)


def test_the_anchor_head_learns_to_pick_each_samples_anchor_and_plans_with_it():
    model = _model()
    config = model.config
    frames, texts, ego_poses, command, plans = _batch(config)
    with pytest.raises(ValueError, match="not fitted"):
        model.predict_trajectory(frames, texts, ego_poses, command)
    _, others = driving_motion(60, seed=9)
    with torch.no_grad():
        model.policy.anchors.copy_(fit_anchors(torch.cat([plans, others]), config.num_anchors))
    assert not hasattr(model.policy, "query_out") and model.policy.queries.shape[0] == config.anchor_queries
    inputs = model.build_inputs(frames, texts, ego_poses, command, plans)
    wanted = anchor_targets(model.policy.anchors, plans).argmax(-1)
    opt = torch.optim.AdamW([p for n, p in model.policy.named_parameters() if not n.startswith("backbone.")], lr=3e-3)
    first = None
    for _ in range(60):
        out = model.loss(inputs, stage=2, noise=BatchNoise())
        first = out.loss.item() if first is None else first
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.loss.item() < 0.5 * first
    model.eval()
    planned = model.predict_trajectory(frames, texts, ego_poses, command)
    assert torch.equal(planned, model.policy.anchors[wanted])


def test_anchors_need_the_query_decoder_and_travel_with_the_checkpoint(tmp_path):
    for decoder in ("flow", "ar"):
        with pytest.raises(ValueError, match="query decoder"):
            micro_config(**ANCHORED, expert_decoder=decoder)
    model = _model()
    with torch.no_grad():
        model.policy.anchors.copy_(fit_anchors(driving_motion(30, seed=1)[1], model.config.num_anchors))
    model.save_pretrained(tmp_path)
    loaded = DriveVLAW0ForDriving.from_pretrained(tmp_path)
    assert torch.equal(loaded.policy.anchors, model.policy.anchors)
    frames, texts, ego_poses, command, _ = _batch(model.config, 2)
    torch.testing.assert_close(loaded.eval().predict_trajectory(frames, texts, ego_poses, command),
                               model.eval().predict_trajectory(frames, texts, ego_poses, command))


def test_the_pipeline_fits_the_anchors_on_the_training_plans_once():
    from training.pipeline import with_anchors

    class Plans:  # the one ExpertDataset method with_anchors reads
        def __init__(self, plans):
            self.plans = plans

        def stacked(self, name):
            assert name == "trajectories"
            return self.plans.numpy()

    _, plans = driving_motion(40, seed=6)
    model = with_anchors(_model(), Plans(plans), seed=3)
    assert torch.equal(model.policy.anchors, fit_anchors(plans, model.config.num_anchors, seed=3))
    fitted = model.policy.anchors.clone()
    with_anchors(model, Plans(plans * 2), seed=3)  # already fitted (a resumed stage 2): kept
    assert torch.equal(model.policy.anchors, fitted)
    plain = _model(num_anchors=0)
    assert with_anchors(plain, Plans(plans)) is plain and not hasattr(plain.policy, "anchors")


# --- best-of-N candidates ------------------------------------------------------------------------------------------
@torch.no_grad()
@pytest.mark.parametrize("decoder", ["ar", "flow"])
def test_sampling_decoders_give_n_different_reproducible_candidates(decoder):
    torch.manual_seed(0)
    model = DriveVLAW0ForDriving(micro_config(expert_decoder=decoder, num_hidden_layers=2)).eval()
    for p in model.policy.parameters():  # zero-initialised heads would make every sample the same
        p.add_(torch.randn_like(p) * 0.3)
    frames, texts, ego_poses, command, _ = _batch(model.config, 2)

    def candidates(seed: int, **kwargs) -> torch.Tensor:
        return model.predict_candidates(frames, texts, ego_poses, command, 5, torch.Generator().manual_seed(seed),
                                        **kwargs)

    first = candidates(0)
    assert first.shape == (2, 5, model.config.num_poses, 3) and torch.isfinite(first).all()
    assert torch.equal(candidates(0), first)
    assert (first[:, 1:] - first[:, :1]).abs().amax((2, 3)).min() > 0  # every sample differs from the first
    if decoder == "ar":  # temperature 0 samples the greedy plan every time
        greedy = candidates(1, temperature=0.0)
        expected = model.predict_trajectory(frames, texts, ego_poses, command)
        assert torch.equal(greedy, expected[:, None].expand_as(greedy))


@torch.no_grad()
def test_anchor_candidates_are_the_best_scored_anchors_in_order_and_regression_has_none():
    model = _model().eval()
    model.policy.anchors.copy_(fit_anchors(driving_motion(30, seed=1)[1], model.config.num_anchors))
    for p in model.policy.anchor_head.parameters():
        p.add_(torch.randn_like(p) * 0.3)
    frames, texts, ego_poses, command, _ = _batch(model.config, 2)
    got = model.predict_candidates(frames, texts, ego_poses, command, 3)
    prompt = model.build_inputs(frames, texts, ego_poses, command)
    ctx, mask = model.policy.context(prompt.sequence)
    order = model.policy._query_pass(ctx, mask, prompt.state).argsort(-1, descending=True)[:, :3]
    assert torch.equal(got, model.policy.anchors[order])
    assert torch.equal(got[:, 0], model.predict_trajectory(frames, texts, ego_poses, command))
    for plain in (_model(num_anchors=0), _model(num_anchors=0, use_action_expert=False)):
        with pytest.raises(ValueError, match="one plan|action expert"):
            plain.predict_candidates(frames, texts, ego_poses, command, 3)
