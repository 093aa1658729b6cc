"""Seeding in one place: every source of randomness the agents use (torch, numpy, random)."""

from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed: int, deterministic_torch: bool = False) -> None:
    """Seed python `random`, numpy's global RNG and torch (CPU and every CUDA device).

    `deterministic_torch=True` also asks torch for deterministic kernels (slower on GPU; CPU runs are
    deterministic already with a fixed thread count).
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic_torch:
        torch.use_deterministic_algorithms(True, warn_only=True)
