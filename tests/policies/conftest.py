"""Policy tests: one torch thread, so the tiny models do not oversubscribe the shared 2-core machine (or pytest-xdist workers)."""
from __future__ import annotations

import torch

torch.set_num_threads(1)
