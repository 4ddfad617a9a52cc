"""Helpers for tests that compare whole records: NaN made comparable with ==."""
from __future__ import annotations

import math

NAN = "NaN"  # NaN stands for itself in compared records (NaN != NaN)


def comparable(value):
    """`value` with every float NaN replaced by NAN, so that records compare with ==."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return NAN if isinstance(value, float) and math.isnan(value) else value
