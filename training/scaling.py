"""The data-scaling experiment: action-only baseline vs world-model variant at several training-set sizes and seeds.

For each seed and size N the training set is the first N samples of that seed's permutation of the collected data
(so smaller sets are subsets of larger ones), and the seed also seeds training. Both variants start from one image
tokenizer (stage 0, trained once on all the data) and then train stage 1 (action loss, plus the world-model loss
for the world-model variant) and stage 2 (the action expert) for the same number of epochs at every size (steps
grow with N; optional caps cut the largest sizes short). Each model is evaluated on the same held-out one-shot
split by the `evaluate` function the caller passes (the evaluation runner lives above this layer, in `w0sim`).
Results: `scaling.csv` (one row per run), `scaling_summary.csv` (per size and variant: mean PDMS over the seeds
and its standard error) and `scaling.png` (mean PDMS against training-set size, log x axis, standard-error bars).
"""
from __future__ import annotations

import csv
import itertools
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.dataset import ExpertDataset
from training.pipeline import STAGE_DEFAULTS, model_config, train_stages
from training.record import training_record

# evaluate(model_dir, out_dir, seed) -> {"all": {"score", "failed", ...}, family: {...}} on the held-out split
Evaluate = Callable[[Path, Path, int], dict]

VARIANTS = ("action_only", "world_model")
FAMILY_COLUMNS = ("straight", "curve", "intersection", "t_junction", "merge")


@dataclass(frozen=True)
class ScalingConfig:
    sizes: tuple[int, ...] = (500, 2000, 8000)
    preset: str = "tiny"
    seeds: tuple[int, ...] = (0, 1)
    batch_size: int = STAGE_DEFAULTS[1].batch_size
    tokenizer_steps: int = STAGE_DEFAULTS[0].steps
    stage1_epochs: float = 4.0
    stage1_max_steps: int | None = None  # None: every size trains the same number of epochs
    stage2_epochs: float = 2.0
    stage2_max_steps: int | None = None
    backbone_lr_scale: float = STAGE_DEFAULTS[2].backbone_lr_scale  # stage 2; 0 freezes the backbone

    def steps(self, size: int, epochs: float, cap: int | None) -> int:
        steps = max(1, math.ceil(epochs * size / self.batch_size))
        return steps if cap is None else min(cap, steps)


def subset(total: int, size: int, seed: int) -> np.ndarray:
    """The first `size` samples of a seeded permutation (sorted, so shards are read in order)."""
    if size > total:
        raise ValueError(f"a training set of {size} samples needs more data: the collection holds {total}")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(order[:size])


def run_scaling(data_dir: str | Path, out_dir: str | Path, evaluate: Evaluate,
                config: ScalingConfig = ScalingConfig(), log=print) -> list[dict]:
    """Train and evaluate every (seed, size, variant); already finished runs are kept (the experiment resumes)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    total = ExpertDataset(data_dir).total_samples
    tokenizer = out_dir / "tokenizer"
    log(f"stage 0: image tokenizer on all {total} samples")
    train_stages(data_dir, tokenizer, (0,), model_config(config.preset),
                 {0: {"steps": config.tokenizer_steps, "batch_size": config.batch_size, "seed": config.seeds[0]}})
    rows = []
    for seed, size in itertools.product(config.seeds, config.sizes):
        indices = subset(total, size, seed)
        for variant in VARIANTS:
            run = out_dir / f"{variant}_{size}_seed{seed}"
            if not (run / "stage0" / "model").exists():
                shutil.copytree(tokenizer / "stage0" / "model", run / "stage0" / "model")
            steps1 = config.steps(size, config.stage1_epochs, config.stage1_max_steps)
            steps2 = config.steps(size, config.stage2_epochs, config.stage2_max_steps)
            log(f"{variant} on {size} samples, seed {seed}: stage 1 {steps1} steps, stage 2 {steps2} steps")
            common = {"batch_size": config.batch_size, "seed": seed}
            model = train_stages(data_dir, run, (1, 2), model_config(config.preset, variant == "world_model"),
                                 {1: {"steps": steps1, **common},
                                  2: {"steps": steps2, "backbone_lr_scale": config.backbone_lr_scale, **common}},
                                 indices)
            summary = evaluate(model, run / "eval", seed)
            row = {"size": size, "variant": variant, "seed": seed, "pdms": summary["all"]["score"],
                   "failed": summary["all"]["failed"], "stage1_steps": steps1, "stage2_steps": steps2,
                   "train_minutes": train_minutes(model)}
            row.update({f"pdms_{f}": summary.get(f, {}).get("score", math.nan) for f in FAMILY_COLUMNS})
            log(f"  PDMS {row['pdms']:.4f}")
            rows.append(row)
            write_results(rows, out_dir)
    return rows


def train_minutes(model_dir: Path) -> float:
    """Stages 1 and 2's training wall time from the model's training record, summed over resumed processes; NaN
    for a model whose record has no time (trained before the record kept it)."""
    seconds = [entry.get("train_seconds") for entry in training_record(model_dir)["stages"] if entry.get("stage") in (1, 2)]
    if len(seconds) != 2 or None in seconds:
        return math.nan
    return round(sum(seconds) / 60, 1)


def summarize_seeds(rows: list[dict]) -> list[dict]:
    """Per (size, variant), in size order: the mean PDMS over its seeds, the standard error of that mean (sample
    standard deviation / sqrt(seeds); NaN for one seed) and the number of seeds."""
    groups: dict[tuple[int, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["size"], row["variant"]), []).append(row["pdms"])
    out = []
    for (size, variant), scores in sorted(groups.items(), key=lambda kv: (kv[0][0], VARIANTS.index(kv[0][1]))):
        values = np.asarray(scores, dtype=float)
        stderr = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
        out.append({"size": size, "variant": variant, "pdms_mean": float(values.mean()), "pdms_stderr": stderr,
                    "seeds": len(values)})
    return out


def _write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_results(rows: list[dict], out_dir: Path) -> None:
    """scaling.csv, scaling_summary.csv and scaling.png in `out_dir`."""
    _write_csv(rows, out_dir / "scaling.csv")
    summary = summarize_seeds(rows)
    _write_csv(summary, out_dir / "scaling_summary.csv")
    plot(summary, out_dir / "scaling.png")


def plot(summary: list[dict], path: Path) -> None:
    """Mean PDMS per variant against size (`summarize_seeds` rows), with standard-error bars where there are any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for variant, style in zip(VARIANTS, ("o--", "s-")):
        points = sorted((r["size"], r["pdms_mean"], r["pdms_stderr"]) for r in summary if r["variant"] == variant)
        if points:
            sizes, means, errors = zip(*points)
            errors = [0.0 if math.isnan(e) else e for e in errors]
            ax.errorbar(sizes, means, yerr=errors, fmt=style, capsize=3, label=variant.replace("_", " "))
    ax.set_xscale("log")
    sizes = sorted({r["size"] for r in summary})
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training samples")
    seeds = max(r["seeds"] for r in summary)
    ax.set_ylabel(f"PDMS (built-in navtest), mean of {seeds} seed{'s' if seeds > 1 else ''}")
    ax.set_title("DriveVLA-W0 tiny: data scaling")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["ScalingConfig", "VARIANTS", "plot", "run_scaling", "subset", "summarize_seeds", "write_results"]
