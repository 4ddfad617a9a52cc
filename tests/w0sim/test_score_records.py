"""`w0sim score` pinned in full: every refusal message, every row of a report, the CSV text, the table lines and the
failure lines (the library functions called directly: no CLI)."""
from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

from metrics.pdm import PDMRows
from scenarios.generator import generate_scene
from scenarios.scene import save_scene
from sim.envs.scene_scoring import SceneScorer
from tests.w0sim.records import NAN, comparable, table_text
from w0sim.score import (
    SUBSCORE_COLUMNS,
    ScoreInputError,
    ScoreReport,
    TrajectorySpec,
    columns,
    failure_lines,
    load_trajectories,
    score_trajectories,
    write_csv,
)

STRAIGHT = [[4.0 * i, 0.0, 0.0] for i in range(1, 9)]
SHORT = [[2.0 * i, 0.0, 0.0] for i in range(1, 9)]
V11 = ["no_at_fault_collisions", "drivable_area_compliance", "ego_progress", "time_to_collision_within_bound", "comfort",
       "driving_direction_compliance"]
V22 = ["no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance", "traffic_light_compliance",
       "ego_progress", "time_to_collision_within_bound", "lane_keeping", "history_comfort", "two_frame_extended_comfort"]


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    scene = generate_scene("straight", 1)
    return save_scene(scene, tmp_path_factory.mktemp("score_records") / "straight_1.npz"), scene


def test_the_columns_are_token_name_valid_the_versions_sub_scores_score_and_reason():
    assert columns("v1.1") == ["token", "name", "valid", *V11, "score", "reason"]
    assert columns("v2.2") == ["token", "name", "valid", *V22, "score", "reason"]
    assert ScoreReport("t", "v2.2").columns == ["token", "name", "valid", *V22, "score", "reason"]


# ---- load_trajectories -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, problem", [
    (b"\x89PNG\r\n", "not a text (UTF-8) JSON file ('utf-8' codec can't decode byte 0x89 in position 0: invalid start byte)"),
    (b"[1,", "invalid JSON (Expecting value: line 1 column 4 (char 3))"),
    (b'"poses"', "expected a list of trajectories or a dict name -> trajectory, got a JSON str"),
    (b"3", "expected a list of trajectories or a dict name -> trajectory, got a JSON int"),
    (b"null", "expected a list of trajectories or a dict name -> trajectory, got a JSON NoneType"),
    (b"[]", "holds no trajectories"),
    (b"{}", "holds no trajectories"),
    (b'[[[1, 2, 3]], 5]', "trajectory #1 must be an object with 'poses', got a JSON int"),
    (b'{"a": "x"}', "trajectory 'a' must be an object with 'poses', got a JSON str"),
    (b'[{"poses": []}, {"name": "b"}]', "trajectory #1 has no 'poses'"),
    (b'{"k": {"interval": 1}}', "trajectory 'k' has no 'poses'"),
    (b'[{"name": "a", "poses": []}, {"name": "a", "poses": []}]', "trajectory name 'a' appears twice"),
    (b'{"x": {"poses": []}, "y": {"name": "x", "poses": []}}', "trajectory name 'x' appears twice"),
    (b'[{"name": 7, "poses": []}, {"name": "7", "poses": []}]', "trajectory name '7' appears twice"),
    (b'[{"poses": []}, {"name": "trajectory_0", "poses": []}]', "trajectory name 'trajectory_0' appears twice"),
])
def test_an_unusable_trajectories_file_is_refused_naming_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "t.json"
    path.write_bytes(content)
    with pytest.raises(ScoreInputError) as info:
        load_trajectories(str(path))
    assert str(info.value) == f"{path}: {problem}"


def test_a_missing_trajectories_file_or_a_folder_is_no_such_trajectories_file(tmp_path):
    for path in (tmp_path / "absent.json", tmp_path):
        with pytest.raises(ScoreInputError) as info:
            load_trajectories(path)
        assert str(info.value) == f"{path}: no such trajectories file"


def test_names_default_to_the_list_position_and_the_interval_to_half_a_second(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"poses": STRAIGHT}, SHORT, {"name": "own", "poses": SHORT, "interval": 0.1},
                                {"name": 3, "poses": [], "interval": None}]))
    assert load_trajectories(path) == [TrajectorySpec("trajectory_0", STRAIGHT, 0.5), TrajectorySpec("trajectory_1", SHORT, 0.5),
                                       TrajectorySpec("own", SHORT, 0.1), TrajectorySpec("3", [], None)]


def test_names_default_to_the_dict_key_and_a_given_name_wins_over_the_key(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"a": {"poses": STRAIGHT}, "b": SHORT, "c": {"name": "own", "poses": SHORT, "interval": 2}}))
    assert load_trajectories(path) == [TrajectorySpec("a", STRAIGHT, 0.5), TrajectorySpec("b", SHORT, 0.5),
                                       TrajectorySpec("own", SHORT, 2)]


# ---- score_trajectories: refusals ------------------------------------------------------------------------------------

def test_an_unknown_version_is_refused_listing_the_versions(scene_file):
    with pytest.raises(ScoreInputError) as info:
        score_trajectories(scene_file[0], [TrajectorySpec("s", STRAIGHT)], "v9")
    assert str(info.value) == "unknown version 'v9'; choose one of v1.1, v2.2"


def test_a_missing_scene_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(ScoreInputError) as info:
        score_trajectories(str(path), [TrajectorySpec("s", STRAIGHT)])
    assert str(info.value) == f"{path}: no such scene file"


def test_a_scene_whose_metric_cache_cannot_be_built_is_refused_naming_the_file_and_the_error(scene_file, monkeypatch):
    built = []

    def failing(scene, version):
        built.append((scene.token, version))
        raise ValueError("no route")

    monkeypatch.setattr("sim.envs.scene_scoring.SceneScorer", failing)
    with pytest.raises(ScoreInputError) as info:
        score_trajectories(scene_file[0], [TrajectorySpec("s", STRAIGHT)], "v2.2")
    assert str(info.value) == f"{scene_file[0]}: cannot build the metric cache of this scene (ValueError: no route)"
    assert built == [(scene_file[1].token, "v2.2")]


# ---- score_trajectories: rows ----------------------------------------------------------------------------------------

def scored_row(scene, version, name, poses, interval=0.5) -> dict:
    """The row of a trajectory the scene's scorer scores (valid): its sub-scores and reported score."""
    rows, score = SceneScorer(scene, version).score(poses, interval)
    assert rows.valid[0], rows.reason
    return {"token": scene.token, "name": name, "valid": True,
            **{c: float(getattr(rows, c)[0]) for c in SUBSCORE_COLUMNS[version]}, "score": score, "reason": ""}


def failed_row(scene, version, name, reason) -> dict:
    return {"token": scene.token, "name": name, "valid": False, **{c: NAN for c in SUBSCORE_COLUMNS[version]},
            "score": NAN, "reason": reason}


FAILING = [  # (name, poses, interval, the row's reason)
    ("strings", [["1", "2", "0"]] * 8, 0.5, "trajectory poses must be numbers (got str32 values)"),
    ("booleans", [[True, False, True]] * 8, 0.5, "trajectory poses must be numbers (got bool values)"),
    ("none", None, 0.5, "trajectory poses must be numbers (got object values)"),
    ("too_many", [[0.01 * i, 0.0, 0.0] for i in range(1001)], 0.5, "trajectory has 1001 poses, more than the bound 1000"),
    ("flat", [1.0] * 1001, 0.5, "trajectory poses must have shape (N, 3), got (1001,)"),
    ("two_columns", [[500.0, 1.0]] * 8, 0.5, "trajectory poses must have shape (N, 3), got (8, 2)"),
    ("empty", [], 0.5, "trajectory poses must have shape (N, 3), got (0,)"),
    ("empty_objects", np.empty((0, 3), dtype=object), 0.5, "trajectory is empty"),
    ("far", [[1e5 if i == 4 else 4.0 * i, 0.0, 0.0] for i in range(1, 9)], 0.5,
     "trajectory: x 100000 at [3, 0] is beyond the plausibility bound +-10000"),
    ("spinning", [[4.0 * i, 0.0, 2e3 if i == 3 else 0.0] for i in range(1, 9)], 0.5,
     "trajectory: heading 2000 at [2, 2] is beyond the plausibility bound +-1000"),
    ("nan", STRAIGHT[:7] + [[math.nan, 0.0, 0.0]], 0.5, "trajectory holds non-finite values (NaN or inf)"),
    ("interval_true", STRAIGHT, True, "trajectory interval must be a number of seconds in (0, 10], got True"),
    ("interval_false", STRAIGHT, False, "trajectory interval must be a number of seconds in (0, 10], got False"),
    ("interval_10_5", STRAIGHT, 10.5, "trajectory interval must be a number of seconds in (0, 10], got 10.5"),
    ("interval_11", STRAIGHT, 11, "trajectory interval must be a number of seconds in (0, 10], got 11"),
    ("interval_text", STRAIGHT, "fast", "trajectory interval must be a positive number of seconds, got 'fast'"),
    ("interval_0", STRAIGHT, 0, "trajectory interval must be a positive number of seconds, got 0"),
]


@pytest.mark.parametrize("version", ["v1.1", "v2.2"])
def test_every_trajectory_gets_a_whole_row_scored_ones_with_the_scorers_values_failed_ones_nan_and_the_reason(
        scene_file, version):
    path, scene = scene_file
    specs = [TrajectorySpec("straight", STRAIGHT), TrajectorySpec("at_10_s", SHORT, 10.0),
             TrajectorySpec("at_the_pose_bound", [[0.04 * i, 0.0, 0.0] for i in range(1, 1001)], 0.05),
             *[TrajectorySpec(name, poses, interval) for name, poses, interval, _ in FAILING]]
    report = score_trajectories(path, specs, version)
    assert (report.token, report.version) == (scene.token, version)
    expected = [scored_row(scene, version, "straight", STRAIGHT), scored_row(scene, version, "at_10_s", SHORT, 10.0),
                scored_row(scene, version, "at_the_pose_bound", specs[2].poses, 0.05),
                *[failed_row(scene, version, name, reason) for name, _, _, reason in FAILING]]
    assert comparable(report.rows) == comparable(expected)


def test_ragged_poses_are_a_failed_row_saying_they_are_not_numeric(scene_file):
    path, scene = scene_file
    row = score_trajectories(path, [TrajectorySpec("ragged", [[1, 2, 3], [1, 2]])]).rows[0]
    assert re.fullmatch(r"trajectory poses are not numeric: .+", row["reason"]), row
    assert comparable(row) == comparable(failed_row(scene, "v1.1", "ragged", row["reason"]))


def test_the_version_defaults_to_v1_1_and_a_trajectories_path_given_as_text_is_read(scene_file, tmp_path):
    path, scene = scene_file
    trajectories = tmp_path / "t.json"
    trajectories.write_text(json.dumps({"straight": STRAIGHT}))
    report = score_trajectories(str(path), str(trajectories))
    assert report.version == "v1.1"
    assert comparable(report.rows) == comparable([scored_row(scene, "v1.1", "straight", STRAIGHT)])


class FakeScorer:
    """A scorer giving the (rows, score) set for each trajectory (by its first x); records what it was asked."""

    results: dict = {}
    calls: list = []

    def __init__(self, scene, version):
        self.version = version

    def score(self, poses, interval):
        FakeScorer.calls.append((poses[0][0], interval))
        result = FakeScorer.results[poses[0][0]]
        if isinstance(result, Exception):
            raise result
        return result


def valid_rows(values, version="v1.1"):
    """A scorer's valid row with these sub-score values."""
    return SimpleNamespace(valid=np.array([True]), reason=[""],
                           **{name: np.array([v]) for name, v in zip(SUBSCORE_COLUMNS[version], values)})


ONES = [1.0] * 6


@pytest.fixture
def fake_scorer(monkeypatch):
    monkeypatch.setattr("sim.envs.scene_scoring.SceneScorer", FakeScorer)
    FakeScorer.calls = []
    return FakeScorer


@pytest.mark.parametrize("score, values, valid", [
    (0.0, ONES, True), (1.0, ONES, True), (0.5, ONES, True),
    (0.5, [0.0, 1.0, 0.5, math.nan, 1.0, 0.0], True),
    (1.5, ONES, False), (-0.25, ONES, False), (math.nan, ONES, False), (math.inf, ONES, False), (1.0000001, ONES, False),
    (0.5, [1.5, 1.0, 1.0, 1.0, 1.0, 1.0], False), (0.5, [1.0, -0.5, 1.0, 1.0, 1.0, 1.0], False),
    (0.5, [1.0, 1.0, math.inf, 1.0, 1.0, 1.0], False), (0.5, [1.0, 1.0, 1.0, -math.inf, 1.0, 1.0], False),
    (0.5, [1.0, 1.0, 1.0, 1.0, 2.0, 1.0], False),
])
def test_a_score_or_sub_score_outside_0_1_is_a_failed_row_naming_the_score(scene_file, fake_scorer, score, values, valid):
    path, scene = scene_file
    fake_scorer.results = {4.0: (valid_rows(values), score)}
    row = score_trajectories(path, [TrajectorySpec("t", STRAIGHT, 0.25)], "v1.1").rows[0]
    assert fake_scorer.calls == [(4.0, 0.25)]
    if valid:
        expected = {"token": scene.token, "name": "t", "valid": True, **dict(zip(V11, values)), "score": score, "reason": ""}
    else:
        expected = failed_row(scene, "v1.1", "t", f"scoring gave a value outside [0, 1] (score {score!r})")
    assert comparable(row) == comparable(expected)


def test_an_error_of_the_scorer_is_a_failed_row_naming_its_type_and_message_and_the_run_goes_on(scene_file, fake_scorer):
    from shapely.errors import GEOSException

    path, scene = scene_file
    errors = [ValueError("bad shape"), TypeError("not a number"), IndexError("out of range"),
              FloatingPointError("overflow"), GEOSException("TopologyException")]
    fake_scorer.results = {float(k): error for k, error in enumerate(errors)}
    fake_scorer.results[9.0] = (PDMRows.failed("v2.2", "the scorer's own reason"), 0.0)
    fake_scorer.results[8.0] = (valid_rows([1.0, 1.0, 1.0, 1.0, 0.25, 1.0, 0.0, 1.0, math.nan], "v2.2"), 0.75)
    specs = [TrajectorySpec(f"t{k}", [[float(k), 0.0, 0.0]] * 8) for k in (0, 1, 2, 3, 4, 9, 8)]
    rows = score_trajectories(path, specs, "v2.2").rows
    reasons = ["scoring failed: ValueError: bad shape", "scoring failed: TypeError: not a number",
               "scoring failed: IndexError: out of range", "scoring failed: FloatingPointError: overflow",
               "scoring failed: GEOSException: TopologyException", "the scorer's own reason"]
    expected = [failed_row(scene, "v2.2", spec.name, reason) for spec, reason in zip(specs, reasons)]
    expected.append({"token": scene.token, "name": "t8", "valid": True,
                     **dict(zip(V22, [1.0, 1.0, 1.0, 1.0, 0.25, 1.0, 0.0, 1.0, math.nan])), "score": 0.75, "reason": ""})
    assert comparable(rows) == comparable(expected)


def test_a_failed_row_of_the_scorer_keeps_its_reason_and_has_no_score(scene_file, fake_scorer):
    """A failed row's score is NaN whatever the scorer reported (its 0)."""
    path, scene = scene_file
    fake_scorer.results = {4.0: (PDMRows.failed("v1.1", "off the map"), 0.0)}
    rows = score_trajectories(path, [TrajectorySpec("t", STRAIGHT)]).rows
    assert comparable(rows) == comparable([failed_row(scene, "v1.1", "t", "off the map")])


# ---- write_csv, the table, the failure lines ---------------------------------------------------------------------------

def report_of(version: str, rows: list[tuple]) -> ScoreReport:
    """A report of (name, valid, score, sub-scores, reason) rows on token tok123."""
    report = ScoreReport("tok123", version)
    for name, valid, score, values, reason in rows:
        report.rows.append({"token": "tok123", "name": name, "valid": valid, **dict(zip(SUBSCORE_COLUMNS[version], values)),
                            "score": score, "reason": reason})
    return report


V11_REPORT = [("human", True, 0.87654, [1.0, 1.0, 0.5, 0.0, 1.0, 0.125], ""),
              ("[b]x", False, math.nan, [math.nan] * 6, "poses, bad"),
              ("slow", True, 0.1, [1.0, 1.0, 0.123456789012, 1.0, 0.0, 1.0], "")]


def test_the_csv_holds_the_header_and_a_line_per_row_nan_as_an_empty_cell(tmp_path):
    path = tmp_path / "new" / "folder" / "scores.csv"
    assert write_csv(report_of("v1.1", V11_REPORT), str(path)) == path
    assert path.read_bytes().decode() == (
        "token,name,valid,no_at_fault_collisions,drivable_area_compliance,ego_progress,time_to_collision_within_bound,"
        "comfort,driving_direction_compliance,score,reason\r\n"
        "tok123,human,True,1.0,1.0,0.5,0.0,1.0,0.125,0.87654,\r\n"
        'tok123,[b]x,False,,,,,,,,"poses, bad"\r\n'
        "tok123,slow,True,1.0,1.0,0.123456789012,1.0,0.0,1.0,0.1,\r\n")
    write_csv(report_of("v1.1", V11_REPORT[1:2]), path)  # into a folder that exists: the file is replaced
    assert path.read_bytes().decode().splitlines()[1:] == ['tok123,[b]x,False,,,,,,,,"poses, bad"']


def test_the_pdms_table_shows_name_ok_score_and_the_short_named_sub_scores_to_two_decimals():
    assert table_text(report_of("v1.1", V11_REPORT), 120).splitlines() == [
        "                   tok123 PDMS v1.1                    ",
        "                                                       ",
        " name   ok   score    NC   DAC    EP   TTC     C   DDC ",
        " ───────────────────────────────────────────────────── ",
        " human  yes   0.88  1.00  1.00  0.50  0.00  1.00  0.12 ",
        " [b]x   no       -     -     -     -     -     -     - ",
        " slow   yes   0.10  1.00  1.00  0.12  1.00  0.00  1.00 ",
        "                                                       "]


def test_a_terminal_one_column_too_narrow_crops_the_last_sub_score_never_the_name_ok_or_score():
    assert table_text(report_of("v1.1", V11_REPORT), 53).splitlines() == [
        "                   tok123 PDMS v1.1                  ",
        "                                                     ",
        " name   ok   score    NC   DAC    EP   TTC     C   DD",
        " ────────────────────────────────────────────────────",
        " human  yes   0.88  1.00  1.00  0.50  0.00  1.00  0.1",
        " [b]x   no       -     -     -     -     -     -     ",
        " slow   yes   0.10  1.00  1.00  0.12  1.00  0.00  1.0",
        "                                                     "]


def test_a_long_name_of_words_wraps_in_a_name_column_of_twelve_not_fewer():
    report = report_of("v1.1", [("best of three runs", True, 0.5, [1.0] * 6, ""), ("x", False, math.nan, [math.nan] * 6, "bad")])
    assert table_text(report, 60).splitlines() == [
        "                       tok123 PDMS v1.1                     ",
        "                                                            ",
        " name          ok   score    NC   DAC    EP   TTC     C   DD",
        " ───────────────────────────────────────────────────────────",
        " best of       yes   0.50  1.00  1.00  1.00  1.00  1.00  1.0",
        " three runs                                                 ",
        " x             no       -     -     -     -     -     -     ",
        "                                                            "]
    assert table_text(report, 62).splitlines()[2:6] == [
        " name          ok   score    NC   DAC    EP   TTC     C   DDC ",
        " ──────────────────────────────────────────────────────────── ",
        " best of       yes   0.50  1.00  1.00  1.00  1.00  1.00  1.00 ",
        " three runs                                                   "]


V22_REPORT = [("a_long_trajectory_name_here", True, 0.5, [1.0, 1.0, 1.0, 1.0, 0.714, 1.0, 0.0, 1.0, math.nan], ""),
              ("ab", False, math.nan, [math.nan] * 9, "bad")]


def test_the_epdms_table_folds_a_long_name_at_80_columns_and_keeps_every_figure_whole():
    assert table_text(report_of("v2.2", V22_REPORT), 120).splitlines() == [
        "                                      tok123 EPDMS v2.2                                      ",
        "                                                                                             ",
        " name                         ok   score    NC   DAC   DDC   TLC    EP   TTC    LK    HC  EC ",
        " ─────────────────────────────────────────────────────────────────────────────────────────── ",
        " a_long_trajectory_name_here  yes   0.50  1.00  1.00  1.00  1.00  0.71  1.00  0.00  1.00   - ",
        " ab                           no       -     -     -     -     -     -     -     -     -   - ",
        "                                                                                             "]
    assert table_text(report_of("v2.2", V22_REPORT), 80).splitlines() == [
        "                               tok123 EPDMS v2.2                                ",
        "                                                                                ",
        " name            ok   score    NC   DAC   DDC   TLC    EP   TTC    LK    HC  EC ",
        " ────────────────────────────────────────────────────────────────────────────── ",
        " a_long_traject  yes   0.50  1.00  1.00  1.00  1.00  0.71  1.00  0.00  1.00   - ",
        " ory_name_here                                                                  ",
        " ab              no       -     -     -     -     -     -     -     -     -   - ",
        "                                                                                "]


def test_the_failure_lines_name_each_failed_row_and_its_reason_in_order():
    report = report_of("v1.1", [*V11_REPORT, ("late", False, math.nan, [math.nan] * 6, "trajectory is empty")])
    assert failure_lines(report) == ["[b]x: poses, bad", "late: trajectory is empty"]
    assert failure_lines(report_of("v1.1", V11_REPORT[:1])) == []

