"""Leaderboard results without their wall-clock fields, for tests that compare the results of two runs."""
from __future__ import annotations

import copy


def records_without_wall_clock(records: list[dict]) -> list[dict]:
    """Route records without `meta.duration_system` (the wall-clock seconds of the route, which differ from run to
    run); every other field, `duration_game` (simulated seconds) included, stays."""
    records = copy.deepcopy(records)
    for record in records:
        record["meta"].pop("duration_system")
    return records


def without_wall_clock(results: dict) -> dict:
    """A results file's content without `duration_system`, in its records and in the global record's sum."""
    results = copy.deepcopy(results)
    checkpoint = results["_checkpoint"]
    checkpoint["records"] = records_without_wall_clock(checkpoint["records"])
    if checkpoint.get("global_record"):
        checkpoint["global_record"]["meta"].pop("duration_system")
    return results
