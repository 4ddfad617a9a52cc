"""`w0sim eval --backend carla` end to end against the FAKE CARLA server (tests/fakes/carla_server.py): a clean run,
every injectable server failure (the route "Failed - Simulation crashed", marked rerun, the run going on, the next run
completing the file), a server that stays dead, the agent watchdog, Ctrl-C, the CLI's refusals and the manifest, and
the results file read back by the Leaderboard's resume rule.

The routes are three short (70-80 m) straight Town01 routes written here, driven by a cheap privileged agent at 8 m/s
with 0.1 s ticks, so a route takes well under a second against the fake."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.base import SensorConfig
from metrics.leaderboard.results_io import read_results, resume_check
from tests.carla_server.agents import RouteTracerAgent
from tests.conftest import REPO_ROOT
from tests.fakes.carla_server import FakeCarlaServer, install, shared_town_dir
from w0sim.cli import app
from w0sim.closed_loop import CARLA_MANIFEST_FIELDS

TRACER = "tests.carla_server.agents:RouteTracerAgent"
CAMERA_TRACER = f"{__name__}:CameraTracerAgent"
SLOW_AGENT = f"{__name__}:SlowAgent"
TIMEOUT_S = 2.0
CRASHED = "Failed - Simulation crashed"
FINE = ("Completed", "Perfect")

# Three straight stretches of Town01 (CARLA frame, Leaderboard 2.x route layout), 70-80 m each: the tracer completes
# all three on the fake, no infraction but a min-speed one.
ROUTES_XML = """<?xml version="1.0" encoding="UTF-8"?>
<routes>
   <route id="21" town="Town01">
      <waypoint pitch="0.0" roll="0.0" x="250.0" y="194.88" yaw="179.8323" z="0.0" />
      <waypoint pitch="0.0" roll="0.0" x="170.0" y="195.12" yaw="179.8323" z="0.0" />
   </route>
   <route id="11" town="Town01">
      <waypoint pitch="0.0" roll="0.0" x="88.402" y="215.578" yaw="89.9913" z="0.0" />
      <waypoint pitch="0.0" roll="0.0" x="88.417" y="285.634" yaw="89.9913" z="0.0" />
   </route>
   <route id="12" town="Town01">
      <waypoint pitch="0.0" roll="0.0" x="1.6126" y="170.712" yaw="269.8846" z="0.0" />
      <waypoint pitch="0.0" roll="0.0" x="1.45" y="100.0" yaw="269.8846" z="0.0" />
   </route>
</routes>
"""
ROUTE_IDS = ["RouteScenario_21_rep0", "RouteScenario_11_rep0", "RouteScenario_12_rep0"]
FIRST, OTHERS = ROUTE_IDS[0], ROUTE_IDS[1:]
INJECT_AFTER_TICKS = 30  # the first route's open tick and 10 warm-up ticks, then about 2 s of driving: mid-route


# ----------------------------------------------------------------------------------------------------------------------
# Agents for these tests (importable by the CLI as tests.carla_server.test_carla_eval:NAME)

class CameraTracerAgent(RouteTracerAgent):
    """The route tracer with the front camera, so the server's camera frames are waited for (a dropped one shows)."""

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig(cameras=True)


class SlowAgent(RouteTracerAgent):
    """The route tracer, but its 3rd decision (of the process's driving instance) takes longer than the watchdog's
    --carla-timeout of these tests."""

    SLOW_DECISION = 3
    SLEEP_S = TIMEOUT_S + 1.5

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.decisions = 0

    def compute_trajectory(self, agent_input, world=None):
        self.decisions += 1
        if self.decisions == self.SLOW_DECISION:
            time.sleep(self.SLEEP_S)
        return super().compute_trajectory(agent_input, world)


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures and helpers

@pytest.fixture(scope="module")
def town_dir() -> Path:
    return shared_town_dir()  # skips, saying where it looked, without the shared CARLA towns


@pytest.fixture(scope="module")
def routes(tmp_path_factory, town_dir) -> Path:
    path = tmp_path_factory.mktemp("carla_routes") / "routes_short.xml"
    path.write_text(ROUTES_XML)
    return path


@pytest.fixture
def server(monkeypatch, town_dir):
    """A started fake server on the CLI's default localhost:2000, `carla.Client` the fake's client."""
    install(monkeypatch)
    fake = FakeCarlaServer(town_dir).start()
    try:
        yield fake
    finally:
        fake.stop()


def eval_args(routes: Path, town_dir: Path, out: Path, *extra: str, agent: str = TRACER, backend: bool = True) -> list[str]:
    args = ["eval", "--agent", agent, "--split", f"carla:{routes}", "--town-dir", str(town_dir), "--out", str(out)]
    if backend:
        args += ["--backend", "carla", "--carla-fixed-delta", "0.1", "--carla-timeout", f"{TIMEOUT_S:g}"]
    return args + list(extra)


def cli(args: list[str]):
    """The CLI in this process; an exception other than its exit would be a w0sim bug, not an exit code."""
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{result.output}")
    return result


def run_eval(routes: Path, town_dir: Path, out: Path, *extra: str, agent: str = TRACER, expect: int | None = None):
    result = cli(eval_args(routes, town_dir, out, *extra, agent=agent))
    if expect is not None:
        assert result.exit_code == expect, result.output
    return result


def row_lines(out: Path) -> list[str]:
    path = out / "rows.jsonl"
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def last_rows(out: Path) -> dict[str, dict]:
    """rows.jsonl's last row per route (a rerun route's new row replaces its old one)."""
    return {row["ref"]: row for row in map(json.loads, row_lines(out))}


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def canonical(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


def assert_finished(out: Path, planned: list[str] = ROUTE_IDS) -> dict:
    """results.json complete and every route driven to its end; returns the file."""
    data = results(out)
    assert data["entry_status"] == "Finished", data["entry_status"]
    assert data["_checkpoint"]["progress"] == [len(planned), len(planned)]
    records = data["_checkpoint"]["records"]
    assert [r["route_id"] for r in records] == planned
    for record in records:
        assert record["status"] in FINE, (record["route_id"], record["status"], record["infractions"])
        assert record["scores"]["score_route"] == 100, (record["route_id"], record["scores"])
    return data


# ----------------------------------------------------------------------------------------------------------------------
# The route file itself

def test_the_short_route_file_densifies_into_short_town01_routes(routes, town_dir):
    from metrics.leaderboard.criteria import route_length
    from scenarios.splits import resolve_split

    refs = resolve_split(f"carla:{routes}", town_dir=town_dir)
    assert [ref.route_id for ref in refs] == ["21", "11", "12"]
    for ref in refs:
        scene = ref.load()
        assert scene.metadata["town"] == "Town01"
        assert 60.0 <= route_length(scene.route_points) <= 100.0
        assert len(scene.route_points) > 50  # densified along the road, not the two waypoints


# ----------------------------------------------------------------------------------------------------------------------
# 1. A clean run

def test_a_clean_run_finishes_every_route_and_leaves_the_server_clean(server, routes, town_dir, tmp_path):
    out = tmp_path / "clean"
    result = run_eval(routes, town_dir, out, expect=0)

    assert_finished(out)
    assert server.stats.loads == 3 and server.stats.timeouts == 0 and server.stats.deaths == 0
    server.assert_clean()
    assert not server.synchronous and not server.tm_synchronous and server.client_actors() == []
    assert all("rerun" not in row and "reason" not in row for row in last_rows(out).values())

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == {"name": "carla", "fixed_delta_s": 0.1, "traffic_manager_seed": 0,
                                   "hero_blueprint": "vehicle.lincoln.mkz_2020", "background_traffic": True,
                                   "warmup_ticks": 10}
    assert set(manifest["backend"]) == {"name", *CARLA_MANIFEST_FIELDS}
    text = json.dumps(manifest)
    for absent in ("host", "port", "timeout", "restart"):  # a resumed run against another server continues the folder
        assert absent not in text, absent
    summary = (out / "summary.md").read_text()
    assert all(route_id in summary for route_id in ROUTE_IDS)
    assert "failed" not in result.output


# ----------------------------------------------------------------------------------------------------------------------
# 2. Each injected failure on the first route: crashed and rerun, the run goes on, the next run completes the file

FAILURES = {
    # kind: (how to inject, restart the server?, agent, what the reason names)
    "timeout": ("mid-route", False, TRACER, r"ticking on the CARLA server at localhost:2000: time-out"),
    "hang": ("mid-route", True, TRACER, r"the tick after frame \d+ .* did not return within 3 s"),
    "drop_sensor_frame": ("mid-route", False, CAMERA_TRACER, r"sensor\(s\) front sent no data for frame \d+|skipped frame"),
    "spawn_collision": ("first hero", False, TRACER, r"hero could not be spawned .*spawn collision"),
    "die": ("mid-route", True, TRACER, r"ticking on the CARLA server at localhost:2000: time-out"),
}


@pytest.mark.parametrize("kind", list(FAILURES))
def test_a_server_failure_on_the_first_route_is_a_rerun_simulation_crash_and_the_run_goes_on(kind, server, routes,
                                                                                             town_dir, tmp_path):
    when, restart, agent, reason = FAILURES[kind]
    out, marker = tmp_path / "run", tmp_path / "restart.marker"
    extra = ["--carla-restart", f"touch {marker}"] if restart else []
    if restart:
        server.restart_marker(marker)
    server.inject(kind, at_tick=None if when == "first hero" else server.ticks + INJECT_AFTER_TICKS)

    result = run_eval(routes, town_dir, out, *extra, agent=agent, expect=1)

    assert server.pending_injections() == [], "the failure was not triggered"
    rows = last_rows(out)
    assert list(rows) == ROUTE_IDS
    crashed = rows[FIRST]
    assert crashed["record"]["status"] == CRASHED
    assert crashed["rerun"] is True
    assert re.search(reason, crashed["reason"]), crashed["reason"]
    if when == "first hero":
        assert crashed["record"]["scores"]["score_route"] == 0  # it never started
    else:
        assert 0 < crashed["record"]["scores"]["score_route"] < 100  # what was driven so far
    for route_id in OTHERS:  # the run went on
        assert "rerun" not in rows[route_id] and "reason" not in rows[route_id], rows[route_id]
        assert rows[route_id]["record"]["status"] in FINE, rows[route_id]["record"]["status"]
        assert rows[route_id]["record"]["scores"]["score_route"] == 100
    first = results(out)
    assert first["entry_status"] == "Crashed"
    assert first["_checkpoint"]["progress"][1] == len(ROUTE_IDS)
    assert first["_checkpoint"]["records"][0]["route_id"] == FIRST
    assert first["_checkpoint"]["records"][0]["status"] == CRASHED
    assert resume_check(read_results(out / "results.json"), ROUTE_IDS) == (0, "")  # the Leaderboard resumes there too
    assert f"{FIRST}" in result.output and "1 of 3 routes failed" in result.output
    if restart:
        assert server.stats.revives == 1 and not marker.exists()  # the restart command ran and the server came back
    assert not server.dead and not server.hung
    server.assert_clean()

    # The next run into the folder drives the crashed route again, and only it.
    lines_before, loads_before = row_lines(out), server.stats.loads
    run_eval(routes, town_dir, out, *extra, agent=agent, expect=0)

    assert server.stats.loads == loads_before + 1
    lines_after = row_lines(out)
    assert lines_after[: len(lines_before)] == lines_before and len(lines_after) == len(lines_before) + 1
    assert json.loads(lines_after[-1])["ref"] == FIRST and "rerun" not in json.loads(lines_after[-1])
    data = assert_finished(out)
    for record in data["_checkpoint"]["records"][1:]:  # the other routes' records as the first run wrote them
        assert canonical(record) == canonical(rows[record["route_id"]]["record"])
    server.assert_clean()


def test_a_transient_time_out_on_the_last_route_still_leaves_the_server_clean(server, routes, town_dir, tmp_path):
    """One RPC time-out of a server that is alive (no restart command): the route crashes, and the server must still be
    left asynchronous with none of our actors (drive_route's and CarlaWorld's contract: cleaned up however the route
    ended). Nothing runs after the last route to undo it, and a synchronous server without a ticking client is frozen."""
    out = tmp_path / "last"
    server.inject("timeout", at_tick=server.ticks + INJECT_AFTER_TICKS)
    run_eval(routes, town_dir, out, "--limit", "1", expect=1)
    assert last_rows(out)[FIRST]["record"]["status"] == CRASHED
    assert not server.dead
    server.assert_clean()


# ----------------------------------------------------------------------------------------------------------------------
# 3. A server that dies without a restart command stays dead

def test_without_a_restart_command_a_dead_server_fails_every_later_route_quickly(server, routes, town_dir, tmp_path):
    out = tmp_path / "dead"
    server.inject("die", at_tick=server.ticks + INJECT_AFTER_TICKS)
    started = time.monotonic()
    run_eval(routes, town_dir, out, expect=1)
    took = time.monotonic() - started

    assert server.dead
    assert took < len(ROUTE_IDS) * (TIMEOUT_S + 1.5), f"{took:.1f} s for {len(ROUTE_IDS)} routes on a dead server"
    rows = last_rows(out)
    assert list(rows) == ROUTE_IDS
    for route_id, row in rows.items():
        assert row["record"]["status"] == CRASHED and row["rerun"] is True, (route_id, row)
    for route_id in OTHERS:
        assert rows[route_id]["record"]["scores"]["score_route"] == 0
        assert "no CARLA server answered at localhost:2000" in rows[route_id]["reason"]

    server.revive()
    run_eval(routes, town_dir, out, expect=0)
    assert_finished(out)
    server.assert_clean()


# ----------------------------------------------------------------------------------------------------------------------
# 4. The agent watchdog

def test_a_decision_slower_than_the_timeout_is_the_agents_crash_not_a_rerun(server, routes, town_dir, tmp_path):
    out = tmp_path / "slow"
    run_eval(routes, town_dir, out, agent=SLOW_AGENT, expect=1)

    rows = last_rows(out)
    assert list(rows) == ROUTE_IDS
    slow = rows[FIRST]
    assert slow["record"]["status"] == "Failed - Agent crashed"
    assert "rerun" not in slow
    assert "watchdog" in slow["reason"] and f"{TIMEOUT_S:g} s" in slow["reason"], slow["reason"]
    assert "decision 2" in slow["reason"], slow["reason"]  # its 3rd decision (numbered from 0)
    for route_id in OTHERS:
        assert rows[route_id]["record"]["status"] in FINE and "reason" not in rows[route_id]
    assert server.stats.timeouts == 0 and server.stats.deaths == 0
    server.assert_clean()


# ----------------------------------------------------------------------------------------------------------------------
# 5. Ctrl-C

def test_ctrl_c_mid_route_leaves_the_server_clean_and_the_route_undone(server, routes, town_dir, tmp_path):
    out, marker = tmp_path / "interrupted", tmp_path / "driving"
    args = eval_args(routes, town_dir, out)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen([sys.executable, "-m", "tests.carla_server.run_with_fake", "--town-dir", str(town_dir),
                                "--tick-marker", f"30:{marker}", "--tick-delay", "0.02", "--", *args],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, f"the run ended before the route was driving: {process.communicate()}"
            assert time.monotonic() < deadline, "the route never reached tick 30"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode != 0, stdout + stderr
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no outcome line:\n{stdout}\n{stderr}"
    state = json.loads(lines[-1])
    assert state["exit"] == 130 and state["raised"] is None, state  # Ctrl-C's exit code, as typer gives it
    assert state["clean"] == "", state["clean"]
    assert state["synchronous"] is False and state["tm_synchronous"] is False and state["actors"] == 0, state
    assert state["ticks"] < 100, f"SIGINT came after the first route had ended ({state['ticks']} ticks)"
    assert FIRST not in last_rows(out)  # no row for the interrupted route: it runs again

    run_eval(routes, town_dir, out, expect=0)  # in this process, on this test's server
    assert_finished(out)
    assert list(last_rows(out)) == ROUTE_IDS
    server.assert_clean()


# ----------------------------------------------------------------------------------------------------------------------
# 6. What the CLI refuses, and what it resumes

@pytest.mark.parametrize(("extra", "split", "says"), [
    (["--carla-port", "2001"], None, "--carla-port"),
    (["--carla-restart", "true"], None, "--carla-restart"),
    (["--backend", "carla", "--workers", "2"], None, "--workers 2"),
    (["--backend", "carla", "--ray-address", "local"], None, "--ray-address"),
    (["--backend", "carla"], "builtin:navtest", "--backend carla"),
    (["--backend", "carla", "--one-shot"], None, "--backend carla"),
    (["--backend", "bogus"], None, "--backend"),
    (["--backend", "carla", "--carla-fixed-delta", "0.03"], None, "0.03"),
], ids=["port-without-backend", "restart-without-backend", "workers", "ray", "one-shot-split", "one-shot-flag",
        "bogus-backend", "fixed-delta"])
def test_the_cli_refuses_options_that_do_not_apply(extra, split, says, server, routes, town_dir, tmp_path):
    out = tmp_path / "refused"
    args = ["eval", "--agent", TRACER, "--split", split or f"carla:{routes}", "--out", str(out), *extra]
    if split is None:
        args += ["--town-dir", str(town_dir)]
    result = cli(args)
    assert result.exit_code == 2, result.output
    assert says in result.output, result.output
    assert not (out / "rows.jsonl").exists() and not (out / "manifest.json").exists()
    assert server.stats.loads == 0


def test_a_bad_fixed_delta_is_reported_under_its_option_name(routes, town_dir, tmp_path):
    result = cli(eval_args(routes, town_dir, tmp_path / "out", "--carla-fixed-delta", "0.03", backend=False)
                 + ["--backend", "carla"])
    assert result.exit_code == 2
    assert "--carla-fixed-delta" in result.output and "fixed_delta_s" not in result.output, result.output


def test_an_embedded_runs_folder_is_not_resumed_by_a_carla_run_nor_the_other_way(server, routes, town_dir, tmp_path):
    embedded, on_carla = tmp_path / "embedded", tmp_path / "carla"
    assert cli(eval_args(routes, town_dir, embedded, "--limit", "1", "--workers", "1", backend=False)).exit_code == 0
    refused = cli(eval_args(routes, town_dir, embedded))
    assert refused.exit_code == 2 and "backend" in refused.output, refused.output
    assert server.stats.loads == 0

    run_eval(routes, town_dir, on_carla, "--limit", "1", expect=0)
    refused = cli(eval_args(routes, town_dir, on_carla, "--workers", "1", backend=False))
    assert refused.exit_code == 2 and "backend" in refused.output, refused.output
    assert len(row_lines(on_carla)) == 1


def test_a_carla_runs_folder_resumed_against_another_port_continues(server, routes, town_dir, tmp_path):
    out = tmp_path / "moved"
    run_eval(routes, town_dir, out, "--limit", "1", expect=0)
    first = row_lines(out)
    assert server.stats.loads == 1
    with FakeCarlaServer(town_dir, port=2001).start() as other:
        run_eval(routes, town_dir, out, "--carla-port", "2001", expect=0)
        assert other.stats.loads == 2  # the two routes left, on the other server
        other.assert_clean()
    assert server.stats.loads == 1
    assert row_lines(out)[:1] == first
    assert_finished(out)


# ----------------------------------------------------------------------------------------------------------------------
# 7. The results file, read back by the Leaderboard's rules

def test_the_results_file_of_a_carla_run_is_read_back_and_resumable(server, routes, town_dir, tmp_path):
    out = tmp_path / "read"
    run_eval(routes, town_dir, out, expect=0)
    data = read_results(out / "results.json")
    assert data["entry_status"] == "Finished"
    assert data["sensors"] == ["sensor.speedometer", "sensor.opendrive_map"]
    assert resume_check(data, ROUTE_IDS) == (len(ROUTE_IDS), "")
    done, why = resume_check(data, list(reversed(ROUTE_IDS)))
    assert done == 0 and why  # another plan does not fit


def test_a_run_with_no_server_answering_cannot_start_and_writes_nothing(monkeypatch, routes, town_dir, tmp_path):
    """No server at the address: exit 2 within the timeout, naming the address, before the output folder exists (not
    every route recorded as crashed after a timeout each)."""
    from tests.fakes.carla_server import install

    install(monkeypatch)  # the fake's client, with no fake server started on the port
    out = tmp_path / "nobody"
    started = time.monotonic()
    result = cli(eval_args(routes, town_dir, out, "--carla-port", "2999"))
    took = time.monotonic() - started
    assert result.exit_code == 2, result.output
    assert "no CARLA server answered at localhost:2999 within 2 s" in " ".join(result.output.split())
    assert TIMEOUT_S * 0.8 <= took < TIMEOUT_S + 3.0
    assert not out.exists()
