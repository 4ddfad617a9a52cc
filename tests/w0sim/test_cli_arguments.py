"""CLI arguments that gave tracebacks: each is a clean error (exit 2, a message naming the option), never a traceback."""
from __future__ import annotations

import os
import re

import pytest
from typer.testing import CliRunner

from w0sim.cli import app
from w0sim.runner import max_workers

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())


def test_workers_has_an_upper_bound(tmp_path):
    assert max_workers() == min(4 * os.cpu_count(), 256)
    for command in (["eval", "--agent", "constant_velocity", "--limit", 1, "--out", tmp_path / "o"],
                    ["collect", "--scenes", 1, "--out", tmp_path / "c"], ["scenes", "check", tmp_path]):
        code, output = invoke(*command, "--workers", max_workers() + 1)
        assert code == 2 and "--workers" in output and f"between 1 and {max_workers()}" in output, output
        code, output = invoke(*command, "--workers", -1)
        assert code == 2 and "--workers" in output, output
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_the_library_bounds_workers_too(tmp_path):
    from agents.registry import AgentSpec
    from w0sim.one_shot import evaluate_split
    from w0sim.runner import RunError

    with pytest.raises(RunError, match="--workers 100000: expected 1 to"):
        evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), tmp_path / "o", limit=1, workers=100_000)
    assert not (tmp_path / "o").exists()


def test_without_workers_or_a_known_cpu_count_the_scenes_run_in_this_process(tmp_path, monkeypatch):
    """--workers defaults to the CPU count; where Python cannot tell it (os.cpu_count() is None), one worker: the
    scenes run in the calling process, no pool."""
    import w0sim.runner as runner_module
    from agents.registry import AgentSpec
    from w0sim.one_shot import evaluate_split

    monkeypatch.setattr(runner_module.os, "cpu_count", lambda: None)
    monkeypatch.setattr(runner_module, "_pool_rows", lambda *args: pytest.fail("a process pool was started"))
    rows = evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), tmp_path / "o", limit=2)
    assert len(rows) == 2 and all(row["valid"] for row in rows)


@pytest.mark.parametrize("seed", [-1, 2**32, 10**30])
def test_seeds_out_of_range_are_usage_errors(tmp_path, seed):
    code, output = invoke("scenes", "generate", "--count", 1, "--seed", seed, "--out", tmp_path / "s")
    assert code == 2 and "--seed" in output and not (tmp_path / "s").exists()
    code, output = invoke("demo", "--seed", seed, "--out", tmp_path / "d")
    assert code == 2 and "--seed" in output


def test_out_naming_a_file_is_a_clean_error(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("mine")
    for command in (["scenes", "generate", "--count", 1], ["demo"], ["eval", "--agent", "constant_velocity"],
                    ["scenes", "export-navsim"]):
        code, output = invoke(*command, "--out", target)
        assert code == 2 and "is a file" in output, (command, output)
    assert target.read_text() == "mine"


def test_demo_with_an_unknown_family_or_traffic_lists_the_choices(tmp_path):
    code, output = invoke("demo", "--family", "bogus", "--out", tmp_path / "d")
    assert code == 2 and "'bogus'" in output and "straight, curve, intersection, t_junction, merge" in output
    code, output = invoke("demo", "--traffic", "bogus", "--out", tmp_path / "d")
    assert code == 2 and "reactive, replay" in output
    assert not (tmp_path / "d").exists()


def test_render_refuses_an_unknown_pdm_version(tmp_path):
    code, output = invoke("render", "--scene", tmp_path / "x.npz", "--out", tmp_path / "x.mp4", "--pdm-version", "v3")
    assert code == 2 and "v1.1, v2.2" in output


def test_export_navsim_refuses_a_name_that_is_a_path(tmp_path):
    code, output = invoke("scenes", "export-navsim", "--out", tmp_path / "e", "--name", "../../escape", "--limit", 1)
    assert code == 2 and "--name" in output and "plain folder name" in output
    assert not (tmp_path / "escape").exists()


def test_a_split_option_for_another_kind_of_split_is_refused(tmp_path):
    code, output = invoke("eval", "--agent", "constant_velocity", "--limit", 1, "--town-dir", tmp_path,
                          "--out", tmp_path / "o")
    assert code == 2 and "--town-dir applies to carla:NAME splits only, not to 'builtin:navtest'" in output
    code, output = invoke("eval", "--agent", "constant_velocity", "--limit", 1, "--sensor-blobs", tmp_path,
                          "--split", "builtin:routes", "--out", tmp_path / "o")
    assert code == 2 and "--sensor-blobs applies to navsim:NAME splits only" in output
    assert not (tmp_path / "o").exists()


def test_messages_are_printed_as_they_are(tmp_path):
    """Rich would print "navsim:x: no folder" as "navsim❌ no folder" (an emoji code)."""
    code, output = invoke("eval", "--agent", "constant_velocity", "--limit", 1, "--split", "navsim:x",
                          "--navsim-logs", tmp_path / "none", "--out", tmp_path / "o")
    assert code == 2 and "split navsim:x: no folder" in output, output


def test_show_says_when_it_cannot_write_the_image(tmp_path):
    from scenarios.generator import generate_scene
    from scenarios.scene import save_scene

    scene = tmp_path / "s.npz"
    save_scene(generate_scene("straight", 1), scene)
    code, output = invoke("scenes", "show", scene, "--png", tmp_path / "missing" / "x.png")
    assert code == 2 and "cannot write the BEV image" in output


@pytest.mark.parametrize("option, value", [("--service-timeout", 5), ("--service-retries", 0)])
def test_service_options_are_refused_for_an_agent_that_is_not_served(tmp_path, option, value):
    code, output = invoke("eval", "--agent", "drivevla_w0", "--limit", 1, "--out", tmp_path / "o", option, value)
    assert (code, output) == (2, "error: --service-timeout and --service-retries apply to a served policy (--agent "
                                 "egodriver:ADDRESS), not to drivevla_w0")
    assert not (tmp_path / "o").exists()


def test_a_plan_delay_that_is_not_a_whole_number_of_decisions_is_refused(tmp_path):
    code, output = invoke("eval", "--agent", "constant_velocity", "--split", "builtin:routes", "--limit", 1, "--out",
                          tmp_path / "o", "--plan-delay", 0.3)
    assert (code, output) == (2, "error: --plan-delay: plan delay 0.3 s must be a whole number of decisions (0.5 s "
                                 "each), 0 or more")
    assert not (tmp_path / "o").exists()
