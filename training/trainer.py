"""Stage 0-2 training of DriveVLAW0ForDriving on collected expert data, on `accelerate`, on one process or many, resumable.

Stage 0 trains the image tokenizer (the VQ-VAE: reconstruction + commitment, EMA codebook; on the Qwen track the
VAE: reconstruction + KL); stage 1 the backbone (on the Qwen track with its ViT and the diffusion world model) on
the action + world-model losses with the tokenizer frozen; stage 2 the action expert on its action loss, with the
backbone trained at `backbone_lr_scale` x the learning rate (1, as the official scripts' `--freeze_vlm False`;
0 freezes it).

`batch_size` is the global batch: on N processes (DDP, FSDP or DeepSpeed under `accelerate launch`) each takes a
contiguous 1/N of it, the model is called through the wrapper accelerate puts around it (so gradients are
averaged and autocast applies), the schedule steps once per optimizer step, and every random draw of a loss is
made for the whole global batch (`policies.noise.BatchNoise`): a step on N processes is the step one process
takes on the same batch. Only the main process writes metrics.csv, TensorBoard logs and the final model.

Held-out evaluation (`eval_every`, with an `eval_dataset`): every `eval_every` steps and at the last, the stage's
losses on the first `eval_samples` held-out samples (whole global batches), the model in eval mode and each
batch's noise seeded alike at every evaluation, so the val_* columns compare across steps and with the training
losses (over- or underfitting). Evaluating reads no random state the training uses: a run trains the same with it.

The final model's folder holds `training.json`, its training record: per stage so far (the earlier ones as the
pipeline passes them on), the TrainConfig, the steps, the training seconds (the steps' wall time summed over the
processes a resumed stage ran in, evaluation left out; the lost steps of an interrupted process are not counted;
null when resumed from a checkpoint that did not keep it), and the training and held-out data (split, content
hash, samples; null for an in-memory data set).

Determinism across interruptions: batch k of a run is a fixed function of (seed, k) (a seeded
permutation per epoch) and the loss's noise generator is seeded with (seed, k), so a run resumed from the
checkpoint of step s computes exactly the steps an uninterrupted run computes after s. Checkpoints
(accelerate state: model, optimizer, scheduler, RNG states + `trainer_state.json`) are written to a temporary
folder and renamed; the newest complete one is resumed automatically.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from policies.model import DriveVLAW0ForDriving
from policies.noise import BatchNoise
from training.dataset import ExpertDataset, collate
from training.record import write_training_record

LOSSES = ("loss", "action_loss", "world_model_loss", "reconstruction_loss")
METRIC_COLUMNS = ("step", *LOSSES, "lr", "samples_per_s", *(f"val_{name}" for name in LOSSES))
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")  # auto: bf16 where CUDA is, float32 elsewhere


@dataclass(frozen=True)
class TrainConfig:
    stage: int  # 0 tokenizer, 1 backbone + world model, 2 action expert
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine decay to lr * this
    grad_clip: float = 1.0
    backbone_lr_scale: float = 1.0  # stage 2: the backbone trains at this x lr (official: not frozen); 0 freezes it
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    mixed_precision: str = "auto"  # one of MIXED_PRECISION: autocast to bf16 / fp16 (with loss scaling) or float32
    gradient_checkpointing: bool = False  # recompute each transformer layer in the backward pass (less memory)
    eval_every: int = 0  # steps between held-out evaluations (module docstring); 0: none
    eval_samples: int = 256  # held-out samples an evaluation takes (the first ones, in whole batches)

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision={self.mixed_precision!r}; choose from {', '.join(MIXED_PRECISION)}")

    def precision(self) -> str:
        """The `accelerate` mixed-precision setting this config asks for."""
        if self.mixed_precision == "auto":
            return "bf16" if torch.cuda.is_available() else "no"
        return self.mixed_precision


def trainable_groups(model: DriveVLAW0ForDriving, config: TrainConfig) -> list[dict]:
    """Optimizer parameter groups of a stage; everything else is frozen (requires_grad False). A trained
    parameter is one the stage's loss reaches (DDP requires each to get a gradient at every step)."""
    for p in model.parameters():
        p.requires_grad_(False)
    if config.stage == 0:
        tokenizer = model.vae if model.vae is not None else model.vq
        if tokenizer is None:
            raise ValueError("stage 0 trains the image tokenizer, which this configuration does not have")
        groups = [list(tokenizer.parameters())]
    elif config.stage == 1:
        parts = [model.backbone, model.diffusion_wm]
        groups = [[p for part in parts if part is not None for p in part.parameters()]]
    elif config.stage == 2:
        if model.policy is None:
            raise ValueError("stage 2 trains the action expert; the configuration has use_action_expert=False")
        backbone = {id(p) for p in model.policy.backbone.parameters()}
        groups = [[p for p in model.policy.parameters() if id(p) not in backbone]]
        if config.backbone_lr_scale > 0:
            groups.append(expert_context_parameters(model))
    else:
        raise ValueError(f"stage must be 0, 1 or 2, got {config.stage!r}")
    for group in groups:
        for p in group:
            p.requires_grad_(True)
    scales = [1.0, config.backbone_lr_scale]
    return [{"params": g, "lr": config.lr * s} for g, s in zip(groups, scales)]


def expert_context_parameters(model: DriveVLAW0ForDriving) -> list[torch.nn.Parameter]:
    """The backbone parameters the action expert's loss reaches: everything that computes the layers' K/V of the
    context (embeddings, image projection, every layer but the last, the last one's input norm and K/V
    projections). The LM head, the final norm and the rest of the last layer do not feed the expert."""
    backbone = model.policy.backbone
    last = backbone.model.layers[-1]
    feeds_expert = {id(p) for m in (last.input_layernorm, last.self_attn.k_proj, last.self_attn.v_proj)
                    for p in m.parameters()}
    unreached = {id(p) for m in (backbone.lm_head, backbone.model.norm, last) for p in m.parameters()} - feeds_expert
    return [p for p in backbone.parameters() if id(p) not in unreached]


def _has_accelerator() -> bool:
    """Whether torch sees a GPU (or another accelerator) to train on."""
    probe = getattr(torch, "accelerator", None)  # torch >= 2.6
    return probe.is_available() if probe is not None else torch.cuda.is_available()


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _check_launch(accelerator: Accelerator, config: TrainConfig) -> None:
    """ValueError where this accelerator would not train as asked: processes that would each train alone, a mixed
    precision accelerate would silently drop, a schedule stepping once per process, an uneven split of the batch."""
    launched, processes = int(os.environ.get("WORLD_SIZE", "1")), accelerator.num_processes
    if launched != processes:
        raise ValueError(f"launched as {launched} processes, but accelerate runs {processes}: each would train "
                         "alone (on CPUs, launch with `accelerate launch --cpu` or torchrun)")
    precision = accelerator.mixed_precision
    if precision != "no" and not (accelerator.native_amp or accelerator.distributed_type == DistributedType.DEEPSPEED):
        raise ValueError(f"mixed precision {precision} is not available on {accelerator.device} (accelerate would "
                         "train in float32 without saying so); fp16 needs a GPU")
    if not accelerator.split_batches:
        raise ValueError("the trainer's accelerator must split batches (batch_size is the global batch), or the "
                         "learning-rate schedule steps once per process")
    if config.batch_size % processes:
        raise ValueError(f"a global batch of {config.batch_size} does not split evenly over {processes} processes")


class Trainer:
    """Trains one stage of `model` on `dataset`, writing checkpoints, metrics.csv and TensorBoard logs to `run_dir`.
    A given `accelerator` must split batches (`DataLoaderConfiguration(split_batches=True)`): `batch_size` is global."""

    def __init__(self, model: DriveVLAW0ForDriving, dataset: ExpertDataset, config: TrainConfig, run_dir: str | Path,
                 accelerator: Accelerator | None = None, show_progress: bool = True,
                 eval_dataset: ExpertDataset | None = None, earlier_stages: tuple[dict, ...] = ()):
        if len(dataset) < config.batch_size:
            raise ValueError(f"{len(dataset)} samples cannot fill a batch of {config.batch_size}")
        if config.eval_every and eval_dataset is None:
            raise ValueError(f"eval_every is {config.eval_every}, but no held-out data set was given")
        if config.eval_every and min(len(eval_dataset), config.eval_samples) < config.batch_size:
            raise ValueError(f"{min(len(eval_dataset), config.eval_samples)} held-out samples (of eval_samples "
                             f"{config.eval_samples}) cannot fill a batch of {config.batch_size}")
        self.config, self.dataset, self.run_dir = config, dataset, Path(run_dir)
        self.eval_dataset = eval_dataset
        self.earlier_stages = tuple(earlier_stages)  # the training records of the stages the model comes from
        # cpu=True where torch has no accelerator: accelerate then joins a multi-process CPU launch (torchrun,
        # gloo) instead of running each process alone.
        self.accelerator = accelerator or Accelerator(
            mixed_precision=config.precision(), cpu=not _has_accelerator(),
            dataloader_config=DataLoaderConfiguration(split_batches=True))
        _check_launch(self.accelerator, config)
        self.show_progress = show_progress
        groups = trainable_groups(model, config)
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.step = 0
        # Training wall time over every process that ran this stage (evaluation left out); None once it is unknown
        # (resumed from a checkpoint of a version that did not keep it).
        self.train_seconds: float | None = 0.0

    # --- data ---------------------------------------------------------------------------------------
    def share(self) -> slice:
        """This process's rows of a global batch: a contiguous 1/N of it."""
        per_process = self.config.batch_size // self.accelerator.num_processes
        start = self.accelerator.process_index * per_process
        return slice(start, start + per_process)

    def batch_indices(self, step: int) -> torch.Tensor:
        """Dataset positions of batch `step` (this process's share): a fixed function of (seed, step)."""
        n, b = len(self.dataset), self.config.batch_size
        per_epoch = n // b
        epoch, k = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed * 100_003 + epoch))
        return order[k * b : (k + 1) * b][self.share()]

    def batch(self, step: int) -> dict:
        """This process's share of global batch `step`, collated and on the accelerator's device."""
        return self._on_device(collate([self.dataset[int(i)] for i in self.batch_indices(step)]))

    def _on_device(self, batch: dict) -> dict:
        device = self.accelerator.device
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    # --- one step -----------------------------------------------------------------------------------
    def compute_loss(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        """The stage's losses of this process's share of batch `step`, through the (wrapped) model."""
        return self._losses(batch, self.config.seed * 1_000_003 + step)

    def _losses(self, batch: dict, noise_seed: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator(self.accelerator.device).manual_seed(noise_seed)
        noise = BatchNoise(generator, self.share(), self.config.batch_size)
        return self.model(**batch, stage=self.config.stage, noise=noise).parts()

    def _global_mean(self, parts: dict[str, torch.Tensor]) -> dict[str, float]:
        """The global batch's losses: the mean of the processes' (equal) shares."""
        return {k: float(v) for k, v in self.accelerator.reduce(
            {k: v.detach().float() for k, v in parts.items()}, reduction="mean").items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The stage's mean losses on the held-out set, as val_<loss> (module docstring)."""
        b = self.config.batch_size
        batches = min(len(self.eval_dataset), self.config.eval_samples) // b
        self.model.eval()
        sums: dict[str, float] = {}
        for k in range(batches):
            rows = range(k * b, (k + 1) * b)[self.share()]
            batch = self._on_device(collate([self.eval_dataset[i] for i in rows]))
            # Noise seeded with k: the same draws at every evaluation, and in every run whatever its seed.
            for name, value in self._global_mean(self._losses(batch, k)).items():
                sums[name] = sums.get(name, 0.0) + value
        self.set_modes()
        return {f"val_{name}": total / batches for name, total in sums.items()}

    def train_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        """One optimizer step on this process's share `batch` of global batch `step`; its losses, detached."""
        parts = self.compute_loss(batch, step)
        self.accelerator.backward(parts["loss"])
        if self.config.grad_clip:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {k: v.detach() for k, v in parts.items()}

    def set_modes(self) -> None:
        """Train mode, with the frozen parts (the tokenizer after stage 0, a frozen backbone) in eval mode."""
        model = self.accelerator.unwrap_model(self.model)
        model.train()
        for tokenizer in (model.vq, model.vae) if self.config.stage > 0 else ():
            if tokenizer is not None:
                tokenizer.eval()  # frozen tokenizer: no EMA codebook updates
        if self.config.stage == 2 and self.config.backbone_lr_scale == 0:
            model.policy.backbone.eval()

    # --- loop ---------------------------------------------------------------------------------------
    def train(self, stop_after: int | None = None) -> Path:
        """Run (or resume) to `config.steps`; `stop_after` ends early after that many steps (tests). Returns
        the folder of the final model (`save_pretrained` layout) once all steps are done."""
        self.resume()
        main = self.accelerator.is_main_process
        writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step) if main else None
        metrics = MetricsLog(self.run_dir / "metrics.csv", self.step) if main else None
        self.set_modes()
        end = self.config.steps if stop_after is None else min(self.config.steps, self.step + stop_after)
        bar = tqdm(total=self.config.steps, initial=self.step, desc=f"stage {self.config.stage}",
                   disable=not self.show_progress or not main)
        started, done, resumed_seconds = time.perf_counter(), 0, self.train_seconds
        while self.step < end:
            parts = self.train_step(self.batch(self.step), self.step)
            self.step += 1
            done += 1
            rate = done * self.config.batch_size / (time.perf_counter() - started)
            if resumed_seconds is not None:
                self.train_seconds = resumed_seconds + time.perf_counter() - started
            row = {"step": self.step, "lr": self.scheduler.get_last_lr()[0], "samples_per_s": rate,
                   **self._global_mean(parts)}
            evaluated = self.config.eval_every and (self.step % self.config.eval_every == 0
                                                    or self.step == self.config.steps)
            if evaluated:
                began = time.perf_counter()
                row |= self.evaluate()
                started += time.perf_counter() - began  # samples_per_s counts training time only
            if main and (self.step % self.config.log_every == 0 or self.step == end or evaluated):
                metrics.write(row)
                for key in METRIC_COLUMNS[1:]:
                    if key in row and key != "samples_per_s":
                        writer.add_scalar(f"stage{self.config.stage}/{key}", row[key], self.step)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", samples_per_s=f"{rate:.1f}")
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                self.save_checkpoint()
        bar.close()
        if main:
            writer.close()
            metrics.close()
        return self.save_final() if self.step >= self.config.steps else self.run_dir

    # --- checkpoints ----------------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        folder = self.run_dir / "checkpoints"
        found = [p for p in folder.glob("step_*") if (p / "trainer_state.json").exists()] if folder.exists() else []
        return sorted(found)

    def save_checkpoint(self) -> Path:
        final = self.run_dir / "checkpoints" / f"step_{self.step:07d}"
        tmp = final.with_name(final.name + ".tmp")
        acc = self.accelerator
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()  # no process writes into the folder before it is emptied ...
        acc.save_state(str(tmp))
        acc.wait_for_everyone()  # ... or after it is renamed (each process writes its own RNG state)
        if acc.is_main_process:
            state = {"step": self.step, "train_seconds": self._rounded_seconds(), "config": asdict(self.config)}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in self.checkpoints()[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def resume(self) -> None:
        """Load the newest complete checkpoint of this run (model, optimizer, scheduler, RNG states), if any;
        a fresh run seeds the global RNG (the tokenizer's dead-code restarts draw from it)."""
        found = self.checkpoints()
        if not found:
            torch.manual_seed(self.config.seed)
            return
        self.accelerator.load_state(str(found[-1]))
        state = json.loads((found[-1] / "trainer_state.json").read_text())
        self.step = state["step"]
        self.train_seconds = state.get("train_seconds")  # absent in checkpoints of older versions: unknown

    def save_final(self) -> Path:
        """The trained model, saved by the main process; every process returns once it is there (the next stage
        of a pipeline loads it on each)."""
        out = self.run_dir / "model"
        acc = self.accelerator
        state = acc.get_state_dict(self.model)  # gathers sharded (FSDP / ZeRO-3) weights; every process takes part
        if acc.is_main_process:
            acc.unwrap_model(self.model).save_pretrained(out, state_dict=state)
            write_training_record(out, [*self.earlier_stages, self.stage_record()])
        acc.wait_for_everyone()
        return out

    def stage_record(self) -> dict:
        """This stage's entry of the training record (module docstring)."""
        def data(dataset):
            return dataset.record() if isinstance(dataset, ExpertDataset) else None
        return {"stage": self.config.stage, "steps": self.step, "train_seconds": self._rounded_seconds(),
                "config": asdict(self.config), "data": data(self.dataset), "held_out": data(self.eval_dataset)}

    def _rounded_seconds(self) -> float | None:
        return None if self.train_seconds is None else round(self.train_seconds, 3)


class MetricsLog:
    """metrics.csv of a run. On resume the rows past the resumed step are dropped (they are recomputed
    identically): the kept rows go to a new file that replaces the old one, then rows are appended."""

    def __init__(self, path: Path, resumed_step: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if path.exists():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames and reader.fieldnames[0] == "step":  # else unreadable: start afresh
                    rows = [r for r in reader if r.get("step", "").isdigit() and int(r["step"]) <= resumed_step]
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        self._handle = path.open("a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=METRIC_COLUMNS)

    def write(self, row: dict) -> None:
        self._writer.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


__all__ = ["METRIC_COLUMNS", "MIXED_PRECISION", "TrainConfig", "Trainer", "MetricsLog", "expert_context_parameters",
           "lr_factor", "trainable_groups"]
