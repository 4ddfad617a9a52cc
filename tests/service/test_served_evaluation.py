"""`--agent egodriver:ADDRESS` evaluates a served policy: against `w0sim serve --agent pdm_closed` it scores as the agent
does in process (50 navtest scenes, 5 builtin routes, to 1e-9), carla-driver-interface's own route_follower server
drives to the end, and a server killed mid-run gives failed rows that the next run drives again."""
from __future__ import annotations

import json
import math
import subprocess
import time

from agents.base import AgentOptions
from agents.registry import AgentSpec
from tests.service.conftest import BIN, free_port, package_server, w0sim_server
from w0sim.closed_loop import evaluate_routes
from w0sim.one_shot import evaluate_split

NAVTEST, ROUTES = 50, 5
SERVED_OPTIONS = AgentOptions(service_timeout_s=10.0, service_retries=1)


def _scores(rows: list[dict]) -> dict[str, dict]:
    return {row["token"]: {k: v for k, v in row.items() if k not in ("ref", "index", "latency")} for row in rows}


def _records(results: dict) -> list[dict]:
    """The route records but for their wall-clock duration."""
    return [{**r, "meta": {k: v for k, v in r["meta"].items() if k != "duration_system"}}
            for r in results["_checkpoint"]["records"]]


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9
    return a == b


def test_a_served_pdm_closed_scores_as_in_process_on_50_navtest_scenes_and_5_routes(servers, tmp_path):
    server = servers(w0sim_server, "pdm_closed")
    served = AgentSpec(f"egodriver:{server.address}", SERVED_OPTIONS)
    in_process, over_wire = (evaluate_split("builtin:navtest", spec, tmp_path / name, limit=NAVTEST, workers=1)
                             for name, spec in (("local", AgentSpec("pdm_closed")), ("served", served)))
    local, remote = _scores(in_process), _scores(over_wire)
    assert len(local) == NAVTEST and all(row["valid"] for row in local.values())
    assert list(local) == list(remote) and all(_close(local[t], remote[t]) for t in local), [
        (t, local[t], remote[t]) for t in local if not _close(local[t], remote[t])]
    assert all(row["latency"]["inference_s_mean"] > 0 for row in over_wire)  # the server's own time, reported
    routes = [evaluate_routes("builtin:routes", spec, tmp_path / f"routes-{name}", limit=ROUTES, workers=1)
              for name, spec in (("local", AgentSpec("pdm_closed")), ("served", served))]
    assert len(_records(routes[0])) == ROUTES and _close(_records(routes[0]), _records(routes[1]))


def test_the_packages_route_follower_server_is_driven_to_the_end(servers, tmp_path):
    """A server that is not w0sim's gets the contract's inputs only (the front camera, egomotion, the route)."""
    server = servers(package_server, "route_follower", free_port())
    spec = AgentSpec(f"egodriver:{server.address}", SERVED_OPTIONS)
    rows = evaluate_split("builtin:navtest", spec, tmp_path / "navtest", limit=NAVTEST, workers=1)
    assert len(rows) == NAVTEST and all(row["valid"] for row in rows), [r["reason"] for r in rows if not r["valid"]]
    results = evaluate_routes("builtin:routes", spec, tmp_path / "routes", limit=ROUTES, workers=1)
    records = results["_checkpoint"]["records"]
    assert results["_checkpoint"]["progress"] == [ROUTES, ROUTES] and len(records) == ROUTES
    assert all(r["status"] not in ("Failed - Agent crashed", "Failed - Simulation crashed") for r in records), records
    assert sum(r["scores"]["score_route"] for r in records) > 0  # it drove along the routes


def _eval(address: str, out, limit: int) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "w0sim"), "eval", "--agent", f"egodriver:{address}", "--split", "builtin:routes",
                             "--limit", str(limit), "--out", str(out), "--workers", "1", "--service-timeout", "5",
                             "--service-retries", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_server_killed_mid_run_gives_failed_rows_and_a_non_zero_exit_and_the_rerun_drives_them(servers, tmp_path):
    port, out, limit = free_port(), tmp_path / "out", 3
    server = servers(w0sim_server, "pdm_closed", "localhost", port)
    run = _eval(server.address, out, limit)
    rows = out / "rows.jsonl"
    deadline = time.monotonic() + 300
    while not (rows.exists() and rows.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 1, output
    killed = [json.loads(line) for line in rows.read_text().splitlines()][1:]
    assert len(killed) == limit - 1 and all(row["rerun"] for row in killed)
    for row in killed:
        assert row["record"]["status"] == "Failed - Agent crashed"
        assert f"policy service {server.address}: " in row["reason"] and "UNAVAILABLE" in row["reason"], row["reason"]
    assert f"{limit - 1} of {limit} routes failed" in output

    servers(w0sim_server, "pdm_closed", "localhost", port)  # the server back, at the same address
    rerun = _eval(server.address, out, limit)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output
    expected = evaluate_routes("builtin:routes", AgentSpec("pdm_closed"), tmp_path / "local", limit=limit, workers=1)
    assert _close(_records(json.loads((out / "results.json").read_text())), _records(expected))


def test_an_eval_against_no_server_cannot_start_and_says_where_it_looked(tmp_path):
    port = free_port()
    run = subprocess.run([str(BIN / "w0sim"), "eval", "--agent", f"egodriver:localhost:{port}", "--split",
                          "builtin:navtest", "--limit", "1", "--out", str(tmp_path / "out"), "--service-timeout", "2",
                          "--service-retries", "0"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"error: policy service localhost:{port}: get_version failed: UNAVAILABLE" in " ".join(run.stdout.split())
