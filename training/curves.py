"""Loss curves of a training run (every stage's metrics.csv, held-out losses dashed) as one png."""
from __future__ import annotations

import csv
from pathlib import Path

CURVES = ("loss", "action_loss", "world_model_loss", "reconstruction_loss")


def plot_run(run_dir: str | Path, path: str | Path | None = None) -> Path | None:
    """`run_dir/curves.png` (or `path`): one panel per stage that has a metrics.csv; None if there is none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    stages = sorted(p for p in run_dir.glob("stage*/metrics.csv"))
    if not stages:
        return None
    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.2), dpi=110, squeeze=False)
    for ax, metrics in zip(axes[0], stages):
        rows = list(csv.DictReader(metrics.open()))
        steps = [int(r["step"]) for r in rows]
        for name in CURVES:
            line = None
            for column, style in ((name, "-"), (f"val_{name}", "--")):  # held-out losses dashed, in the same colour
                points = [(s, float(r[column])) for s, r in zip(steps, rows) if r.get(column)]
                if points:
                    line, = ax.plot(*zip(*points), style, color=line.get_color() if line else None,
                                    label=column.replace("val_", "held-out ").replace("_", " "))
        ax.set_yscale("log")
        ax.set_title(metrics.parent.name.replace("stage", "stage "))
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path) if path else run_dir / "curves.png"
    fig.savefig(out)
    plt.close(fig)
    return out


__all__ = ["plot_run"]
