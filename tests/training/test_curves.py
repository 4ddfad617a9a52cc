"""Training curves: one log-scale panel per stage, a line per logged loss, blanks skipped."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from training.curves import plot_run  # noqa: E402


def _write(path, rows, columns="step,loss,action_loss,world_model_loss,reconstruction_loss"):
    path.parent.mkdir(parents=True)
    lines = [columns]
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def test_each_stage_gets_a_panel_with_a_named_line_per_logged_loss(tmp_path, monkeypatch):
    assert plot_run(tmp_path) is None  # no stage logged yet
    _write(tmp_path / "stage0" / "metrics.csv", [(1, "", "", "", 0.9), (2, "", "", "", 0.5)])
    _write(tmp_path / "stage1" / "metrics.csv", [(1, 3.0, 2.0, 1.0, ""), (2, 2.5, "", 0.8, ""), (3, 2.0, 1.5, 0.5, "")])
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure plot_run would close, to inspect it
    out = plot_run(tmp_path)
    monkeypatch.undo()
    assert out == tmp_path / "curves.png" and out.stat().st_size > 0
    first, second = figures[0].axes
    assert (first.get_title(), second.get_title()) == ("stage 0", "stage 1")
    assert [t.get_text() for t in first.get_legend().get_texts()] == ["reconstruction loss"]
    assert [t.get_text() for t in second.get_legend().get_texts()] == ["loss", "action loss", "world model loss"]
    lines = {line.get_label(): line.get_xydata().tolist() for line in second.get_lines()}
    assert lines["action loss"] == [[1.0, 2.0], [3.0, 1.5]]  # the blank step 2 is skipped, not drawn as 0
    assert lines["world model loss"] == [[1.0, 1.0], [2.0, 0.8], [3.0, 0.5]]
    assert second.get_yscale() == "log"
    plt.close(figures[0])


def test_held_out_losses_are_dashed_in_their_training_losss_colour(tmp_path, monkeypatch):
    _write(tmp_path / "stage1" / "metrics.csv", [(1, 3.0, "", ""), (2, 2.5, 2.9, ""), (3, 2.0, 2.7, 2.6)],
           "step,loss,val_loss,val_world_model_loss")
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot_run(tmp_path)
    monkeypatch.undo()
    lines = {line.get_label(): line for line in figures[0].axes[0].get_lines()}
    assert list(lines) == ["loss", "held-out loss", "held-out world model loss"]
    assert lines["held-out loss"].get_xydata().tolist() == [[2.0, 2.9], [3.0, 2.7]]
    assert lines["held-out loss"].get_linestyle() == "--" and lines["loss"].get_linestyle() == "-"
    assert lines["held-out loss"].get_color() == lines["loss"].get_color()
    plt.close(figures[0])
