"""`w0sim score`: NAVSIM PDMS / EPDMS of arbitrary trajectories on a scene file (table + CSV, clear errors)."""
from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from scenarios.generator import generate_scene
from scenarios.scene import save_scene
from sim.geometry import global_to_local
from tests.w0sim.records import table_text
from w0sim.cli import app
from w0sim.score import SUBSCORE_COLUMNS, load_trajectories, score_trajectories

runner = CliRunner()


def squashed(text: str) -> str:
    """Output without whitespace: rich wraps long lines (and paths) at the console width."""
    return re.sub(r"\s+", "", text)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_csv(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    scene = generate_scene("straight", 1)
    path = save_scene(scene, tmp_path_factory.mktemp("score") / "straight_1.npz")
    return path, scene


def logged_future(scene) -> list[list[float]]:
    """The human trajectory: 8 logged poses at 0.5 s in the current rear-axle frame."""
    steps = np.minimum(scene.current_index + np.arange(1, 9) * 5, scene.num_steps - 1)
    return global_to_local(scene.ego_log[steps, :3], scene.initial_ego_state[:3]).tolist()


def off_road() -> list[list[float]]:
    """Heads 60 m off to the left within 4 s (headings along the path): far off every roadblock of the road."""
    return [[4.0 * i, 7.5 * i, math.atan2(7.5, 4.0)] for i in range(1, 9)]


@pytest.fixture(scope="module")
def trajectories_file(scene_file, tmp_path_factory):
    _, scene = scene_file
    path = tmp_path_factory.mktemp("traj") / "trajectories.json"
    # Python's json writes NaN as the (widely accepted) NaN literal.
    path.write_text(json.dumps([
        {"name": "human", "poses": logged_future(scene), "interval": 0.5},
        {"name": "off_road", "poses": off_road()},
        {"name": "nan", "poses": [[1.0, 0.0, 0.0]] * 7 + [[float("nan"), 0.0, 0.0]]},
        {"name": "empty", "poses": []},
        {"name": "bad_interval", "poses": logged_future(scene), "interval": "fast"},
    ]))
    return path


@pytest.mark.parametrize("version", ["v1.1", "v2.2"])
def test_scores_logged_future_high_and_off_road_zero(scene_file, trajectories_file, tmp_path, version):
    scene_path, scene = scene_file
    out = tmp_path / "scores.csv"
    result = invoke("score", "--scene", scene_path, "--trajectories", trajectories_file, "--version", version,
                    "--out", out)
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in read_csv(out)}
    header = list(read_csv(out)[0])
    assert header == ["token", "name", "valid", *SUBSCORE_COLUMNS[version], "score", "reason"]
    assert all(r["token"] == scene.token for r in rows.values())

    human = rows["human"]
    assert human["valid"] == "True" and human["reason"] == ""
    assert float(human["score"]) > 0.9
    assert float(human["no_at_fault_collisions"]) == 1.0 and float(human["drivable_area_compliance"]) == 1.0

    off = rows["off_road"]
    assert off["valid"] == "True"
    assert float(off["drivable_area_compliance"]) == 0.0 and float(off["score"]) == 0.0

    for name, reason in (("nan", "non-finite"), ("empty", "shape"), ("bad_interval", "interval")):
        failed = rows[name]
        assert failed["valid"] == "False" and reason in failed["reason"]
        assert failed["score"] == "" and all(failed[c] == "" for c in SUBSCORE_COLUMNS[version])

    if version == "v2.2":  # EPDMS' own sub-scores: the human stays in its lane and runs no red light, off_road leaves it
        assert float(human["lane_keeping"]) == 1.0 and float(human["traffic_light_compliance"]) == 1.0
        assert float(off["lane_keeping"]) == 0.0

    text = squashed(result.output)
    assert "human" in text and "off_road" in text
    assert "failednan:trajectoryholdsnon-finitevalues" in text
    assert "scored5trajectories(3failed)" in text


def test_dict_input_default_interval_and_default_csv_path(scene_file, tmp_path):
    scene_path, scene = scene_file
    path = tmp_path / "named.json"
    path.write_text(json.dumps({"human": {"poses": logged_future(scene)}, "slow": {"poses": logged_future(scene),
                                                                                  "interval": 1.0}}))
    specs = load_trajectories(path)
    assert [(s.name, s.interval) for s in specs] == [("human", 0.5), ("slow", 1.0)]
    result = invoke("score", "--scene", scene_path, "--trajectories", path)
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "named.scores.csv")
    assert [r["name"] for r in rows] == ["human", "slow"]
    assert "comfort" in rows[0]  # v1.1 is the default
    # The same numbers through the library function.
    report = score_trajectories(scene_path, path, "v1.1")
    assert float(rows[0]["score"]) == pytest.approx(report.rows[0]["score"], abs=1e-12)


def test_bad_json_exits_2_naming_the_file(scene_file, tmp_path):
    scene_path, _ = scene_file
    bad = tmp_path / "broken.json"
    bad.write_text('[{"name": "a", "poses": [[1, 2, 3]')
    result = invoke("score", "--scene", scene_path, "--trajectories", bad)
    assert result.exit_code == 2
    text = squashed(result.output)
    assert "error" in text and "broken.json" in text and "invalidJSON" in text
    assert "Traceback" not in result.output

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"name": "a", "trajectory": [[1, 2, 3]]}]))
    result = invoke("score", "--scene", scene_path, "--trajectories", wrong)
    assert result.exit_code == 2 and "wrong.json" in squashed(result.output) and "'poses'" in result.output

    result = invoke("score", "--scene", scene_path, "--trajectories", tmp_path / "absent.json")
    assert result.exit_code == 2 and "absent.json:nosuchtrajectoriesfile" in squashed(result.output)


def test_a_binary_trajectories_file_exits_2_saying_it_is_not_utf8_json(scene_file, tmp_path):
    """A PNG passed as --trajectories: its first byte (0x89) is no UTF-8 text."""
    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    result = invoke("score", "--scene", scene_file[0], "--trajectories", png)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "plot.png:notatext(UTF-8)JSONfile" in squashed(result.output)


def test_the_table_right_aligns_scores_so_a_failed_rows_dash_sits_under_the_digits(scene_file, trajectories_file):
    """Every sub-score and score column ends at the same place in each row: '1.00' and '-' (no value) end alike."""
    report = score_trajectories(scene_file[0], trajectories_file, "v1.1")
    text = table_text(report, 200)
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    numbers = len(SUBSCORE_COLUMNS["v1.1"]) + 1
    ends = {name: [m.end() for m in re.finditer(r"\S+", lines[name])][-numbers:] for name in ("name", "human", "nan")}
    assert lines["nan"].split()[-numbers:] == ["-"] * numbers
    assert ends["human"] == ends["nan"] == ends["name"]  # the header line too: each short name ends there


def test_the_tables_ok_column_says_yes_for_scored_trajectories_and_no_for_failed_ones(scene_file, trajectories_file):
    """'ok' is whether the trajectory could be scored (valid), not whether it scored well: off_road scores 0 and is ok."""
    report = score_trajectories(scene_file[0], trajectories_file, "v1.1")
    text = table_text(report, 200)
    names = ("human", "off_road", "nan", "empty", "bad_interval")
    lines = [line.split() for line in text.splitlines()]
    ok = {words[0]: words[1] for words in lines if words and words[0] in names}
    assert ok == {"human": "yes", "off_road": "yes", "nan": "no", "empty": "no", "bad_interval": "no"}


def test_an_80_column_terminal_folds_a_long_name_and_keeps_every_epdms_figure_whole(scene_file, tmp_path):
    """EPDMS v2.2's eleven columns at 80 columns: the name column folds; each figure and short name stays on its line.
    At 70 the score, right after ok, still shows."""
    from w0sim.score import SHORT_NAMES

    _, scene = scene_file
    path = tmp_path / "long_name.json"
    path.write_text(json.dumps([{"name": "a_trajectory_name_of_forty_characters_xx", "poses": logged_future(scene)}]))
    report = score_trajectories(scene_file[0], path, "v2.2")
    lines = [line.split() for line in table_text(report, 80).splitlines()]
    header = next(words for words in lines if words and words[0] == "name")
    assert header[2:] == ["score"] + [SHORT_NAMES[n] for n in SUBSCORE_COLUMNS["v2.2"]]
    row = next(words for words in lines if "yes" in words)
    assert all(re.fullmatch(r"\d\.\d\d|-", figure) for figure in row[2:]) and len(row) == len(header)
    # Narrower than the table: trailing sub-scores are cropped, never the score.
    lines = [line.split() for line in table_text(report, 70).splitlines()]
    assert next(words for words in lines if "yes" in words)[2] == f"{report.rows[0]['score']:.2f}"


def test_missing_or_malformed_scene_file_exits_2_naming_the_file(trajectories_file, tmp_path):
    result = invoke("score", "--scene", tmp_path / "nowhere.npz", "--trajectories", trajectories_file)
    assert result.exit_code == 2
    assert "nowhere.npz:nosuchscenefile" in squashed(result.output) and "Traceback" not in result.output

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    result = invoke("score", "--scene", junk, "--trajectories", trajectories_file)
    assert result.exit_code == 2 and "junk.npz" in squashed(result.output)


def test_unknown_version_exits_2(scene_file, trajectories_file):
    result = invoke("score", "--scene", scene_file[0], "--trajectories", trajectories_file, "--version", "v9")
    assert result.exit_code == 2 and "v1.1" in result.output
