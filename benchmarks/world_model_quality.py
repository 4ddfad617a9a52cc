"""Is the world model better than copying the frame, and does it use the plan? Next-frame error on held-out scenes.

    python benchmarks/world_model_quality.py [--checkpoint DIR] [--scenes 25] [--split builtin:navtest]

Held-out samples are made like the training data (`training.collect.expert_samples`) from scenes of a split the
policy was not trained on (navtest; it trains on navtrain): history frames, ego poses, command, the expert's plan
and the true frame 1 s later on that plan. Per sample, the frame 1 s ahead is predicted greedily
(`DriveVLAW0ForDriving.predict_next_frame`, temperature 0) given the true plan, and given a stand-still plan (8 poses
at the origin), and compared with the true frame. Mean absolute pixel error, 0-255 scale, over all pixels:
- wm_mae: the prediction with the true plan;
- copy_mae: the current frame as the prediction (nothing moves);
- wm_mae_standstill_plan: the prediction with the stand-still plan (a world model that follows its action is
  further from the truth with it);
- reconstruction_mae: the true next frame through the image tokenizer (encode + decode), the floor the world model
  cannot go below;
- copy_codes_mae: the current frame through the image tokenizer as the prediction (copying in code space: the
  baseline that pays the tokenizer's loss as the world model does);
- wm_mae_teacher_forced: each code predicted (argmax) from the true codes before it, not the model's own: what the
  model knows one code at a time, without the drift of decoding a whole frame from its own guesses (Emu3 track only).
Emu3 track, in code space (the fraction of the next frame's true codes each gets right, 0-1): code_accuracy (greedy,
the true plan), code_accuracy_teacher_forced and code_accuracy_copy (the current frame's codes): where greedy falls
below teacher forcing, the gap is drift; and code_accuracy_teacher_forced_other_scene, teacher forcing with another
scene's history frames in the context (those of the samples one scene earlier, cyclically): the closer it is to
code_accuracy_teacher_forced, the less the world model reads the frame it is asked to continue.
On the Qwen2.5-VL track the prediction is the diffusion world model's sample (DDPM from a generator seeded with 0 per
chunk of samples) decoded by the VAE, and the image tokenizer is the VAE (a posterior sample, seeded alike).
Prints a line per measure to stderr, then one JSON object on the last stdout line with those keys and "samples".
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from tqdm import tqdm

from agents.drivevla_w0 import DEFAULT_CHECKPOINT, load_policy
from agents.lane_following_pdm import LaneFollowingPDMPlanner
from policies.model import frames_to_model
from policies.noise import BatchNoise
from scenarios.splits import resolve_split
from sim.state import TrajectorySampling
from training.collect import CollectConfig, expert_samples


def held_out_samples(model, split: str, scenes: int) -> dict[str, torch.Tensor]:
    """Samples of the first `scenes` scenes of `split`, as the training data holds them (stacked tensors), and per
    sample another scene's history frames ("other_scene")."""
    config = CollectConfig.for_policy(model.config)
    planner, sampling = LaneFollowingPDMPlanner(), TrajectorySampling()
    rows: dict[str, list] = {}
    for ref in tqdm(resolve_split(split, scenes), desc="held-out samples", file=sys.stderr):
        got = expert_samples(ref.load(), config, planner, sampling)
        for name, values in got.items():
            rows.setdefault(name, []).extend(values)
    batch = {name: torch.from_numpy(np.stack(v)) for name, v in rows.items() if name != "meta"}
    batch["text"] = [m["text"] for m in rows["meta"]]
    # Another scene's history frames for each sample: the samples one scene earlier (every scene gives as many).
    batch["other_scene"] = batch["history_frames"].roll(len(got["meta"]), 0)
    return batch


def mae(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean absolute error in 0-255 units of (…,3,H,W) frames in [0,1]."""
    return float((predicted.clamp(0, 1) - truth).abs().mean() * 255)


@torch.no_grad()
def teacher_forced_codes(model, images: torch.Tensor, common: tuple, plan: torch.Tensor,
                         true_codes: torch.Tensor) -> torch.Tensor:
    """(B,h,w) the most likely image code at each position of the next frame given the true codes before it."""
    c = model.config
    seq = model._inputs(images, *common, plan, open_image=True).sequence
    codes = true_codes.flatten(1) + c.image_offset
    ids = torch.cat([seq.input_ids, codes], 1)
    mask = torch.cat([seq.attention_mask, torch.ones_like(codes)], 1)
    hidden = model.backbone.model(input_ids=ids, attention_mask=mask,
                                  position_ids=(mask.cumsum(1) - 1).clamp(min=0)).last_hidden_state
    logits = model.backbone.lm_head(hidden[:, seq.input_ids.shape[1] - 1:-1])
    image = logits[..., c.image_offset:c.image_offset + c.vq_codebook_size]
    return image.argmax(-1).view(-1, *c.image_grid)


def round_trip(model, frames: torch.Tensor) -> torch.Tensor:
    """Frames (B,3,H,W) through the image tokenizer: VQ codes, or a VAE latent (posterior draws seeded with 0)."""
    if model.vq is not None:
        return model.vq.decode(model.vq.encode(frames))
    return model.vae.decode_latents(model.vae.latents(frames, BatchNoise(torch.Generator().manual_seed(0))))


@torch.no_grad()
def measure(model, batch: dict, chunk: int = 8) -> dict:
    """The errors over the batch (module docstring), in chunks of `chunk` samples."""
    vq = model.vq is not None
    sums = {"wm_mae": 0.0, "copy_mae": 0.0, "wm_mae_standstill_plan": 0.0, "reconstruction_mae": 0.0,
            "copy_codes_mae": 0.0} | ({"wm_mae_teacher_forced": 0.0, "code_accuracy": 0.0,
                                       "code_accuracy_teacher_forced": 0.0, "code_accuracy_copy": 0.0,
                                       "code_accuracy_teacher_forced_other_scene": 0.0} if vq else {})
    n = len(batch["text"])
    for start in tqdm(range(0, n, chunk), desc="predicting", file=sys.stderr):
        part = slice(start, start + chunk)
        history = frames_to_model(batch["history_frames"][part])
        truth = frames_to_model(batch["future_frames"][part])
        images = model.encode_frames(history)
        common = ([*batch["text"][part]], batch["ego_poses"][part], batch["command"][part].long())
        plan = batch["trajectories"][part]
        predicted, codes = model.predict_next_frame(images, *common, plan, generator=torch.Generator().manual_seed(0))
        standstill, _ = model.predict_next_frame(images, *common, torch.zeros_like(plan),
                                                 generator=torch.Generator().manual_seed(0))
        k = truth.shape[0]
        sums["wm_mae"] += mae(predicted, truth) * k
        sums["copy_mae"] += mae(history[:, -1], truth) * k
        sums["wm_mae_standstill_plan"] += mae(standstill, truth) * k
        sums["reconstruction_mae"] += mae(round_trip(model, truth), truth) * k
        sums["copy_codes_mae"] += mae(round_trip(model, history[:, -1]), truth) * k
        if vq:
            true_codes = model.vq.encode(truth).view(-1, *model.config.image_grid)
            forced = teacher_forced_codes(model, images, common, plan, true_codes)
            sums["wm_mae_teacher_forced"] += mae(model.vq.decode(forced), truth) * k
            other = model.encode_frames(frames_to_model(batch["other_scene"][part]))
            unrelated = teacher_forced_codes(model, other, common, plan, true_codes)
            for key, guess in (("code_accuracy", codes), ("code_accuracy_teacher_forced", forced),
                               ("code_accuracy_copy", images[:, -1]),
                               ("code_accuracy_teacher_forced_other_scene", unrelated)):
                sums[key] += float((guess == true_codes).float().mean()) * k
    return {"samples": n} | {key: round(value / n, 3) for key, value in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--scenes", type=int, default=25, help="held-out scenes (2 samples each)")
    parser.add_argument("--split", default="builtin:navtest")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_policy(args.checkpoint)
    if not model.config.use_world_model:
        raise SystemExit("this benchmark measures the world model; the checkpoint has none")
    result = measure(model, held_out_samples(model, args.split, args.scenes))
    for key, value in result.items():
        print(f"{key:28s} {value}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
