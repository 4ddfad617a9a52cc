"""The runner's records and refusals in full: rows, reasons, the manifest and its differences, the output folder's
messages, worker counts, the row log, checkpoint hashes and how a dead worker ended."""
from __future__ import annotations

import json
import os
import re
import signal

import numpy as np
import pytest

from agents.base import Agent, AgentError, AgentOptions, SensorConfig
from agents.registry import AgentSpec
from scenarios.splits import SceneRef
from sim.state import Trajectory, TrajectorySampling
from w0sim import __version__
from w0sim.runner import (
    MANIFEST_NAME,
    RunError,
    SceneFailure,
    _how_it_ended,
    _isolated_row,
    _pool_rows,
    _split_id,
    append_rows,
    atomic_write,
    check_agent,
    check_workers,
    checkpoint_sha256,
    failed_row,
    initialized,
    manifest_differences,
    max_workers,
    output_folder,
    pin_threads,
    read_rows,
    run_manifest,
    run_split,
    run_task,
    worker_agent,
)

HERE = "tests.w0sim.test_runner_records"
REF = SceneRef("tok", family="straight", seed=0)


class Still(Agent):
    """Stands still; its history length and sampling are set per test."""

    def __init__(self, history_frames: int = 4, sampling: TrajectorySampling = TrajectorySampling()):
        super().__init__(sampling)
        self.history_frames = history_frames

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig(history_frames=self.history_frames)

    def compute_trajectory(self, agent_input, world=None):
        return Trajectory(np.zeros((8, 3)), self.trajectory_sampling)


class Unbuildable(Still):
    @classmethod
    def from_options(cls, options=AgentOptions()):
        raise ValueError("no weights\n  here")


# ---- the agent's checks and threads --------------------------------------------------------------------------------

def test_an_agent_wanting_more_history_than_the_environments_give_is_refused_in_full():
    check_agent(Still(history_frames=4), AgentSpec("constant_velocity"))  # exactly the 4 frames given: accepted
    with pytest.raises(AgentError) as refused:
        check_agent(Still(history_frames=5), AgentSpec("constant_velocity"))
    assert str(refused.value) == "agent constant_velocity wants 5 history frames; the environments give 4"


def test_an_agent_planning_another_sampling_is_refused_naming_both_samplings():
    with pytest.raises(AgentError) as refused:
        check_agent(Still(sampling=TrajectorySampling(num_poses=6, interval=0.5)), AgentSpec("constant_velocity"))
    assert str(refused.value) == (
        "agent constant_velocity plans TrajectorySampling(num_poses=6, interval=0.5); the evaluation scores "
        "TrajectorySampling(num_poses=8, interval=0.5) (NAVSIM's 8 poses at 0.5 s)")


class ThreadedInit(Still):
    """Imports torch and changes its thread count in initialize(), recording the count it found."""

    def initialize(self):
        import torch

        self.threads_at_initialize = torch.get_num_threads()
        torch.set_num_threads(3)


def test_a_cpu_torch_agent_computes_on_one_thread_before_and_after_it_initializes():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        agent = initialized(ThreadedInit())
        assert agent.threads_at_initialize == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        gpu = ThreadedInit()
        gpu.device = "cuda:0"
        pin_threads(gpu)  # a GPU agent's host threads are left as they are
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---- rows and reasons ------------------------------------------------------------------------------------------------

def test_a_failed_row_names_the_scene_its_index_family_and_reason():
    assert failed_row(SceneRef("t7", family="curve", seed=3), 7, "off the map") == {
        "ref": "t7", "index": 7, "token": "t7", "family": "curve", "valid": False, "reason": "off the map"}


def _raises(error):
    def task(ref, index, agent):
        raise error
    return task


def test_a_task_that_raises_gives_a_failed_row_saying_it_was_running_the_scene():
    row = run_task(_raises(KeyError("lane 4")), AgentSpec("constant_velocity"), REF, 2, agent=Still())
    assert row == {"ref": "tok", "index": 2, "token": "tok", "family": "straight", "valid": False,
                   "reason": "running the scene: KeyError: 'lane 4'"}


def test_a_scene_failure_keeps_the_reason_the_task_wrote():
    row = run_task(_raises(SceneFailure("scoring: GEOSException: bad ring")), AgentSpec("constant_velocity"), REF, 2,
                   agent=Still())
    assert row["reason"] == "scoring: GEOSException: bad ring" and row["valid"] is False


def test_an_agent_that_cannot_be_built_in_its_worker_fails_the_scene_saying_so():
    worker_agent.cache_clear()
    try:
        row = run_task(lambda r, i, a: {"valid": True}, AgentSpec(f"{HERE}:Unbuildable"), REF, 5)
    finally:
        worker_agent.cache_clear()
    assert row == {"ref": "tok", "index": 5, "token": "tok", "family": "straight", "valid": False,
                   "reason": f"building agent {HERE}:Unbuildable in its worker: ValueError: no weights here"}


def test_a_workers_agent_is_built_once_and_initialized():
    worker_agent.cache_clear()
    try:
        rows = [run_task(lambda r, i, a: {"agent": id(a), "threads": a.threads_at_initialize}, AgentSpec(
            f"{HERE}:ThreadedInit"), REF, i) for i in range(2)]
    finally:
        worker_agent.cache_clear()
    assert rows[0]["agent"] == rows[1]["agent"] and rows[0]["threads"] == 1


def test_a_tasks_row_comes_first_with_the_scene_ref_and_index_in_front():
    row = run_task(lambda r, i, a: {"token": "tok", "valid": True, "score": 0.5}, AgentSpec("constant_velocity"), REF,
                   4, agent=Still())
    assert row == {"ref": "tok", "index": 4, "token": "tok", "valid": True, "score": 0.5}
    assert list(row) == ["ref", "index", "token", "valid", "score"]


# ---- the row log and atomic files ------------------------------------------------------------------------------------

def test_rows_are_read_by_ref_skipping_cut_lines_lists_and_rows_without_a_string_ref(tmp_path):
    log = tmp_path / "rows.jsonl"
    log.write_text('{"ref": "a", "score": 1}\n[1, 2]\n{"ref": 3}\n{"score": 2}\n{"ref": "b", "sc\n'
                   '{"ref": "a", "score": 3}\n')
    assert read_rows(log) == {"a": {"ref": "a", "score": 3}}
    assert read_rows(tmp_path / "absent.jsonl") == {}


def test_appended_rows_end_a_cut_line_first_and_create_the_folder(tmp_path):
    log = tmp_path / "new" / "rows.jsonl"
    append_rows(log, [{"ref": "a"}])
    assert log.read_text() == '{"ref": "a"}\n'  # a new file starts with no blank line
    with log.open("a") as f:
        f.write('{"ref": "b", "sc')  # killed mid-line
    append_rows(log, [{"ref": "c"}, {"ref": "d"}])
    assert log.read_text() == '{"ref": "a"}\n{"ref": "b", "sc\n{"ref": "c"}\n{"ref": "d"}\n'
    append_rows(log, [])
    assert read_rows(log) == {"a": {"ref": "a"}, "c": {"ref": "c"}, "d": {"ref": "d"}}


def test_an_atomic_write_replaces_the_file_whole_and_leaves_nothing_when_it_fails(tmp_path):
    target = tmp_path / "results.json"
    atomic_write(target, "text")
    assert target.read_text() == "text"
    atomic_write(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    with pytest.raises(TypeError):
        atomic_write(target, ["not", "data"])
    assert target.read_bytes() == b"\x00bytes" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


# ---- worker counts ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cores, most", [(None, 4), (1, 4), (2, 8), (64, 256), (65, 256)])
def test_a_run_may_ask_for_four_workers_per_core_and_at_most_256(monkeypatch, cores, most):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert max_workers() == most


def test_worker_counts_from_one_to_the_limit_are_accepted_and_the_others_refused_in_full(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for workers in (None, 1, 8):
        check_workers(workers)
    for workers in (0, 9):
        with pytest.raises(RunError) as refused:
            check_workers(workers)
        assert str(refused.value) == (f"--workers {workers}: expected 1 to 8 (4 per CPU core, at most 256; "
                                      "this machine has 2 cores)")


# ---- the manifest ----------------------------------------------------------------------------------------------------

def test_the_manifest_records_every_setting_of_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = AgentSpec("constant_velocity", AgentOptions(seed=7))
    manifest = run_manifest(spec, "navsim:navtest", "one_shot", limit=3, pdm_version="v2.2", human_filter=True,
                            repetitions=2, split_options={"b": "maps", "a": "logs", "c": None})
    assert manifest == {
        "format": "w0sim eval run manifest 1", "w0sim_version": __version__, "mode": "one_shot",
        "agent": "constant_velocity", "agent_class": "agents.constant_velocity:ConstantVelocityAgent",
        "checkpoint": None, "checkpoint_sha256": None, "seed": 7, "device": "cpu", "dtype": "float32",
        "split": "navsim:navtest", "split_options": {"a": str(tmp_path / "logs"), "b": str(tmp_path / "maps")},
        "limit": 3, "repetitions": 2, "pdm_version": "v2.2", "human_filter": True}
    assert list(manifest["split_options"]) == ["a", "b"]
    defaults = run_manifest(AgentSpec("constant_velocity"), "builtin:navtest", "closed_loop")
    assert (defaults["limit"], defaults["repetitions"], defaults["pdm_version"], defaults["human_filter"],
            defaults["split_options"], defaults["seed"]) == (None, 1, None, None, {}, 0)


class WithCheckpoint(Still):
    checkpoint = "weights"


def test_the_manifest_names_the_agents_checkpoint_by_absolute_path_and_content(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.bin").write_bytes(b"w")
    manifest = run_manifest(AgentSpec(f"{HERE}:Still"), "builtin:navtest", "one_shot", agent=WithCheckpoint())
    assert manifest["checkpoint"] == str(tmp_path / "weights")
    assert manifest["checkpoint_sha256"] == checkpoint_sha256(tmp_path / "weights") is not None


def test_a_split_is_recorded_as_named_or_by_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _split_id("builtin:navtest") == "builtin:navtest"
    assert _split_id("navsim:logs/x") == "navsim:logs/x"
    assert _split_id("carla:routes/a.xml") == f"carla:{tmp_path / 'routes' / 'a.xml'}"
    assert _split_id("scenes") == str(tmp_path / "scenes")


def test_differences_name_each_setting_old_and_new_and_skip_limits_repetitions_and_names():
    old = {"agent": "a", "agent_class": "m:A", "checkpoint": "/c1", "checkpoint_sha256": "0123456789abcdef",
           "seed": 0, "limit": 2, "repetitions": 1, "pdm_version": "v1.1", "human_filter": None, "only_old": 1}
    new = {"agent": "b", "agent_class": "m:B", "checkpoint": "/c2", "checkpoint_sha256": "fedcba9876543210",
           "seed": 1, "limit": 5, "repetitions": 3, "pdm_version": "v2.2", "human_filter": True, "only_new": "x"}
    assert manifest_differences(old, new) == [
        "agent: 'a' (m:A) there, 'b' (m:B) now",
        "checkpoint: /c1 (sha256 0123456789ab) there, /c2 (sha256 fedcba987654) now",
        "seed: 0 there, 1 now",
        "pdm_version: 'v1.1' there, 'v2.2' now",
        "only_old: 1 there, None now",
        "only_new: None there, 'x' now",
    ]
    # the agent's name and the checkpoint's path are information: equal classes and contents are the same run
    assert manifest_differences({**old, "agent": "a2", "checkpoint": "/c3"}, old) == []
    assert manifest_differences({**old, "human_filter": False}, {**old, "human_filter": True}) == [
        "human_filter: False there, True now"]


# ---- the output folder -----------------------------------------------------------------------------------------------

def _manifest(**changes) -> dict:
    return {**run_manifest(AgentSpec("constant_velocity"), "builtin:navtest", "one_shot", limit=2,
                           pdm_version="v1.1"), **changes}


def test_an_output_folder_records_this_process_as_its_holder_and_lets_go_at_the_end(tmp_path):
    out = tmp_path / "out"
    with output_folder(out, _manifest()) as folder:
        assert (out / ".lock").read_text() == f"{os.getpid()}\n"
        folder.write_manifest()
        with output_folder(out, _manifest(limit=9)) as inner:  # the same run's inner function, another limit
            assert inner is folder
    assert json.loads((out / MANIFEST_NAME).read_text()) == _manifest()
    with output_folder(out, _manifest()):  # released: the next run takes it
        pass


def test_a_folder_held_by_this_process_with_other_settings_is_a_bug_named_in_full(tmp_path):
    out = tmp_path / "out"
    with output_folder(out, _manifest()):
        with pytest.raises(RunError) as refused, output_folder(out, _manifest(seed=4)):
            pass
    assert str(refused.value) == f"{out} is held by a run of other settings in this process: seed: 0 there, 4 now"


def test_an_out_path_that_is_a_file_is_refused_in_full(tmp_path):
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(RunError) as refused, output_folder(tmp_path / "taken", _manifest()):
        pass
    assert str(refused.value) == f"--out {tmp_path / 'taken'} is a file; give a folder (new, or one this run resumes)"


def test_a_folder_that_cannot_be_made_is_refused_with_the_systems_reason(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunError) as refused, output_folder(tmp_path / "file" / "out", _manifest()):
        pass
    assert str(refused.value) == f"cannot use {tmp_path / 'file' / 'out'} as the output folder: Not a directory"


def test_a_refused_run_removes_the_folder_it_made_but_not_one_it_found(tmp_path):
    made, found = tmp_path / "made", tmp_path / "found"
    found.mkdir()
    for out in (made, found):
        with pytest.raises(RuntimeError), output_folder(out, _manifest()):
            raise RuntimeError("refused before its first row")
    assert not made.exists()
    assert [p.name for p in found.iterdir()] == [".lock"]
    with pytest.raises(RuntimeError), output_folder(made, _manifest()) as folder:
        folder.write_manifest()
        raise RuntimeError("failed after writing")
    assert sorted(p.name for p in made.iterdir()) == [".lock", MANIFEST_NAME]  # what it wrote is kept


def test_another_runs_folder_is_refused_naming_each_difference_in_full(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text(json.dumps(_manifest(seed=3, pdm_version="v2.2")))
    with pytest.raises(RunError) as refused, output_folder(out, _manifest()):
        pass
    assert str(refused.value) == (
        f"{out} holds a run with other settings, which this run would mix its rows with: seed: 3 there, 0 now; "
        f"pdm_version: 'v2.2' there, 'v1.1' now. Evaluate into another --out folder, or remove {out} to start afresh")


@pytest.mark.parametrize("text, why", [("{", "JSONDecodeError: Expecting property name enclosed in double quotes: "
                                                "line 1 column 2 (char 1)"),
                                       (b"\xff", "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in "
                                                 "position 0: invalid start byte")])
def test_an_unreadable_manifest_is_refused_saying_why(tmp_path, text, why):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RunError) as refused, output_folder(out, _manifest()):
        pass
    assert str(refused.value) == (f"{out / MANIFEST_NAME} cannot be read ({why}); evaluate into another --out folder, "
                                  f"or remove {out} to start afresh")


@pytest.mark.parametrize("content", [[1, 2], {"format": "something else"}, {}])
def test_a_manifest_of_another_program_is_refused(tmp_path, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text(json.dumps(content))
    with pytest.raises(RunError) as refused, output_folder(out, _manifest()):
        pass
    assert str(refused.value) == f"{out / MANIFEST_NAME} is not a w0sim eval manifest; evaluate into another --out folder"


def test_results_without_a_manifest_are_refused_listing_them_and_empty_ones_are_not_results(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("rows.jsonl", "scores.csv", "results.json"):
        (out / name).write_text("")
    with output_folder(out, _manifest()):  # empty files: nothing was finished there
        pass
    (out / "rows.jsonl").write_text("{}\n")
    (out / "results.json").write_text("{}")
    with pytest.raises(RunError) as refused, output_folder(out, _manifest()):
        pass
    assert str(refused.value) == (
        f"{out} holds results (rows.jsonl, results.json) but no manifest.json saying which agent and settings made "
        "them (an older w0sim, or another program, wrote them); this run cannot tell whether they are its own. "
        f"Evaluate into another --out folder, or remove {out} to start afresh")
    with pytest.raises(RunError, match=re.escape("holds results (rows.jsonl) but")):  # results.json: checked later
        with output_folder(out, _manifest(mode="closed_loop")):
            pass


# ---- run_split's progress and rows -----------------------------------------------------------------------------------

def _score_index(ref, index, agent):
    return {"token": ref.token, "valid": True, "score": index / 10}


def test_a_run_reports_progress_and_rows_as_scenes_finish_and_nothing_once_all_are_done(tmp_path):
    refs = [SceneRef(f"t{i}", family="straight", seed=i) for i in range(3)]
    calls, seen = [], []
    rows = run_split(refs, AgentSpec("constant_velocity"), _score_index, tmp_path, workers=1,
                     progress=lambda done, total: calls.append((done, total)), on_row=lambda done: seen.append(len(done)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)] and seen == [1, 2, 3]
    assert rows == [{"ref": f"t{i}", "index": i, "token": f"t{i}", "valid": True, "score": i / 10} for i in range(3)]
    assert [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()] == rows
    calls.clear()  # all done: no scene runs, no progress, and the agent is not even initialized
    assert run_split(refs, AgentSpec(f"{HERE}:FailsToInitialize"), _raises(AssertionError("ran again")), tmp_path,
                     workers=1, progress=lambda done, total: calls.append((done, total))) == rows
    assert calls == []


class FailsToInitialize(Still):
    def initialize(self):
        raise AssertionError("initialized with nothing left to run")


def _unpicklable_row(ref, index, agent):
    return {"token": ref.token, "valid": True, "plan": lambda: None}


UNPICKLABLE = {"ref": "tok", "index": 0, "token": "tok", "family": "straight", "valid": False,
               "reason": "returning the scene's row from its worker process: AttributeError: Can't pickle local object "
                         "'_unpicklable_row.<locals>.<lambda>'"}


def test_a_row_that_cannot_come_back_from_its_worker_is_a_failed_row_saying_so():
    assert list(_pool_rows(AgentSpec("constant_velocity"), _unpicklable_row, [(0, REF)], 2)) == [UNPICKLABLE]
    assert _isolated_row(AgentSpec("constant_velocity"), _unpicklable_row, REF, 0) == UNPICKLABLE


def _dies(ref, index, agent):
    os.kill(os.getpid(), signal.SIGKILL)


def _exits(ref, index, agent):
    os._exit(3)


def test_a_scene_run_in_a_process_of_its_own_gives_its_row_or_says_how_the_process_ended():
    spec = AgentSpec("constant_velocity")
    assert _isolated_row(spec, _score_index, REF, 3) == {"ref": "tok", "index": 3, "token": "tok", "valid": True,
                                                         "score": 0.3}
    died = {"ref": "tok", "index": 4, "token": "tok", "family": "straight", "valid": False}
    assert _isolated_row(spec, _dies, REF, 4) == {**died, "reason": (
        "the worker process running this scene died (killed by signal SIGKILL); a native library crashed or the "
        "process was killed")}
    assert _isolated_row(spec, _exits, REF, 4)["reason"] == (
        "the worker process running this scene died (exit code 3); a native library crashed or the process was killed")


# ---- how a worker process ended --------------------------------------------------------------------------------------

@pytest.mark.parametrize("code, said", [(-signal.SIGSEGV, "killed by signal SIGSEGV"),
                                        (-signal.SIGKILL, "killed by signal SIGKILL"), (-200, "killed by signal 200"),
                                        (3, "exit code 3"), (0, "it ended abruptly"), (None, "it ended abruptly")])
def test_a_dead_workers_end_is_told_by_signal_name_number_or_exit_code(code, said):
    assert _how_it_ended(code) == said


def test_a_checkpoints_hash_covers_names_and_contents_but_not_its_documentation(tmp_path):
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "model.bin").write_bytes(b"ab")
    (folder / "config.json").write_bytes(b"c")
    base = checkpoint_sha256(folder)
    assert len(base) == 64 and checkpoint_sha256(tmp_path / "absent") is None
    for doc in ("README.md", "NOTES.MD"):
        (folder / doc).write_text("documentation")
    assert checkpoint_sha256(folder) == base
    (folder / "sub" / "model.bin").rename(folder / "model.bin")  # same content, another place
    assert checkpoint_sha256(folder) != base
    (folder / "model.bin").rename(folder / "sub" / "model.bin")
    assert checkpoint_sha256(folder) == base
    # a file's content that reads like the next file's header is not that next file: sizes delimit the contents
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    (one / "a").write_bytes(b"xb\0\0y")
    (two / "a").write_bytes(b"x")
    (two / "b").write_bytes(b"y")
    assert checkpoint_sha256(one) != checkpoint_sha256(two)
    single = tmp_path / "weights.safetensors"
    single.write_bytes(b"ab")
    assert len(checkpoint_sha256(single)) == 64
