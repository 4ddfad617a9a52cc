"""Helpers to read a scene file's entries and write a changed copy (for the scene-file validation and fuzz tests)."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np


def read_entries(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a scene file, as stored."""
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    header = arrays.pop("header")
    return json.loads(str(header) if header.dtype.kind == "U" else header.tobytes()), arrays


def write_entries(path: Path, header, arrays: dict[str, np.ndarray], raw_header: bytes | None = None) -> Path:
    """A scene file of these entries: the header as a JSON string, or `raw_header` as bytes (version 1's storage)."""
    stored = np.frombuffer(raw_header, dtype=np.uint8) if raw_header is not None else np.array(json.dumps(header))
    entries = {"header": stored, **arrays}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in entries.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


def with_changes(source: Path, target: Path, header_changes: dict | None = None, **arrays) -> Path:
    """A copy of `source` with header keys replaced (nested dicts merged one level) and arrays replaced or, given
    None, removed."""
    header, entries = read_entries(source)
    for key, value in (header_changes or {}).items():
        if isinstance(value, dict) and isinstance(header.get(key), dict):
            header[key] = {**header[key], **value}
        else:
            header[key] = value
    for name, value in arrays.items():
        if value is None:
            entries.pop(name, None)
        else:
            entries[name] = value
    return write_entries(target, header, entries)


def with_column_set(source: Path, target: Path, field: str, column: int, value) -> Path:
    """A copy of `source` whose array `field` holds `value` in column `column` at every step (an ego state field of
    ego_log, an agent of an agents_* array)."""
    changed = read_entries(source)[1][field].copy()
    changed[:, column] = value
    return with_changes(source, target, **{field: changed})
