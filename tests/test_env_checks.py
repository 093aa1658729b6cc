"""The no-host-sync check of tests/env_checks.py is not vacuous: a fake env whose step does any one operation that
would sync a GPU with the host fails it, even when the env swallows the exception; sync-free indexing passes."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from env_checks import assert_step_never_syncs

N = 4


def _set_masked(x: torch.Tensor) -> None:
    y = x.clone()
    y[x > 0] = 0.0


def _branch(x: torch.Tensor) -> None:
    if (x > 0).any():
        pass


# (operation on the actions [N] float32, the check's name for what it caught)
SYNCS: dict[str, tuple[Callable[[torch.Tensor], Any], str]] = {
    "item": (lambda x: x[0].item(), "Tensor.item"),
    "bool": (lambda x: bool(x.sum() > 0), "Tensor.__bool__"),
    "if on a tensor": (_branch, "Tensor.__bool__"),
    "float": (lambda x: float(x.sum()), "Tensor.__float__"),
    "int": (lambda x: int(x.sum()), "Tensor.__int__"),
    "complex": (lambda x: complex(x.sum()), "Tensor.__complex__"),
    "index a list": (lambda x: list(range(N))[x.argmax()], "Tensor.__index__"),
    "format": (lambda x: f"{x.sum():.2f}", "Tensor.item"),
    "in": (lambda x: 0.5 in x, "Tensor.item"),
    "tolist": (lambda x: x.tolist(), "Tensor.tolist"),
    "numpy": (lambda x: x.numpy(), "Tensor.numpy"),
    "np.asarray": (lambda x: np.asarray(x), "Tensor.numpy"),
    "cpu": (lambda x: x.cpu(), "Tensor.cpu"),
    "torch.equal": (lambda x: torch.equal(x, x), "torch.equal"),
    "Tensor.equal": (lambda x: x.equal(x), "Tensor.equal"),
    "torch.allclose": (lambda x: torch.allclose(x, x), "torch.allclose"),
    "Tensor.allclose": (lambda x: x.allclose(x), "Tensor.allclose"),
    "torch.is_nonzero": (lambda x: torch.is_nonzero(x[:1]), "torch.is_nonzero"),
    "Tensor.is_nonzero": (lambda x: x[:1].is_nonzero(), "Tensor.is_nonzero"),
    "torch.nonzero": (lambda x: torch.nonzero(x > 0), "torch.nonzero"),
    "Tensor.nonzero": (lambda x: (x > 0).nonzero(), "Tensor.nonzero"),
    "torch.where(condition)": (lambda x: torch.where(x > 0), "torch.where(condition)"),
    "torch.argwhere": (lambda x: torch.argwhere(x > 0), "torch.argwhere"),
    "Tensor.argwhere": (lambda x: (x > 0).argwhere(), "Tensor.argwhere"),
    "torch.unique": (lambda x: torch.unique(x), "torch.unique"),
    "Tensor.unique": (lambda x: x.unique(), "Tensor.unique"),
    "torch.unique_consecutive": (lambda x: torch.unique_consecutive(x), "torch.unique_consecutive"),
    "Tensor.unique_consecutive": (lambda x: x.unique_consecutive(), "Tensor.unique_consecutive"),
    "torch.masked_select": (lambda x: torch.masked_select(x, x > 0), "torch.masked_select"),
    "Tensor.masked_select": (lambda x: x.masked_select(x > 0), "Tensor.masked_select"),
    "torch.bincount": (lambda x: torch.bincount(x.abs().long()), "torch.bincount"),
    "Tensor.bincount": (lambda x: x.abs().long().bincount(minlength=N), "Tensor.bincount"),
    "torch.repeat_interleave": (lambda x: torch.repeat_interleave(x, x.abs().long()), "torch.repeat_interleave"),
    "torch.repeat_interleave(repeats)": (lambda x: torch.repeat_interleave(x.abs().long()),
                                         "torch.repeat_interleave"),
    "Tensor.repeat_interleave": (lambda x: x.repeat_interleave(x.abs().long()), "Tensor.repeat_interleave"),
    "mask index": (lambda x: x[x > 0], "Tensor.__getitem__ with a boolean mask"),
    "mask in a tuple index": (lambda x: x[(x > 0,)], "Tensor.__getitem__ with a boolean mask"),
    "0-d mask index": (lambda x: x[(x > 0).any()], "Tensor.__getitem__ with a boolean mask"),
    "mask assignment": (_set_masked, "Tensor.__setitem__ with a boolean mask"),
    "index_put_ with a mask": (lambda x: x.clone().index_put_((x > 0,), torch.tensor(0.0)),
                               "Tensor.index_put_ with a boolean mask"),
    "index_put with a mask": (lambda x: x.index_put((x > 0,), torch.tensor(0.0)),
                              "Tensor.index_put with a boolean mask"),
}


def _sync_free(x: torch.Tensor) -> None:
    """Fixed-shape counterparts of the operations above: none reads a value on the host."""
    index = x.abs().long().clamp(max=N - 1)
    x.masked_fill(x > 0, 0.0)
    torch.where(x > 0, x, 0.0)
    y = x.clone()
    y[index] = 1.0
    y[:2] = x[index][:2]
    y.index_put_((index,), torch.tensor(0.0), accumulate=True)
    x.repeat_interleave(2)
    torch.repeat_interleave(x, torch.full((N,), 2), output_size=2 * N)
    assert len(x) == N and x[None].shape == (1, N)


class OneOpEnv:
    """A stateless env whose step runs `op` on its actions (inside a try/except that swallows every error when
    `swallow`), then returns zeros."""

    num_envs, device, obs_shape, action_dim, discrete = N, torch.device("cpu"), (1,), 1, False

    def __init__(self, op: Callable[[torch.Tensor], Any], swallow: bool) -> None:
        self.op, self.swallow = op, swallow

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.zeros(N, 1), {}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with contextlib.suppress(Exception) if self.swallow else contextlib.nullcontext():
            self.op(actions.reshape(N))
        done = torch.zeros(N, dtype=torch.bool)
        return torch.zeros(N, 1), torch.zeros(N), done, done, {}


def _actions(gen: torch.Generator) -> torch.Tensor:
    return torch.randn(N, 1, generator=gen)


@pytest.mark.parametrize("swallow", [False, True], ids=["raised", "swallowed"])
@pytest.mark.parametrize("name", list(SYNCS))
def test_check_catches_each_host_read(name: str, swallow: bool) -> None:
    op, caught_as = SYNCS[name]
    with pytest.raises(AssertionError, match=re.escape(caught_as)):
        assert_step_never_syncs(OneOpEnv(op, swallow), _actions, steps=2)


def test_check_passes_sync_free_indexing() -> None:
    assert_step_never_syncs(OneOpEnv(_sync_free, swallow=False), _actions, steps=2)


def test_check_restores_torch_afterwards() -> None:
    """Outside the checked steps every blocked operation works again."""
    with pytest.raises(AssertionError):
        assert_step_never_syncs(OneOpEnv(lambda x: x.tolist(), swallow=False), _actions, steps=1)
    x = torch.tensor([1.0, -1.0])
    assert x.tolist() == [1.0, -1.0] and float(x[0]) == 1.0 and x[x > 0].tolist() == [1.0]
    assert torch.nonzero(x > 0).tolist() == [[0]] and torch.where(x > 0)[0].tolist() == [0]
