"""Stages 0-2 in order: each stage starts from the previous stage's model folder; `RUN/stage{k}/model` is its result.

The model is built once, at stage 0, from a named preset (`tiny`, `small`, `paper`) with the action expert
attached, so stage 2 needs no weight remapping; `world_model=False` gives the action-only baseline (the
same model with the world-model loss switched off). The action tokenizer (quantile bounds and FAST BPE) is
fitted on the run's training data before its first stage, unless the config or the previous stage's model has
one: a run that starts at stage 1 or 2 keeps the tokenizer its earlier stages were trained with. On the Qwen2.5-VL
track (stages 0 and 1; it has no action expert) the VAE's latent scaling factor is fitted the same way, after stage
0, on the run's frames. A query expert with an anchor head (`num_anchors`) gets its anchors before stage 2: k-means
centres of the run's training plans.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from policies.action_tokens import fit_action_tokenizer
from policies.anchors import fit_anchors
from policies.checkpoint import quiet_loading
from policies.config import DriveVLAW0Config
from policies.convert import load_official_vision_tokenizer
from policies.model import DriveVLAW0ForDriving, frames_to_model
from policies.vae import fit_scaling_factor
from training.dataset import ExpertDataset
from training.record import training_record, write_training_record
from training.trainer import TrainConfig, Trainer

# Per-stage defaults for the tiny model on a CPU (what `w0sim train --all` runs unless told otherwise).
STAGE_DEFAULTS = {
    # 1,500 tokenizer steps: at 300 the tiny VQ-VAE reconstructs held-out frames worse (mean absolute error 6.7 of
    # 255) than copying the previous frame predicts them (6.5), a floor no world model on its codes can go below.
    0: TrainConfig(stage=0, steps=1500, batch_size=16, lr=2e-3, warmup_steps=20),
    # 2,400 backbone steps: over 800 (the earlier default) the world model's teacher-forced next-frame error on
    # held-out frames falls from 5.3 to 4.8 of 255, its greedy error from 9.3 to 9.2.
    1: TrainConfig(stage=1, steps=2400, batch_size=16, lr=1e-3, warmup_steps=50),
    2: TrainConfig(stage=2, steps=400, batch_size=16, lr=1e-3, warmup_steps=30),
}


def model_config(preset: str, world_model: bool = True, expert_decoder: str = "query", image_input: str = "vq",
                 **overrides) -> DriveVLAW0Config:
    """The run's model: the preset with the action expert on the Emu3 track; the Qwen2.5-VL track has none."""
    return DriveVLAW0Config.preset(preset, use_action_expert=image_input != "vit", expert_decoder=expert_decoder,
                                   use_world_model=world_model, image_input=image_input, **overrides)


def stage_model(run_dir: Path, stage: int, config: DriveVLAW0Config, seed: int = 0) -> DriveVLAW0ForDriving:
    """The model a stage starts from: the previous stage's result, or a fresh one (initialised from `seed`) at stage 0."""
    if stage == 0:
        torch.manual_seed(seed)
        return DriveVLAW0ForDriving(config)
    previous = run_dir / f"stage{stage - 1}" / "model"
    if not (previous / "model.safetensors").exists():
        raise FileNotFoundError(f"stage {stage} starts from {previous}, which does not exist: train stage {stage - 1} first")
    # The run's config, not the folder's: a shared tokenizer folder may come from another variant.
    with quiet_loading():
        return DriveVLAW0ForDriving.from_pretrained(previous, config=config)


ACTION_FIELDS = ("action_low", "action_high", "fast_tokenizer")
SCALING_SAMPLES = 256  # frames the VAE's latent scaling factor is fitted on (SD-1.5's came from one batch)


def _saved_config(run_dir: Path, stage: int) -> dict:
    """The fields of stage `stage - 1`'s saved model config in this run (none before stage 1 or before it ran)."""
    previous = run_dir / f"stage{stage - 1}" / "model" / "config.json"
    return json.loads(previous.read_text()) if stage > 0 and previous.exists() else {}


def with_action_tokenizer(config: DriveVLAW0Config, dataset: ExpertDataset, run_dir: Path,
                          first_stage: int) -> DriveVLAW0Config:
    """`config` with a fitted action tokenizer (module docstring)."""
    if config.fast_tokenizer:
        return config
    saved = _saved_config(run_dir, first_stage)
    if saved.get("fast_tokenizer"):
        return DriveVLAW0Config(**{**config.to_dict(), **{k: saved[k] for k in ACTION_FIELDS}})
    ego_poses, plans = (torch.from_numpy(dataset.stacked(name)) for name in ("ego_poses", "trajectories"))
    fitted = fit_action_tokenizer(config, ego_poses, plans)
    return DriveVLAW0Config(**{**config.to_dict(), **fitted})


def with_vae_scaling(model: DriveVLAW0ForDriving, dataset: ExpertDataset, run_dir: Path,
                     stage: int) -> DriveVLAW0ForDriving:
    """`model` with its VAE's latent scaling factor, before a stage that trains the diffusion world model: its
    config's, the previous stage's, or fitted with its own (stage-0, frozen) VAE on the first `SCALING_SAMPLES`
    samples' current frames. The factor goes into the model's config, which all its parts share."""
    if model.vae is None or model.config.vae_scaling_factor > 0 or stage == 0:
        return model
    factor = _saved_config(run_dir, stage).get("vae_scaling_factor", 0.0)
    if not factor > 0:
        frames = torch.stack([dataset[i]["history_frames"][-1] for i in range(min(len(dataset), SCALING_SAMPLES))])
        factor = fit_scaling_factor(model.vae, frames_to_model(frames))
    model.config.vae_scaling_factor = factor
    return model


def with_anchors(model: DriveVLAW0ForDriving, dataset: ExpertDataset, seed: int = 0) -> DriveVLAW0ForDriving:
    """`model` with its anchor head's anchors fitted on the data set's plans, unless it has none or they are fitted."""
    policy = model.policy
    if policy is None or not hasattr(policy, "anchors") or bool(policy.anchors.any()):
        return model
    plans = torch.from_numpy(dataset.stacked("trajectories")).float()
    with torch.no_grad():
        policy.anchors.copy_(fit_anchors(plans, model.config.num_anchors, seed))
    return model


def pretrained_tokenizer_stage(run_dir: Path, config: DriveVLAW0Config, vision_tokenizer: Path,
                               seed: int = 0) -> Path:
    """Stage 0 without training: a fresh model (from `seed`) with the Emu3-VisionTokenizer weights of
    `vision_tokenizer` (`load_official_vision_tokenizer`), saved as the stage's model, as the paper starts from
    Emu3's pretrained tokenizer."""
    out = run_dir / "stage0" / "model"
    model = load_official_vision_tokenizer(stage_model(run_dir, 0, config, seed), vision_tokenizer)
    model.save_pretrained(out)
    write_training_record(out, [{"stage": 0, "loaded_vision_tokenizer": str(vision_tokenizer.resolve())}])
    return out


def train_stages(data_dir: str | Path, run_dir: str | Path, stages: tuple[int, ...] = (0, 1, 2),
                 config: DriveVLAW0Config | None = None, overrides: dict[int, dict] | None = None,
                 indices=None, show_progress: bool = True, vision_tokenizer: str | Path | None = None,
                 eval_data: str | Path | None = None) -> Path:
    """Train `stages` in order on the data in `data_dir` (a subset with `indices`); returns the last model folder.
    `overrides[stage]` replaces fields of that stage's `STAGE_DEFAULTS` (steps, batch_size, lr, seed, ...).
    `vision_tokenizer`: an Emu3-VisionTokenizer folder that stage 0 loads instead of training a tokenizer.
    `eval_data`: a held-out data folder each stage is evaluated on every `eval_every` steps (default: at each
    checkpoint)."""
    run_dir = Path(run_dir)
    dataset = ExpertDataset(data_dir, indices)
    eval_dataset = ExpertDataset(eval_data) if eval_data is not None else None
    config = with_action_tokenizer(config or model_config("tiny"), dataset, run_dir, stages[0])
    out = run_dir
    for stage in stages:
        if stage == 2 and config.image_input == "vit":
            raise ValueError("stage 2 trains the action expert, which the Qwen2.5-VL track (image input vit) does not "
                             "have: train stages 0 and 1")
        train_config = replace(STAGE_DEFAULTS[stage], **(overrides or {}).get(stage, {}))
        if eval_dataset is not None and not train_config.eval_every:
            train_config = replace(train_config, eval_every=train_config.checkpoint_every)
        if stage == 0 and vision_tokenizer is not None:
            out = pretrained_tokenizer_stage(run_dir, config, Path(vision_tokenizer), train_config.seed)
            continue
        model = with_vae_scaling(stage_model(run_dir, stage, config, train_config.seed), dataset, run_dir, stage)
        if stage == 2:
            with_anchors(model, dataset, train_config.seed)
        if model.config.vae_scaling_factor != config.vae_scaling_factor:  # fitted for this stage: keep it for the next
            config = DriveVLAW0Config(**{**config.to_dict(), "vae_scaling_factor": model.config.vae_scaling_factor})
        earlier = training_record(run_dir / f"stage{stage - 1}" / "model")["stages"] if stage else []
        out = Trainer(model, dataset, train_config, run_dir / f"stage{stage}", show_progress=show_progress,
                      eval_dataset=eval_dataset, earlier_stages=earlier).train()
    return out


__all__ = ["STAGE_DEFAULTS", "model_config", "pretrained_tokenizer_stage", "stage_model", "train_stages", "with_anchors",
           "with_vae_scaling"]
