"""The Leaderboard's own results-file code on w0sim's files: run by the reference venv's python, never imported by
w0sim.

Standalone: it needs the Leaderboard 2.x sources (carla-simulator/leaderboard) and scenario_runner's
`srunner.scenariomanager.traffic_events` on the path, as `scripts/carla_reference_env.sh` puts them; run it from a
folder outside w0sim's checkout (w0sim has its own top-level `agents` package). It only calls the Leaderboard's
classes as its evaluator and scripts do; each command prints one JSON object:

    python leaderboard_harness.py imports
        {"statistics": bool, "route_indexer": "" or why it cannot be imported}
    python leaderboard_harness.py sort RESULTS.json SEED
        StatisticsManager.add_file_records, the records shuffled with SEED (none for SEED -1), sort_records:
        {"records": [[route_id, index]...]} in the sorted order
    python leaderboard_harness.py resume ROUTES.xml REPETITIONS RESULTS.json
        RouteIndexer(ROUTES.xml, REPETITIONS, "").validate_and_resume(RESULTS.json): {"accepted": bool,
        "index": the route index the Leaderboard continues at, "total": the planned route count}
    python leaderboard_harness.py leaderboard-run OUT.json TOTAL DONE CRASH ROUTE_ID...
        the Leaderboard evaluator's bookkeeping for the first DONE of TOTAL planned routes (ROUTE_ID... in run
        order), each ending as a route without a scenario ends (failed, "Agent crashed"; with CRASH=1 the last one
        "Simulation crashed" and the entry Crashed, as a simulator crash leaves it), the file written after every
        route as the evaluator writes it: {"records": the written file's records}
"""
from __future__ import annotations

import contextlib
import json
import random
import sys


def imports() -> dict:
    from leaderboard.utils.checkpoint_tools import fetch_dict  # noqa: F401
    from leaderboard.utils.statistics_manager import StatisticsManager  # noqa: F401
    from srunner.scenariomanager.traffic_events import TrafficEventType  # noqa: F401

    try:
        from leaderboard.utils.route_indexer import RouteIndexer  # noqa: F401
    except ImportError as err:
        return {"statistics": True, "route_indexer": f"{type(err).__name__}: {err}"}
    return {"statistics": True, "route_indexer": ""}


def sort(results: str, seed: int) -> dict:
    from leaderboard.utils.statistics_manager import StatisticsManager

    manager = StatisticsManager(results + ".sorted.json", 0)
    manager.add_file_records(results)
    records = manager._results.checkpoint.records  # the list sort_records sorts in place
    if seed >= 0:
        random.Random(seed).shuffle(records)
    manager.sort_records()
    return {"records": [[record.route_id, record.index] for record in manager._results.checkpoint.records]}


def resume(routes: str, repetitions: int, results: str) -> dict:
    from leaderboard.utils.route_indexer import RouteIndexer

    indexer = RouteIndexer(routes, repetitions, "")
    accepted = indexer.validate_and_resume(results)
    return {"accepted": bool(accepted), "index": indexer.index, "total": indexer.total}


def leaderboard_run(out: str, total: int, done: int, crash: bool, route_ids: list[str]) -> dict:
    """As LeaderboardEvaluator.run and _load_and_run_scenario keep the statistics (no simulator: no scenario)."""
    from leaderboard.utils.checkpoint_tools import fetch_dict
    from leaderboard.utils.statistics_manager import StatisticsManager

    manager = StatisticsManager(out, out + ".live.txt")
    manager.clear_records()
    manager.save_progress(0, total)
    manager.write_statistics()
    for index in range(done):
        crashed = crash and index == done - 1
        manager.create_route_data(route_ids[index], index)
        manager.save_entry_status("Crashed" if crashed else "Started")
        manager.compute_route_statistics(index, 1.5, 12.0, "Simulation crashed" if crashed else "Agent crashed")
        manager.save_progress(index + 1, total)
        manager.write_statistics()
    return {"records": fetch_dict(out)["_checkpoint"]["records"]}


def main(argv: list[str]) -> dict:
    command, args = argv[0], argv[1:]
    if command == "imports":
        return imports()
    if command == "sort":
        return sort(args[0], int(args[1]))
    if command == "resume":
        return resume(args[0], int(args[1]), args[2])
    if command == "leaderboard-run":
        return leaderboard_run(args[0], int(args[1]), int(args[2]), args[3] == "1", args[4:])
    raise SystemExit(f"unknown command {command!r}; see the module docstring")


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):  # the Leaderboard prints its messages: stdout is the JSON alone
        answer = main(sys.argv[1:])
    print(json.dumps(answer))
