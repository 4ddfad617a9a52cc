"""The Leaderboard 2.x results JSON: assembly, validation, atomic writing, reading and the resume rule."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metrics.leaderboard.events import STATUS_STARTED
from metrics.leaderboard.global_record import (
    ELIGIBLE_VALUES,
    ENTRY_STATUS_VALUES,
    build_global_record,
    entry_status_for,
    values_and_labels,
)

TOP_LEVEL_KEYS: tuple[str, ...] = ("_checkpoint", "entry_status", "eligible", "sensors", "values", "labels")
CHECKPOINT_KEYS: tuple[str, ...] = ("global_record", "progress", "records")


class ResultsFileError(ValueError):
    """A results file that is not valid JSON or lacks the Leaderboard layout."""


def _entry(entry_status: str) -> dict[str, Any]:
    if entry_status not in ENTRY_STATUS_VALUES:
        raise ValueError(f"invalid entry_status {entry_status!r}; one of {ENTRY_STATUS_VALUES}")
    return {"entry_status": entry_status, "eligible": ELIGIBLE_VALUES[entry_status]}


def empty_results() -> dict[str, Any]:
    """What a fresh run holds before any route: Started, not eligible, nothing computed."""
    return {"_checkpoint": {"global_record": {}, "progress": [], "records": []}, **_entry("Started"),
            "sensors": [], "values": [], "labels": []}


def validation_error(results: Mapping[str, Any], *, sensors_initialized: bool = True, crashed: bool = False) -> str:
    """``validate_and_write_statistics``'s check: the reason the file is badly formed, or "" when it is fine."""
    checkpoint = results["_checkpoint"]
    progress, records = checkpoint["progress"], checkpoint["records"]
    if sensors_initialized and not results["sensors"]:
        return "Missing 'sensors' data"
    if not results["values"]:
        return "Missing 'values' data"
    if results["entry_status"] == "Started":
        return "'entry_status' has the 'Started' value"
    if not checkpoint["global_record"]:
        return "Missing 'global_records' data"
    if not progress:
        return "Missing 'progress' data"
    if not crashed and (progress[0] != progress[1] or progress[0] != len(records)):
        return "'progress' data doesn't match its expected value"
    if any(record["status"] == STATUS_STARTED for record in records):
        return "Found a route record with missing data"
    return ""


def build_results(records: Sequence[Mapping[str, Any]], total_routes: int, *, sensors: Sequence[str] = (),
                  progress: Sequence[int] | None = None, validate: bool = True,
                  sensors_initialized: bool = True) -> dict[str, Any]:
    """The whole results file after a run: records, global record, values/labels, entry status.

    progress defaults to [number of records, total_routes]. Records with index -1 (a route still in
    progress) are left out, as the Leaderboard does. With ``validate`` the entry status becomes
    Invalid when the file is badly formed (``validation_error``), crashed runs excepted from the
    progress check.
    """
    done = [dict(r) for r in records if r["index"] != -1]
    global_record = build_global_record(done, total_routes)
    values, labels = values_and_labels(global_record)
    entry_status = entry_status_for(done)
    results = {
        "_checkpoint": {"global_record": global_record,
                        "progress": list(progress) if progress is not None else [len(done), total_routes],
                        "records": done},
        **_entry(entry_status), "sensors": list(sensors), "values": values, "labels": labels,
    }
    if validate and validation_error(results, sensors_initialized=sensors_initialized,
                                     crashed=entry_status == "Crashed"):
        results.update(_entry("Invalid"))
    return results


def upsert_record(results: dict[str, Any], record: Mapping[str, Any]) -> None:
    """Put a route record at its index: overwrite (a re-run route, when resuming) or append the next one."""
    records = results["_checkpoint"]["records"]
    index = record["index"]
    if index < len(records):
        records[index] = dict(record)
    elif index == len(records):
        records.append(dict(record))
    else:
        raise ValueError(f"record index {index} leaves a gap: only {len(records)} records so far")


def write_results(path: str | os.PathLike[str], results: Mapping[str, Any]) -> Path:
    """Write the results JSON (indent 4, as the LB) atomically: a temporary file in the same folder, then rename.

    A crash mid-write leaves the previous file intact, which is what ``--resume`` relies on.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=4)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results JSON and check its top-level layout; raises ResultsFileError naming what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ResultsFileError(f"{path}: top level is {type(data).__name__}, expected an object")
    missing = [k for k in TOP_LEVEL_KEYS if k not in data]
    missing += [f"_checkpoint.{k}" for k in CHECKPOINT_KEYS if k not in data.get("_checkpoint", {})]
    if missing:
        raise ResultsFileError(f"{path}: missing keys {missing}")
    return data


def resume_check(results: Mapping[str, Any], route_ids: Sequence[str]) -> tuple[int, str]:
    """The Leaderboard's resume rule (``RouteIndexer.validate_and_resume``): (where a resumed run continues, "") when
    the file fits the planned route ids (``RouteScenario_<id>_rep<r>`` in run order), else (0, why not).

    It fits when entry_status is there and not Invalid, progress[1] equals the planned count and the first
    progress[0] record ids are the planned ones; it continues at progress[0], one less after a crash (the crashed
    route runs again). Records fewer than progress[0] (a file cut short) continue one before the last record.
    """
    entry_status = results.get("entry_status")
    checkpoint = results.get("_checkpoint") or {}
    if not entry_status:
        return 0, "it has no entry_status"
    if entry_status == "Invalid":
        return 0, "its entry_status is Invalid"
    if "progress" not in checkpoint:
        return 0, "it has no _checkpoint.progress"
    progress = checkpoint["progress"]
    if len(progress) != 2:
        return 0, f"its progress is {progress}, not [done, total]"
    if progress[1] != len(route_ids):
        return 0, f"it plans {progress[1]} routes, this run {len(route_ids)}"
    records = checkpoint.get("records") or []
    done = progress[0]
    for index in range(done):
        if index >= len(route_ids) or index >= len(records):  # the Leaderboard's patch for a file cut short
            done = max(index - 1, 0)
            break
        if records[index].get("route_id") != route_ids[index]:
            return 0, f"record {index} is {records[index].get('route_id')!r} where this run has {route_ids[index]!r}"
    return (max(done - 1, 0) if entry_status == "Crashed" else done), ""


def resume_index(results: Mapping[str, Any], route_ids: Sequence[str]) -> int:
    """Where ``--resume`` continues (``resume_check``): progress[0] (minus one after a crash), or 0 when the
    checkpoint does not fit."""
    return resume_check(results, route_ids)[0]
