"""Output folders that cannot lie: the run manifest written first, resumes with other settings refused naming each
difference, folders of an older w0sim refused, a lock so that two runs cannot interleave, unique temporary files."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from agents.registry import AgentSpec
from tests.conftest import REPO_ROOT
from training.record import TRAINING_RECORD
from w0sim.cli import app
from w0sim.one_shot import evaluate_split, write_csv
from w0sim.runner import (
    MANIFEST_NAME,
    RunError,
    checkpoint_sha256,
    manifest_differences,
    output_folder,
    run_manifest,
)

runner = CliRunner()


def flat(text: str) -> str:
    """Output on one line, without the box of a usage error: rich wraps long lines at the console width."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def evaluate(out, *args):
    result = runner.invoke(app, ["eval", "--workers", "1", "--out", str(out), *[str(a) for a in args]])
    return result.exit_code, flat(result.output), result


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def constant_velocity_run(tmp_path_factory):
    """`w0sim eval --agent constant_velocity --limit 2 --out X`: the folder other runs try to resume."""
    out = tmp_path_factory.mktemp("cv") / "run"
    code, output, _ = evaluate(out, "--agent", "constant_velocity", "--limit", 2)
    assert code == 0, output
    return out


def copy_of(folder, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_the_manifest_is_written_and_names_the_run(constant_velocity_run):
    manifest = json.loads((constant_velocity_run / MANIFEST_NAME).read_text())
    assert manifest["agent"] == "constant_velocity" and manifest["agent_class"].endswith(":ConstantVelocityAgent")
    assert manifest["split"] == "builtin:navtest" and manifest["limit"] == 2 and manifest["pdm_version"] == "v1.1"
    assert manifest["mode"] == "one_shot" and manifest["checkpoint"] is None and manifest["seed"] == 0
    from w0sim import __version__

    assert manifest["w0sim_version"] == __version__


def test_a_manifest_names_route_files_and_split_folders_by_absolute_path(tmp_path, monkeypatch):
    """Route files and --town-dir style options are resolved, so the same files named from elsewhere are the same
    run, and two different route files are not."""
    monkeypatch.chdir(tmp_path)
    spec = AgentSpec("constant_velocity")
    manifest = run_manifest(spec, "carla:routes/a.xml", "closed_loop", split_options={"town_dir": "towns"})
    assert manifest["split"] == f"carla:{tmp_path / 'routes' / 'a.xml'}"
    assert manifest["split_options"] == {"town_dir": str(tmp_path / "towns")}
    other = run_manifest(spec, "carla:routes/b.xml", "closed_loop", split_options={"town_dir": "towns"})
    assert manifest_differences(manifest, other) == [f"split: 'carla:{tmp_path / 'routes' / 'a.xml'}' there, "
                                                     f"'carla:{tmp_path / 'routes' / 'b.xml'}' now"]


@pytest.mark.parametrize("args, named", [
    (("--agent", "pdm_closed"), "agent: 'constant_velocity' (agents.constant_velocity:ConstantVelocityAgent) there, "
                                "'pdm_closed' (agents.pdm_closed:PDMClosedAgent) now"),
    (("--agent", "constant_velocity", "--pdm-version", "v2.2"), "pdm_version: 'v1.1' there, 'v2.2' now"),
    (("--agent", "constant_velocity", "--seed", "3"), "seed: 0 there, 3 now"),
    (("--agent", "constant_velocity", "--split", "builtin:navtrain"), "split: 'builtin:navtest' there, "
                                                                     "'builtin:navtrain' now"),
])
def test_resuming_with_other_settings_is_refused_naming_the_difference(constant_velocity_run, tmp_path, args, named):
    """The issue's reproduction: constant velocity's rows are never reported as PDM-Closed's (nor v1.1's as v2.2's)."""
    out = copy_of(constant_velocity_run, tmp_path)
    before = snapshot(out)
    code, output, result = evaluate(out, *args, "--limit", 2)
    assert code == 2 and isinstance(result.exception, SystemExit), output
    assert named in output and "another --out folder" in output
    assert snapshot(out) == before  # nothing was written, the manifest included


def test_every_difference_is_named(constant_velocity_run, tmp_path):
    out = copy_of(constant_velocity_run, tmp_path)
    code, output, _ = evaluate(out, "--agent", "pdm_closed", "--pdm-version", "v2.2", "--limit", 2)
    assert code == 2 and "agent: 'constant_velocity'" in output and "pdm_version: 'v1.1' there, 'v2.2' now" in output


def test_the_same_settings_resume_and_another_limit_extends_the_run(constant_velocity_run, tmp_path):
    """Rows are keyed by scene: --limit 3 on a --limit 2 folder runs the third scene only and gives the CSV of a
    fresh --limit 3 run; the manifest records the new limit."""
    out = copy_of(constant_velocity_run, tmp_path)
    calls = []
    evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), out, limit=3, workers=1,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 3), (3, 3)]  # the bar starts at the two scenes done; the third runs
    assert json.loads((out / MANIFEST_NAME).read_text())["limit"] == 3
    fresh = tmp_path / "fresh"
    evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), fresh, limit=3, workers=1)
    assert (out / "scores.csv").read_bytes() == (fresh / "scores.csv").read_bytes()
    code, output, _ = evaluate(out, "--agent", "constant_velocity", "--limit", 3)  # all there: nothing runs
    assert code == 0, output
    assert (out / "scores.csv").read_bytes() == (fresh / "scores.csv").read_bytes()


@pytest.mark.parametrize("left", ["rows.jsonl", "scores.csv"])
def test_a_folder_of_an_older_w0sim_without_a_manifest_is_refused(constant_velocity_run, tmp_path, left):
    out = tmp_path / "old"
    out.mkdir()
    (out / left).write_bytes((constant_velocity_run / left).read_bytes())
    code, output, _ = evaluate(out, "--agent", "pdm_closed", "--limit", 2)
    assert code == 2 and f"holds results ({left}) but no manifest.json" in output, output
    assert [p.name for p in out.iterdir() if p.name != ".lock"] == [left]


def test_evaluate_returns_the_scores_file_it_wrote_and_how_many_scenes_it_has(tmp_path):
    from w0sim.evaluation import evaluate as evaluate_api

    run = evaluate_api("builtin:navtest", AgentSpec("constant_velocity"), tmp_path, limit=2, workers=1)
    assert run.scores_file == tmp_path / "scores.csv"
    tokens = [row["token"] for row in csv.DictReader(run.scores_file.open())]
    assert len(tokens) == 3 and tokens[-1] == "average"  # two scenes, then NAVSIM's average row
    assert (run.total, run.unit, run.failures) == (2, "scenes", [])
    assert (tmp_path / "summary.md").read_text() == run.summary


def test_a_closed_loop_results_json_of_a_one_shot_folder_is_refused(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(RunError, match=re.escape("holds results (results.json) but no manifest.json")):
        evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), tmp_path, limit=1, workers=1)


def test_an_unreadable_manifest_is_refused(constant_velocity_run, tmp_path):
    out = copy_of(constant_velocity_run, tmp_path)
    (out / MANIFEST_NAME).write_text("{not json")
    code, output, _ = evaluate(out, "--agent", "constant_velocity", "--limit", 2)
    assert code == 2 and "manifest.json cannot be read" in output


def test_a_one_shot_folder_is_not_resumed_closed_loop(constant_velocity_run, tmp_path):
    out = copy_of(constant_velocity_run, tmp_path)
    code, output, _ = evaluate(out, "--agent", "constant_velocity", "--limit", 2, "--closed-loop")
    assert code == 2 and "mode: 'one_shot' there, 'closed_loop' now" in output


def test_an_unknown_pdm_version_is_refused_up_front_listing_the_versions(tmp_path):
    out = tmp_path / "v3"
    code, output, _ = evaluate(out, "--agent", "constant_velocity", "--limit", 2, "--pdm-version", "v3")
    assert code == 2 and "'v3' is not a PDM score version" in output and "v1.1, v2.2" in output
    assert not out.exists()  # nothing poisoned: the correct rerun starts clean
    with pytest.raises(RunError, match="v1.1, v2.2"):
        evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), out, "v3", limit=1, workers=1)
    assert not out.exists()


def test_checkpoints_are_compared_by_content_not_by_path(tmp_path):
    source = REPO_ROOT / "checkpoints" / "drivevla-w0-tiny"
    if not (source / "model.safetensors").is_file():
        pytest.skip("the shipped checkpoint is absent")
    same, changed = tmp_path / "same", tmp_path / "changed"
    shutil.copytree(source, same)
    shutil.copytree(source, changed)
    weights = bytearray((changed / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (changed / "model.safetensors").write_bytes(bytes(weights))
    (same / "README.md").write_text("notes, not weights")
    (same / TRAINING_RECORD).write_text('{"stages": []}')  # how it was made, not what it computes
    assert checkpoint_sha256(same) == checkpoint_sha256(source) != checkpoint_sha256(changed)

    def manifest(folder):
        return run_manifest(AgentSpec("drivevla_w0", options=_options(folder)), "builtin:navtest", "one_shot",
                            limit=2, pdm_version="v1.1")

    out = tmp_path / "out"
    with output_folder(out, manifest(source)) as folder:
        folder.write_manifest()
    with output_folder(out, manifest(same)):  # the same weights elsewhere: the same run
        pass
    with pytest.raises(RunError, match=r"checkpoint: .*drivevla-w0-tiny \(sha256 [0-9a-f]{12}\) there, "
                                       r".*changed \(sha256 [0-9a-f]{12}\) now"):
        with output_folder(out, manifest(changed)):
            pass


def _options(checkpoint):
    from agents.base import AgentOptions

    return AgentOptions(str(checkpoint))


def test_out_naming_a_file_is_a_clean_error(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("mine")
    code, output, result = evaluate(target, "--agent", "constant_velocity", "--limit", 1)
    assert code == 2 and isinstance(result.exception, SystemExit) and "is a file" in output
    with pytest.raises(RunError, match="is a file"):
        evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), target, limit=1, workers=1)
    assert target.read_text() == "mine"


HOLDER = """
import sys
from w0sim.runner import output_folder
with output_folder(sys.argv[1], {"format": "w0sim eval run manifest 1", "mode": "one_shot"}):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_run_on_a_folder_another_run_holds_is_refused(tmp_path):
    out = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=REPO_ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, output, _ = evaluate(out, "--agent", "constant_velocity", "--limit", 1)
        assert code == 2 and f"another run (process {holder.pid}) is writing to" in output, output
        assert not (out / "rows.jsonl").exists() and not (out / MANIFEST_NAME).exists()
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    code, output, _ = evaluate(out, "--agent", "constant_velocity", "--limit", 1)  # released when it ended
    assert code == 0, output


def test_the_csv_temporary_file_is_unique_per_writer(tmp_path):
    """Two writers of one scores.csv (the fixed temporary name collided: FileNotFoundError on rename)."""
    rows = [{"token": f"t{i}", "valid": True, "score": i / 10} for i in range(3)]
    path = tmp_path / "scores.csv"
    errors = []

    def write(times):
        try:
            for _ in range(times):
                write_csv(rows, path, "v1.1")
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=write, args=(150,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]  # no temporary file left behind
    table = list(csv.DictReader(path.open()))
    assert [r["token"] for r in table] == ["t0", "t1", "t2", "average"]
