"""Exit codes and reasons: `eval` exits 1 when scenes or routes failed (saying how many, also when all did), each
failed row has a one-line reason, library errors reach the user as one line and exit 2, a worker process that dies
makes its scene a failed row; torch agents compute on one thread in every mode."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from agents.base import Agent, AgentOptions
from agents.registry import AgentSpec
from scenarios.splits import SceneRef, resolve_split
from sim.state import Trajectory
from tests.conftest import REPO_ROOT
from w0sim.cli import app
from w0sim.one_shot import evaluate_scene, evaluate_split
from w0sim.runner import failure_reason

runner = CliRunner()
HERE = "tests.w0sim.test_exit_codes"


def flat(text: str) -> str:
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, flat(result.output), result


@pytest.fixture
def garbage_scenes(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    (scenes / "a.npz").write_bytes(b"garbage")
    (scenes / "b.npz").write_bytes(b"")
    return scenes


@pytest.mark.parametrize("mode, unit", [("--one-shot", "scenes"), ("--closed-loop", "routes")])
def test_eval_exits_1_when_every_scene_failed_and_says_how_many(tmp_path, garbage_scenes, mode, unit):
    code, output, result = invoke("eval", "--agent", "constant_velocity", "--split", garbage_scenes, mode,
                                  "--workers", 1, "--out", tmp_path / "out")
    assert code == 1 and isinstance(result.exception, SystemExit), output
    assert f"2 of 2 {unit} failed" in output
    assert output.count("not a w0sim scene file") >= 2  # each failure with its reason


class SilentFailure(Agent):
    """Raises an exception without a message (as shapely's GEOSException did)."""

    def compute_trajectory(self, agent_input, world=None):
        raise RuntimeError()


def test_a_reason_is_one_line_with_the_type_and_what_was_being_done():
    assert failure_reason(ValueError("bad\n  thing\twith   spaces"), "loading the scene") == (
        "loading the scene: ValueError: bad thing with spaces")
    assert failure_reason(KeyError("v3")) == "KeyError: 'v3'"

    class GEOSException(Exception):
        pass

    assert failure_reason(GEOSException(""), "scoring") == "scoring: GEOSException: (no message)"
    assert len(failure_reason(ValueError("x" * 5000))) <= 400
    # at most 400 characters: a reason of exactly 400 stays whole, one more is cut to 397 and "..."
    whole = failure_reason(ValueError("x" * (400 - len("ValueError: "))))
    assert len(whole) == 400 and whole.endswith("x")
    cut = failure_reason(ValueError("x" * (401 - len("ValueError: "))))
    assert cut == "ValueError: " + "x" * (397 - len("ValueError: ")) + "..."
    row = evaluate_scene(SceneRef("x", "straight", 3), 0, SilentFailure())
    assert not row["valid"] and row["reason"] == "agent SilentFailure planning: RuntimeError: (no message)"


class Segfault(Agent):
    """Takes its worker process down (as the carla library did on a town without roads) where the driving command
    is 2 (builtin:navtest's curve scenes)."""

    def compute_trajectory(self, agent_input, world=None):
        if int(np.argmax(agent_input.driving_command)) == 2:
            import faulthandler

            faulthandler.disable()  # pytest's handler would print this process's stack first
            os.kill(os.getpid(), signal.SIGSEGV)
        return Trajectory(np.zeros((8, 3)), self.trajectory_sampling)


def test_a_worker_that_dies_makes_its_scene_a_failed_row_and_the_others_go_on(tmp_path):
    """builtin:navtest's first 4 tokens: two frames of a straight log, two of a curve. The curve scenes kill their
    worker: they become failed rows saying so, the straight ones are scored, the run exits 1."""
    out = tmp_path / "out"
    code, output, _ = invoke("eval", "--agent", f"{HERE}:Segfault", "--limit", 4, "--workers", 2, "--out", out)
    rows = {json.loads(line)["index"]: json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()}
    assert sorted(rows) == [0, 1, 2, 3]
    assert [rows[i]["valid"] for i in range(4)] == [True, True, False, False]
    for i in (2, 3):
        assert rows[i]["reason"].endswith("the worker process running this scene died (killed by signal SIGSEGV); "
                                          "a native library crashed or the process was killed")
    assert code == 1 and "2 of 4 scenes failed" in output, output


class SegfaultOnce(Agent):
    """Takes its worker process down on the first curve scene it plans (as a process the out-of-memory killer ended
    would); the file named by $W0SIM_TEST_CRASHED records that it did, for every later process."""

    def compute_trajectory(self, agent_input, world=None):
        marker = os.environ["W0SIM_TEST_CRASHED"]
        if int(np.argmax(agent_input.driving_command)) == 2 and not os.path.exists(marker):
            import faulthandler

            open(marker, "w").close()
            faulthandler.disable()
            os.kill(os.getpid(), signal.SIGSEGV)
        return Trajectory(np.zeros((8, 3)), self.trajectory_sampling)


def test_scenes_rerun_after_a_worker_died_keep_their_place_in_the_split(tmp_path, monkeypatch):
    """The scenes running when the pool broke run again, each in a process of its own: there they succeed, and
    their rows carry their own index and token, as if the pool had never broken (builtin:navtest's first 4)."""
    monkeypatch.setenv("W0SIM_TEST_CRASHED", str(tmp_path / "crashed"))
    out = tmp_path / "out"
    code, output, _ = invoke("eval", "--agent", f"{HERE}:SegfaultOnce", "--limit", 4, "--workers", 2, "--out", out)
    assert code == 0 and (tmp_path / "crashed").exists(), output  # a worker did die
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    tokens = [ref.token for ref in resolve_split("builtin:navtest", 4)]
    assert {row["ref"]: row["index"] for row in rows} == {token: i for i, token in enumerate(tokens)}
    assert all(row["valid"] for row in rows)


@pytest.mark.parametrize("error", ["scenarios.opendrive.town:OpenDriveError", "scenarios.scene:SceneFormatError",
                                   "concurrent.futures.process:BrokenProcessPool", "builtins:MemoryError"])
def test_library_errors_reach_the_user_as_one_line_and_exit_2(tmp_path, monkeypatch, error):
    import importlib

    module, name = error.split(":")
    cls = getattr(importlib.import_module(module), name)

    def raising(*args, **kwargs):
        raise cls("town X.xodr: no roads")

    monkeypatch.setattr("w0sim.evaluation.evaluate", raising)
    code, output, result = invoke("eval", "--agent", "constant_velocity", "--limit", 1, "--out", tmp_path / "o")
    assert code == 2 and isinstance(result.exception, SystemExit), output
    assert "error:" in output and "town X.xodr: no roads" in output and "Traceback" not in output


def test_a_bad_checkpoint_is_a_clean_error(tmp_path):
    empty = tmp_path / "empty_checkpoint"
    empty.mkdir()
    code, output, result = invoke("eval", "--agent", "drivevla_w0", "--checkpoint", empty, "--limit", 1,
                                  "--out", tmp_path / "o")
    assert code == 2 and isinstance(result.exception, SystemExit) and "empty_checkpoint" in output, output


class CrashesWhileDriving(Agent):
    def compute_trajectory(self, agent_input, world=None):
        raise RuntimeError("policy exploded")


def test_a_closed_loop_route_the_agent_crashed_on_counts_as_failed_with_its_reason(tmp_path):
    """The Leaderboard keeps the record ("Failed - Agent crashed"); the run says why and exits 1."""
    out = tmp_path / "out"
    code, output, _ = invoke("eval", "--agent", f"{HERE}:CrashesWhileDriving", "--split", "builtin:routes",
                             "--limit", 1, "--workers", 1, "--out", out)
    records = json.loads((out / "results.json").read_text())["_checkpoint"]["records"]
    assert [r["status"] for r in records] == ["Failed - Agent crashed"]
    assert code == 1 and "1 of 1 routes failed" in output
    assert "agent CrashesWhileDriving planning decision 0 (t = 0.0 s): RuntimeError: policy exploded" in output


class ThreadProbe(Agent):
    """Writes the torch thread count it sees while loading and planning to the file given as its checkpoint."""

    device = "cpu"

    def __init__(self, log=None):
        super().__init__()
        self.log = log

    @classmethod
    def from_options(cls, options=AgentOptions()):
        return cls(options.checkpoint)

    def _note(self, when):
        import torch

        with open(self.log, "a") as f:
            f.write(f"{when} {os.getpid()} {torch.get_num_threads()}\n")

    def initialize(self):
        self._note("initialize")

    def compute_trajectory(self, agent_input, world=None):
        self._note("plan")
        return Trajectory(np.zeros((8, 3)), self.trajectory_sampling)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_torch_agent_loads_and_plans_on_one_thread_whatever_the_worker_count(tmp_path, workers):
    """Serial runs and pool workers alike (only pool workers did): the same sums, the same scores."""
    import torch

    log = tmp_path / "threads.txt"
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # what an unpinned process would use here (the pool forks from this one)
    try:
        evaluate_split("builtin:navtest", AgentSpec(f"{HERE}:ThreadProbe", AgentOptions(str(log))), tmp_path / "o",
                       limit=2, workers=workers)
    finally:
        torch.set_num_threads(threads)
    notes = [line.split() for line in log.read_text().splitlines()]
    assert [n[0] for n in notes].count("plan") == 2 and "initialize" in [n[0] for n in notes]
    assert {n[2] for n in notes} == {"1"}
    planners = {n[1] for n in notes if n[0] == "plan"}
    assert (planners == {str(os.getpid())}) == (workers == 1)  # serial: in this process; else in pool workers


@pytest.mark.parametrize("given", [{}, {"reason": ""}, {"reason": "  "}, {"reason": None}])
def test_a_task_that_fails_a_scene_without_a_reason_gets_one_saying_so(given):
    from w0sim.runner import run_task

    ref = SceneRef("tok", family="straight", seed=0)
    row = run_task(lambda r, i, agent: {"token": r.token, "valid": False, **given}, AgentSpec("constant_velocity"), ref,
                   3, agent=object())
    assert row == {"ref": "tok", "index": 3, "token": "tok", "valid": False,
                   "reason": "failed without a reason (the task gave none)"}
    # a valid row, or a failed one with its reason, passes through as the task gave it
    assert run_task(lambda r, i, a: {"valid": False, "reason": "off the map"}, AgentSpec("constant_velocity"), ref, 3,
                    agent=object())["reason"] == "off the map"
    assert "reason" not in run_task(lambda r, i, a: {"valid": True}, AgentSpec("constant_velocity"), ref, 3, agent=object())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_a_pool_worker_asks_for_sigterm_when_the_run_dies_and_leaves_at_once_if_it_already_has():
    """The pool initializer sets PR_SET_PDEATHSIG to SIGTERM (read back with PR_GET_PDEATHSIG); a worker whose run
    is no longer its parent exits 0 before taking any scene."""
    query = ("import ctypes, os; from w0sim.runner import _end_with_parent; _end_with_parent({parent}); "
             "sig = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(sig)); print('signal', sig.value)")
    ran = subprocess.run([sys.executable, "-c", query.format(parent="os.getppid()")], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True)
    assert ran.stdout.split() == ["signal", str(int(signal.SIGTERM))]
    orphan = subprocess.run([sys.executable, "-c", query.format(parent="os.getppid() + 1")], capture_output=True,
                            text=True, cwd=REPO_ROOT)
    assert (orphan.returncode, orphan.stdout) == (0, "")
