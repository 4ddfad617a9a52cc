"""scripts/check_figures.py's reading, comparing and rewriting of published figures, on made-up files (no measuring)."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from scripts.figures.published import FigureError, Place, Prose, Table, cell_value, read_place, text_value, value
from scripts.figures.registry import Figure
from scripts.figures.tolerances import Prefix, Printed, Ratio
from tests.conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("check_figures", REPO_ROOT / "scripts" / "check_figures.py")
check_figures = importlib.util.module_from_spec(spec)
sys.modules["check_figures"] = check_figures  # dataclasses look their module up while the class is made
spec.loader.exec_module(check_figures)

TABLE = """# Scores

<!-- figure: scores -->
| agent | NC | PDMS (before) |
|---|---|---|
| **model** | 0.972 | **0.779** (0.745) |
| baseline | 1.000 | 0.626 (0.587) |
<!-- /figure -->

Per family: <!-- figure: families -->straight 0.988, curve 0.355<!-- /figure -->.
"""


def figure(measured: dict, **extra) -> object:
    readers = (Table({"NC": {0: "nc"}, "PDMS": {0: "pdms"}}, {"model": "model", "baseline": "baseline"}),)
    return Figure("scores", "instant", (Place("doc.md", "scores", readers),),
                                lambda ctx: measured, **extra)


def compare(text: str, measured: dict, **extra) -> dict[str, bool]:
    fig = figure(measured, **extra)
    place = fig.places[0]
    rows = check_figures.compare(fig, place, text, read_place(text, place), measured)
    return {row.key: row.ok for row in rows}


MEASURED = {"model.nc": 0.9721, "model.pdms": 0.7794, "baseline.nc": 1.0, "baseline.pdms": 0.6255}


def test_values_within_half_a_printed_unit_pass():
    assert compare(TABLE, MEASURED) == {key: True for key in MEASURED}


def test_a_value_beyond_its_printed_precision_fails():
    verdicts = compare(TABLE, MEASURED | {"model.pdms": 0.7796})  # rounds to 0.780, not the published 0.779
    assert verdicts["model.pdms"] is False
    assert [key for key, ok in verdicts.items() if not ok] == ["model.pdms"]


def test_a_value_not_measured_fails():
    assert compare(TABLE, {k: v for k, v in MEASURED.items() if k != "baseline.nc"})["baseline.nc"] is False


def test_a_missing_marker_names_the_file_and_the_figure():
    with pytest.raises(FigureError, match=r"doc\.md: no '<!-- figure: scores -->' marker \(figure scores\)"):
        compare(TABLE.replace("<!-- figure: scores -->\n", ""), MEASURED)


def test_an_unclosed_block_names_the_file_and_the_figure():
    text = TABLE.replace("<!-- /figure -->\n\nPer", "\nPer")
    with pytest.raises(FigureError, match=r"doc\.md: .*scores.* not closed"):
        compare(text, MEASURED)


def test_a_missing_row_is_named():
    with pytest.raises(FigureError, match="block 'scores': table rows not found: baseline"):
        compare(TABLE.replace("| baseline |", "| other |"), MEASURED)


def test_prose_values_inside_a_sentence_and_text_values():
    place = Place("doc.md", "families", (Prose(
        rf"straight {value('straight')}, curve {value('curve')}"),))
    values = {v.key: v.text for v in read_place(TABLE, place)}
    assert values == {"straight": "0.988", "curve": "0.355"}
    status = cell_value("route.status", " Failed - Agent got blocked ", 0, "text")
    assert status.text == "Failed - Agent got blocked"


def test_tolerances():
    assert Ratio(3.0).ok("46", 120.0) and not Ratio(3.0).ok("46", 140.0)
    assert Prefix().ok("9272f7c7", "9272f7c76d9d77e7aa") and not Prefix().ok("9272f7c7", "1")
    assert Printed().ok("3,271", 3271.4) and not Printed().ok("3,271", 3271.6)
    assert Printed().ok("+0.026", 0.0257)


def test_write_keeps_the_old_value_beside_the_new_and_reads_the_new_one_back():
    measured = MEASURED | {"model.pdms": 0.7812}
    fig = figure(measured)
    place = fig.places[0]
    text = check_figures.rewrite(TABLE, read_place(TABLE, place), measured, fig)
    assert "| **model** | 0.972 | **0.781 (was 0.779)** (0.745) |" in text
    assert compare(text, measured) == {key: True for key in MEASURED}
    again = check_figures.rewrite(text, read_place(text, place), measured | {"model.pdms": 0.7901}, fig)
    assert "**0.790 (was 0.781)** (0.745)" in again


def test_a_moved_hash_in_a_code_span_keeps_the_old_one_beside_it_outside_the_span():
    text = "<!-- figure: data -->\nproduces content hash `9272f7c76d9d77e7…`.\n<!-- /figure -->\n"
    place = Place("doc.md", "data", (Prose(
        rf"content hash `{text_value('hash', '[0-9a-f]+')}…`"),))
    fig = Figure("data", "instant", (place,), lambda ctx: {}, tolerances={"hash": Prefix()})
    measured = {"hash": "371c847b026713c7381f"}
    new = check_figures.rewrite(text, read_place(text, place), measured, fig)
    assert "content hash `371c847b026713c7…` (was `9272f7c76d9d77e7…`)." in new
    assert [v.text for v in read_place(new, place)] == ["371c847b026713c7"]
    again = check_figures.rewrite(new, read_place(new, place), {"hash": "abcdef0123456789ff"}, fig)
    assert "content hash `abcdef0123456789…` (was `371c847b026713c7…`)." in again


def test_when_one_time_moves_the_block_gets_all_its_times_anew():
    text = "<!-- figure: times -->\n| town | load (s) | lanes |\n|---|---|---|\n| A | 1.28 | 897 |\n| B | 0.16 | 124 |\n" \
           "<!-- /figure -->\n"
    readers = (Table({"load": {0: "seconds"}, "lanes": {0: "lanes"}}, {"A": "A", "B": "B"}),)
    fig = Figure("times", "instant", (Place("doc.md", "times", readers),), lambda ctx: {},
                               tolerances={"*.seconds": Ratio(3.0)})
    measured = {"A.seconds": 0.33, "B.seconds": 0.06, "A.lanes": 897, "B.lanes": 124}
    new = check_figures.rewrite(text, read_place(text, fig.places[0]), measured, fig)
    assert "| A | 0.33 (was 1.28) | 897 |" in new and "| B | 0.06 (was 0.16) | 124 |" in new
    unchanged = check_figures.rewrite(text, read_place(text, fig.places[0]), measured | {"A.seconds": 1.0}, fig)
    assert unchanged == text


def test_provenance_line_is_added_once_and_replaced():
    place = figure(MEASURED).places[0]
    once = check_figures.with_provenance(TABLE, place, "first")
    twice = check_figures.with_provenance(once, place, "second")
    assert "\n\n<sub>Provenance: first</sub>\n<!-- /figure -->" in once
    assert twice.count("<sub>Provenance:") == 1 and "second" in twice
    assert compare(twice, MEASURED) == {key: True for key in MEASURED}
    place = Place("doc.md", "families", (Prose(rf"curve {value('curve')}"),))
    quoted = check_figures.with_provenance(TABLE, place, "`--only families`, where curve 0.1 was said")
    assert [v.text for v in read_place(quoted, place)] == ["0.355"]  # the provenance line is no figure


def test_the_command_refuses_a_block_that_is_missing_before_measuring(tmp_path, monkeypatch, capsys):
    (tmp_path / "doc.md").write_text(TABLE.replace("figure: scores", "figure: other"))

    def never(ctx):
        raise AssertionError("measured although the published figure could not be read")

    monkeypatch.setattr(check_figures, "ROOT", tmp_path)
    monkeypatch.setattr(check_figures, "FIGURES", (Figure("scores", "instant", figure({}).places, never),))
    assert check_figures.main(["--only", "scores"]) == 2
    assert "doc.md: no '<!-- figure: scores -->' marker (figure scores)" in capsys.readouterr().err


def test_every_published_figure_of_the_project_is_readable():
    for fig in check_figures.FIGURES:
        for place in fig.places:
            assert read_place((REPO_ROOT / place.file).read_text(), place), (fig.name, place.file)


def test_provenance_names_each_uncommitted_code_file_whole(tmp_path, monkeypatch):
    """Modified code files are listed by their full paths, the first included (a porcelain status line starts
    with a space that stripping the output loses); tests and documents are left out."""
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for name in ("benchmarks/a.py", "policies/b.py", "tests/c.py", "notes.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    monkeypatch.setattr(check_figures, "ROOT", tmp_path)
    assert "uncommitted" not in check_figures.commit_description()
    for name in ("benchmarks/a.py", "policies/b.py", "tests/c.py", "notes.md"):
        (tmp_path / name).write_text("1\n")
    git("add", "policies/b.py")  # staged and unstaged changes alike
    assert check_figures.commit_description().endswith("(plus uncommitted changes to benchmarks/a.py, policies/b.py)")
