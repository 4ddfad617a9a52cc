"""The scaling experiment's plumbing: nested subsets, both variants per size, CSV and plot, resume."""
import csv
import json

import numpy as np
import pytest

from training.collect import CollectConfig, collect
from training.record import training_record, write_training_record
from training.scaling import ScalingConfig, plot, run_scaling, subset, train_minutes


def test_subsets_are_nested_and_reproducible():
    small, large = subset(100, 10, seed=0), subset(100, 40, seed=0)
    assert set(small) <= set(large) and np.array_equal(small, subset(100, 10, seed=0))
    with pytest.raises(ValueError, match="needs more data"):
        subset(100, 101, seed=0)


def test_both_variants_are_trained_per_size_and_results_written(tmp_path):
    data = tmp_path / "data"
    collect("builtin:navtrain", 4, data, CollectConfig(scenes_per_shard=4), workers=1)
    seen = []

    def evaluate(model_dir, eval_dir, seed):  # stands in for w0sim's evaluation runner
        seen.append((model_dir, seed))
        return {"all": {"score": 0.5 + 0.01 * len(seen), "failed": 0}, "straight": {"score": 0.9}}

    config = ScalingConfig(sizes=(4, 8), seeds=(0, 5), batch_size=4, tokenizer_steps=1, stage1_max_steps=1,
                           stage2_max_steps=1, backbone_lr_scale=0.0)
    lines = []
    rows = run_scaling(data, tmp_path / "exp", evaluate, config, log=lines.append)
    assert [line for line in lines if "PDMS" in line] == [f"  PDMS 0.{5100 + 100 * k}" for k in range(8)]
    assert [(r["seed"], r["size"], r["variant"]) for r in rows] == [
        (seed, size, variant) for seed in (0, 5) for size in (4, 8) for variant in ("action_only", "world_model")]
    assert [seed for _, seed in seen] == [r["seed"] for r in rows]  # each model is evaluated with its run's seed
    models = [m for m, _ in seen]
    assert all((m / "model.safetensors").exists() and m.parent.name == "stage2" for m in models)
    assert len({m.parents[1] for m in models}) == 8  # one run folder per (seed, size, variant)
    # Stage 2 ran as the experiment was configured (here with the backbone frozen), each with its run's seed.
    states = [json.loads(next((m.parent / "checkpoints").glob("step_*/trainer_state.json")).read_text()) for m in models]
    assert [s["config"]["backbone_lr_scale"] for s in states] == [0.0] * 8
    assert [s["config"]["seed"] for s in states] == [r["seed"] for r in rows]
    # The variants differ by the world model alone: only the world-model variant is built and trained with it.
    variants = [json.loads((m / "config.json").read_text()) for m in models]
    assert [v["use_world_model"] for v in variants] == [False, True] * 4
    assert all({k: v for k, v in a.items() if k != "use_world_model"} == {k: v for k, v in b.items() if k != "use_world_model"}
               for a, b in zip(variants, variants[1:]))
    table = list(csv.DictReader((tmp_path / "exp" / "scaling.csv").open()))
    assert [float(r["pdms"]) for r in table] == pytest.approx([0.51 + 0.01 * k for k in range(8)])
    # Per family: the evaluation's score where it scored the family, NaN where it did not.
    assert all(float(r["pdms_straight"]) == pytest.approx(0.9) and np.isnan(float(r["pdms_curve"])) for r in table)
    # The summary: per (size, variant) the mean over the two seeds and its standard error (|a - b| / 2 for two).
    summary = list(csv.DictReader((tmp_path / "exp" / "scaling_summary.csv").open()))
    assert [(int(r["size"]), r["variant"], int(r["seeds"])) for r in summary] == [
        (4, "action_only", 2), (4, "world_model", 2), (8, "action_only", 2), (8, "world_model", 2)]
    assert [float(r["pdms_mean"]) for r in summary] == pytest.approx([0.53, 0.54, 0.55, 0.56])
    assert [float(r["pdms_stderr"]) for r in summary] == pytest.approx([0.02] * 4)
    assert (tmp_path / "exp" / "scaling.png").stat().st_size > 1000
    # Training minutes: stages 1 and 2's training time from each model's training record.
    recorded = [sum(s["train_seconds"] for s in training_record(m)["stages"] if s["stage"] in (1, 2)) for m in models]
    assert all(seconds > 0 for seconds in recorded)
    assert [r["train_minutes"] for r in rows] == [round(seconds / 60, 1) for seconds in recorded]
    again = run_scaling(data, tmp_path / "exp", evaluate, config, log=lambda _: None)  # resumes: no retraining
    assert [r["stage1_steps"] for r in again] == [1] * 8
    assert [r["train_minutes"] for r in again] == [r["train_minutes"] for r in rows]


def test_a_model_trained_before_the_record_kept_its_time_has_no_training_minutes(tmp_path):
    write_training_record(tmp_path, [{"stage": 1, "steps": 2}, {"stage": 2, "steps": 2, "train_seconds": 6.0}])
    assert np.isnan(train_minutes(tmp_path))
    write_training_record(tmp_path, [{"stage": 1, "train_seconds": None}, {"stage": 2, "train_seconds": 6.0}])
    assert np.isnan(train_minutes(tmp_path))
    write_training_record(tmp_path, [{"stage": 0, "train_seconds": 60.0}, {"stage": 1, "train_seconds": 30.0},
                                     {"stage": 2, "train_seconds": 60.0}])
    assert train_minutes(tmp_path) == 1.5


def test_every_size_trains_the_same_epochs_unless_capped():
    config = ScalingConfig(batch_size=16, stage1_epochs=4.0)
    assert [config.steps(n, 4.0, None) for n in (500, 2000, 8000)] == [125, 500, 2000]
    assert config.steps(8000, 4.0, 800) == 800 and config.steps(1, 4.0, None) == 1


def test_the_plots_log_size_axis_is_gridded_at_its_minor_ticks_too(tmp_path, monkeypatch):
    """Sizes between the labelled ones are read off the log axis: minor grid lines are drawn, not only the major ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure `plot` would close, to inspect it
    rows = [{"size": n, "variant": v, "pdms_mean": 0.5, "pdms_stderr": 0.01, "seeds": 2} for n in (500, 2000, 8000)
            for v in ("action_only", "world_model")]
    plot(rows, tmp_path / "scaling.png")
    (ax,) = figures[0].axes
    assert ax.get_xscale() == "log"
    minor = ax.xaxis.get_minor_ticks()
    assert minor and all(tick.gridline.get_visible() for tick in minor)
    assert all(tick.gridline.get_visible() for tick in ax.xaxis.get_major_ticks())
    monkeypatch.undo()
    plt.close(figures[0])


def test_the_plot_is_titled_and_labels_its_axes_and_both_variants(tmp_path, monkeypatch):
    """The figure says what it shows: its title, the axes' quantities and a legend entry per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure `plot` would close, to inspect it
    rows = [{"size": n, "variant": v, "pdms_mean": 0.5, "pdms_stderr": 0.02, "seeds": 2} for n in (500, 2000)
            for v in ("action_only", "world_model")]
    plot(rows, tmp_path / "scaling.png")
    (ax,) = figures[0].axes
    assert ax.get_title() == "DriveVLA-W0 tiny: data scaling"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("training samples", "PDMS (built-in navtest), mean of 2 seeds")
    # Standard-error bars: each variant's vertical bars span mean ± stderr.
    bars = [c for c in ax.collections if len(c.get_segments()) == 2]
    assert bars and all(abs(seg[1][1] - seg[0][1] - 0.04) < 1e-9 for c in bars for seg in c.get_segments())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["action only", "world model"]
    monkeypatch.undo()
    plt.close(figures[0])
