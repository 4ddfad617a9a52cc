"""The scaling experiment's plumbing: nested subsets, both variants per size, CSV and plot, resume."""
import csv
import json

import numpy as np
import pytest

from training.collect import CollectConfig, collect
from training.scaling import ScalingConfig, plot, run_scaling, subset


def test_subsets_are_nested_and_reproducible():
    small, large = subset(100, 10, seed=0), subset(100, 40, seed=0)
    assert set(small) <= set(large) and np.array_equal(small, subset(100, 10, seed=0))
    with pytest.raises(ValueError, match="needs more data"):
        subset(100, 101, seed=0)


def test_both_variants_are_trained_per_size_and_results_written(tmp_path):
    data = tmp_path / "data"
    collect("builtin:navtrain", 4, data, CollectConfig(scenes_per_shard=4), workers=1)
    seen = []

    def evaluate(model_dir, eval_dir):  # stands in for w0sim's evaluation runner
        seen.append(model_dir)
        return {"all": {"score": 0.5 + 0.01 * len(seen), "failed": 0}, "straight": {"score": 0.9}}

    config = ScalingConfig(sizes=(4, 8), batch_size=4, tokenizer_steps=1, stage1_max_steps=1, stage2_max_steps=1,
                           backbone_lr_scale=0.0)
    lines = []
    rows = run_scaling(data, tmp_path / "exp", evaluate, config, log=lines.append)
    assert [line for line in lines if "PDMS" in line] == ["  PDMS 0.5100", "  PDMS 0.5200", "  PDMS 0.5300", "  PDMS 0.5400"]
    assert [(r["size"], r["variant"]) for r in rows] == [(4, "action_only"), (4, "world_model"),
                                                         (8, "action_only"), (8, "world_model")]
    assert all((m / "model.safetensors").exists() and m.parent.name == "stage2" for m in seen)
    # Stage 2 ran as the experiment was configured (here with the backbone frozen, as the published runs).
    states = [json.loads(next((m.parent / "checkpoints").glob("step_*/trainer_state.json")).read_text()) for m in seen]
    assert [s["config"]["backbone_lr_scale"] for s in states] == [0.0] * 4
    # The variants differ by the world model alone: only the world-model variant is built and trained with it.
    variants = [json.loads((m / "config.json").read_text()) for m in seen]
    assert [v["use_world_model"] for v in variants] == [False, True, False, True]
    assert all({k: v for k, v in a.items() if k != "use_world_model"} == {k: v for k, v in b.items() if k != "use_world_model"}
               for a, b in zip(variants, variants[1:]))
    table = list(csv.DictReader((tmp_path / "exp" / "scaling.csv").open()))
    assert [float(r["pdms"]) for r in table] == pytest.approx([0.51, 0.52, 0.53, 0.54])
    # Per family: the evaluation's score where it scored the family, NaN where it did not.
    assert all(float(r["pdms_straight"]) == pytest.approx(0.9) and np.isnan(float(r["pdms_curve"])) for r in table)
    assert (tmp_path / "exp" / "scaling.png").stat().st_size > 1000
    again = run_scaling(data, tmp_path / "exp", evaluate, config, log=lambda _: None)  # resumes: no retraining
    assert [r["stage1_steps"] for r in again] == [1, 1, 1, 1]


def test_the_plots_log_size_axis_is_gridded_at_its_minor_ticks_too(tmp_path, monkeypatch):
    """Sizes between the labelled ones are read off the log axis: minor grid lines are drawn, not only the major ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure `plot` would close, to inspect it
    rows = [{"size": n, "variant": v, "pdms": 0.5} for n in (500, 2000, 8000) for v in ("action_only", "world_model")]
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
    rows = [{"size": n, "variant": v, "pdms": 0.5} for n in (500, 2000) for v in ("action_only", "world_model")]
    plot(rows, tmp_path / "scaling.png")
    (ax,) = figures[0].axes
    assert ax.get_title() == "DriveVLA-W0 tiny: data scaling"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("training samples", "PDMS (built-in navtest)")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["action only", "world model"]
    monkeypatch.undo()
    plt.close(figures[0])
