"""Seeding in one place: every source of randomness the agents use (torch, numpy, random)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def global_rng_preserved() -> Iterator[None]:
    """Run a block that seeds or restores the global RNGs (python, numpy, torch) and give the caller's states back
    afterwards: loading a model to run it must not change what the rest of the process draws."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])
