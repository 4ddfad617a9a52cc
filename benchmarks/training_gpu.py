"""Training step time, throughput, peak memory and decision latency of DriveVLA-W0 presets on this device (CUDA, else CPU).

For each preset (`--presets`) the model of `training.pipeline.model_config(preset)` (query action expert, AR world
model; random init, seed 0), its action tokenizer fitted on made-up drives as `fit_action_tokenizer` fits one on a
data set, is built on the device and trained by `training.trainer.Trainer` on synthetic samples shaped as the data
set gives them (uint8 frames, ego poses, trajectory, command, text; one command text and one made-up drive, so every
sequence has the same length and no row is padded):
- step_ms: median over `--steps` steps after `--warmup` warm-up steps of `Trainer.train_step`, the optimizer step
  `Trainer.train` takes (the loss through the accelerate-wrapped model and its autocast, backward, gradient
  clipping, AdamW, schedule), without its logging and checkpoints; the batch is collated and moved to the device
  before the clock starts. Every step ends in a synchronising `float(loss)`, as the trainer's logging does;
- tokens_per_s: training-sequence tokens (padded length) x global batch / step time;
- peak_memory_bytes: `torch.cuda.max_memory_allocated` over the training steps (the largest over processes under
  `accelerate launch`); null on the CPU, where torch keeps no allocator statistics;
- decision_ms: median `predict_trajectory` latency at batch 1 after the training steps, model.eval(), weights cast to
  bf16 on CUDA (float32 on the CPU).
Mixed precision is the trainer's "auto": bf16 autocast on CUDA, float32 on the CPU. `--gradient-checkpointing` turns
on activation checkpointing (TrainConfig.gradient_checkpointing). A preset that runs out of GPU memory is recorded as
{"error": "out of memory", ...} and the next one runs: the paper preset does not train on one 80 GB GPU unsharded
(docs/results/training_memory_paper.md). Under `accelerate launch --config_file ...` the trainer's accelerator
shards the model as configured and `--batch-size` is the global batch.

Progress goes to stderr; the last stdout line (main process) is one JSON object.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402

from benchmarks.made_up_drives import made_up_drives, with_fitted_tokenizer  # noqa: E402
from policies.config import DriveVLAW0Config  # noqa: E402
from policies.model import DriveVLAW0ForDriving, frames_to_model  # noqa: E402
from training.pipeline import model_config  # noqa: E402
from training.trainer import TrainConfig, Trainer  # noqa: E402

SEED = 0
COMMAND_TEXT = "turn left at the next intersection"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def preset_config(preset: str) -> DriveVLAW0Config:
    """`model_config(preset)` with its action tokenizer (quantile bounds, FAST BPE) fitted on `made_up_drives`."""
    return with_fitted_tokenizer(model_config(preset))


def synthetic_samples(config, n: int) -> list[dict]:
    """n samples in the layout of `training.dataset.ExpertDataset` (a list serves as the trainer's dataset): random
    frames, the first made-up drive's ego poses and plan, command 0 ("left")."""
    g = torch.Generator().manual_seed(SEED)
    h, w, f = config.image_height, config.image_width, config.num_history_frames
    ego_poses, plans = (x[0] for x in made_up_drives())
    return [{"history_frames": torch.randint(0, 256, (f, h, w, 3), generator=g, dtype=torch.uint8),
             "future_frame": torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8),
             "trajectory": plans.clone(), "ego_poses": ego_poses.clone(),
             "command": torch.tensor(0), "text": COMMAND_TEXT} for _ in range(n)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _peak(device: torch.device, trainer: Trainer | None = None) -> int | None:
    """The device's peak allocated bytes since the last reset; the largest over the processes of a launch."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device)
    if trainer is not None and trainer.accelerator.num_processes > 1:
        peak = int(trainer.accelerator.reduce(torch.tensor(peak, device=device), reduction="max"))
    return peak


def measure_training(model: DriveVLAW0ForDriving, args, device: torch.device, run_dir: str) -> tuple[dict, Trainer]:
    samples = synthetic_samples(model.config, args.batch_size)
    config = TrainConfig(stage=args.stage, steps=args.warmup + args.steps, batch_size=args.batch_size, warmup_steps=1,
                         gradient_checkpointing=args.gradient_checkpointing, seed=SEED)
    trainer = Trainer(model, samples, config, run_dir, show_progress=False)
    trainer.set_modes()  # train mode, frozen tokenizer in eval mode, as `train` sets them
    with torch.no_grad():  # the sequence the model builds from a batch, as its forward does
        b = trainer.batch(0)
        inputs = model.build_inputs(frames_to_model(b["history_frames"]), b["text"], b["ego_poses"], b["command"],
                                    b["trajectory"], frames_to_model(b["future_frame"]))
    length = inputs.sequence.input_ids.shape[1]
    del inputs, b
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        batch = trainer.batch(step)
        _sync(device)
        started = time.perf_counter()
        losses.append(float(trainer.train_step(batch, step)["loss"]))  # synchronises, as the trainer's logging does
        _sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
        log(f"  step {step + 1}/{args.warmup + args.steps}: loss {losses[-1]:.4f}, {time.perf_counter() - started:.3f} s")
    step_s = statistics.median(times)
    return {"sequence_length": length, "step_ms": round(step_s * 1e3, 2), "step_ms_all": [round(t * 1e3, 2) for t in times],
            "tokens_per_s": round(length * args.batch_size / step_s, 1), "losses": [round(x, 4) for x in losses],
            "peak_memory_bytes": _peak(device, trainer)}, trainer


def measure_decision(model: DriveVLAW0ForDriving, args, device: torch.device) -> dict:
    """Median batch-1 `predict_trajectory` latency of the model in eval mode (bf16 weights on CUDA)."""
    if device.type == "cuda":
        model.to(torch.bfloat16)
        torch.cuda.reset_peak_memory_stats(device)
    model.eval()
    sample = synthetic_samples(model.config, 1)[0]
    frames = frames_to_model(sample["history_frames"][None]).to(device)
    ego_poses, command = (sample[k][None].to(device) for k in ("ego_poses", "command"))
    generator = torch.Generator(device).manual_seed(SEED)
    times = []
    for k in range(args.decision_warmup + args.decisions):
        _sync(device)
        started = time.perf_counter()
        poses = model.predict_trajectory(frames, [sample["text"]], ego_poses, command, generator=generator)
        _sync(device)
        if k >= args.decision_warmup:
            times.append(time.perf_counter() - started)
    if not torch.isfinite(poses.float()).all():
        raise RuntimeError("the decision gave non-finite poses")
    return {"decision_ms": round(statistics.median(times) * 1e3, 2), "decision_dtype": str(model.dtype).replace("torch.", ""),
            "decision_peak_memory_bytes": _peak(device)}


def bench(preset: str, args, device: torch.device) -> dict:
    """Training step and decision of one preset; an out-of-memory stops that part and is recorded."""
    config = preset_config(preset)
    log(f"[{preset}] building on {device}")
    torch.manual_seed(SEED)
    result: dict = {"stage": args.stage, "batch_size": args.batch_size,
                    "activation_checkpointing": args.gradient_checkpointing}
    model = trainer = None
    try:
        with torch.device(device):
            model = DriveVLAW0ForDriving(config)
        result["parameters"] = sum(p.numel() for p in model.parameters())
        with tempfile.TemporaryDirectory() as run_dir:
            training, trainer = measure_training(model, args, device, run_dir)
        result.update(training)
        precision = trainer.accelerator.mixed_precision
        result["mixed_precision"] = "fp32" if precision == "no" else precision  # bf16 / fp16 autocast, or none
        result["processes"] = trainer.accelerator.num_processes
        log(f"[{preset}] step {result['step_ms']} ms, {result['tokens_per_s']} tokens/s, peak {result['peak_memory_bytes']}")
    except torch.OutOfMemoryError:
        result.update({"error": "out of memory", "where": "training" if model is not None else "building the model",
                       "peak_memory_bytes": _peak(device)})
        log(f"[{preset}] out of memory while {result['where']}")
    # Drop the optimizer, its states and the gradients before the decision.
    trainer = None
    if model is not None:
        model.zero_grad(set_to_none=True)
    _free(device)
    if model is not None and result.get("processes", 1) > 1:
        result["decision_note"] = "not measured under a multi-process launch (sharded weights); run it in one process"
    elif model is not None:
        try:
            result.update(measure_decision(model, args, device))
            log(f"[{preset}] decision {result['decision_ms']} ms")
        except torch.OutOfMemoryError:
            result["decision_error"] = "out of memory"
            log(f"[{preset}] out of memory in the decision")
    model = None
    _free(device)
    return result


def main(argv: list[str] | None = None) -> dict:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small,paper" if cuda else "tiny,small",
                        help="comma-separated presets (default: tiny,small,paper on CUDA, tiny,small on the CPU)")
    parser.add_argument("--batch-size", type=int, default=8, help="global training batch (default 8)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps first (default 2)")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=1, help="training stage (default 1)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="activation checkpointing on")
    parser.add_argument("--decisions", type=int, default=10, help="timed decisions (default 10)")
    parser.add_argument("--decision-warmup", type=int, default=2, help="untimed decisions first (default 2)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.decisions < 1:
        parser.error("--steps and --decisions must be at least 1")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    started = time.perf_counter()
    out = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
           "note": None if cuda else ("no CUDA device: CPU run, float32 (the trainer's 'auto' precision); "
                                      "peak_memory_bytes is null as torch keeps no allocator statistics on the CPU"),
           "presets": {}}
    for preset in args.presets.split(","):
        out["presets"][preset] = bench(preset.strip(), args, device)
    out["runtime_s"] = round(time.perf_counter() - started, 1)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
