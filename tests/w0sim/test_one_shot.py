"""One-shot evaluation: NAVSIM's CSV layout, resume after a kill, failed rows instead of tracebacks."""
import csv
import json
import math

import numpy as np
import pytest

from agents.base import Agent
from agents.registry import AgentSpec
from scenarios.generator import generate_scene
from scenarios.scene import save_scene
from scenarios.splits import SceneRef
from sim.state import Trajectory
from w0sim.one_shot import csv_columns, evaluate_scene, evaluate_split, summarize


@pytest.mark.parametrize("version, average", [("v1.1", "average"), ("v2.2", "average_all_frames")])
def test_csv_has_navsim_columns_and_the_average_row(tmp_path, version, average):
    rows = evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), tmp_path, version, limit=3, workers=1)
    table = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert list(table[0]) == csv_columns(version)
    assert [r["token"] for r in table[:3]] == [r["token"] for r in rows] and table[-1]["token"] == average
    scores = [float(r["score"]) for r in table[:3]]
    assert float(table[-1]["score"]) == pytest.approx(np.mean(scores))
    assert summarize(rows)["all"]["scenes"] == 3


def test_a_killed_run_resumes_to_the_same_csv(tmp_path):
    straight = tmp_path / "straight"
    evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), straight, limit=4, workers=1)
    killed = tmp_path / "killed"
    evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), killed, limit=4, workers=1)
    lines = (killed / "rows.jsonl").read_text().splitlines()
    (killed / "rows.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # cut mid-row by a kill
    (killed / "scores.csv").unlink()
    evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), killed, limit=4, workers=2)
    assert (killed / "scores.csv").read_bytes() == (straight / "scores.csv").read_bytes()


class Raising(Agent):
    def compute_trajectory(self, agent_input, world=None):
        raise RuntimeError("policy exploded")


class NaNAgent(Agent):
    def compute_trajectory(self, agent_input, world=None):
        return Trajectory(np.full((8, 3), np.nan), self.trajectory_sampling)


def test_an_agent_that_raises_or_returns_nan_gives_a_failed_row():
    ref = SceneRef("x", "straight", 3)
    raised = evaluate_scene(ref, 0, Raising())
    assert not raised["valid"] and "policy exploded" in raised["reason"]
    nan = evaluate_scene(ref, 0, NaNAgent())
    assert not nan["valid"] and "finite" in nan["reason"].lower()


def test_missing_and_malformed_scene_files_give_failed_rows(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    save_scene(generate_scene("curve", 2), scenes / "a.npz")
    (scenes / "b.npz").write_text("garbage")
    rows = evaluate_split(str(scenes), AgentSpec("constant_velocity"), tmp_path / "out", workers=1)
    assert [r["valid"] for r in rows] == [True, False] and rows[1]["reason"]
    missing = evaluate_scene(SceneRef("gone", path=tmp_path / "gone.npz"), 0, AgentSpec("constant_velocity").build())
    assert not missing["valid"] and "gone.npz" in missing["reason"]
    assert json.loads((tmp_path / "out" / "rows.jsonl").read_text().splitlines()[1])["token"] == "b"


def test_a_run_killed_mid_way_resumes_to_the_same_csv(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    def command(out):
        return [sys.executable, "-c", "from w0sim.cli import app; app()", "eval", "--agent", "pdm_closed",
                "--split", "builtin:navtest", "--limit", "6", "--workers", "1", "--out", str(out)]

    subprocess.run(command(tmp_path / "straight"), check=True, capture_output=True)
    process = subprocess.Popen(command(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = tmp_path / "killed" / "rows.jsonl"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if rows.exists() and len(rows.read_text().splitlines()) >= 2:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert not (tmp_path / "killed" / "scores.csv").exists(), "the run finished before it could be killed"
    subprocess.run(command(tmp_path / "killed"), check=True, capture_output=True)
    assert (tmp_path / "killed" / "scores.csv").read_bytes() == (tmp_path / "straight" / "scores.csv").read_bytes()


def test_v2_two_frame_comfort_pairs_consecutive_frames_of_a_log(tmp_path):
    """navtest lists two consecutive 2 Hz frames of each generated log, as NAVSIM's navtest lists consecutive frames:
    the second frame's EC compares its simulated states with the first's (NAVSIM's one-stage rule), the first has
    none (NaN, weight 0), and the score is recomputed with it."""
    from metrics.comfort import two_frame_extended_comfort
    from metrics.pdm import epdms_with_extended_comfort

    rows = evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), tmp_path, "v2.2", limit=4, workers=1)
    assert len(rows) == 4
    raw = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    states = {r["token"]: np.asarray(r["simulated_states"]) for r in raw}
    first, second = rows[0], rows[1]
    assert np.isnan(first["two_frame_extended_comfort"])
    expected = float(two_frame_extended_comfort(states[second["token"]], states[first["token"]]))
    assert second["two_frame_extended_comfort"] == expected
    assert second["score"] == pytest.approx(epdms_with_extended_comfort(second, expected), abs=0)
    other_log = rows[2]  # the next log starts again without a previous frame
    assert np.isnan(other_log["two_frame_extended_comfort"])
    assert "simulated_states" not in first  # kept in rows.jsonl, not in the rows / CSV


def test_builtin_navtest_lists_two_consecutive_frames_of_each_log():
    from scenarios.splits import resolve_split

    refs = resolve_split("builtin:navtest", 4)
    first, second = refs[0].load(), refs[1].load()
    assert refs[0].log_frame[0] == refs[1].log_frame[0] != refs[2].log_frame[0]
    assert second.current_index == first.current_index + 5 and second.token == refs[1].token != first.token
    np.testing.assert_array_equal(second.ego_log, first.ego_log)  # the same drive, half a second later


def test_the_summary_averages_valid_scenes_only_as_navsim_does():
    """NAVSIM's average leaves failed rows out (they hold NaN); counting them as 0 would lower the score."""
    rows = [{"family": "straight", "valid": True, "score": 0.9}, {"family": "straight", "valid": False, "score": 0.0},
            {"family": "curve", "valid": True, "score": 0.4}, {"family": "curve", "valid": False, "score": math.nan}]
    summary = summarize(rows)
    assert summary["all"] == {"scenes": 4, "failed": 2, "score": pytest.approx(0.65)}
    assert summary["straight"] == {"scenes": 2, "failed": 1, "score": pytest.approx(0.9)}
    assert summary["curve"]["score"] == pytest.approx(0.4)
    assert math.isnan(summarize([rows[1]])["all"]["score"])  # nothing valid: no number, not 0
