"""Checks shared by the batched-env tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from pipeline.envs.base import BatchedEnv
from pipeline.envs.rolling_window import RollingWindow

# torch functions (and the Tensor methods of the same name) that make the host wait for the GPU: they hand a
# value to Python (equal, allclose, is_nonzero) or return a tensor whose size depends on the values.
SYNCING_FUNCTIONS = (
    "equal", "allclose", "is_nonzero", "nonzero", "argwhere", "unique", "unique_consecutive", "masked_select",
    "bincount",
)
# Tensor methods that copy values to the host, or hand one to Python (bool(t), float(t), int(t), list[t], ...).
SYNCING_METHODS = SYNCING_FUNCTIONS + (
    "item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "__complex__",
)


def _has_mask(index: Any) -> bool:
    """Whether an index holds a boolean (or uint8) tensor: indexing with it runs nonzero, a dynamic size."""
    parts = index if isinstance(index, tuple | list) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype in (torch.bool, torch.uint8) for p in parts)


@contextmanager
def host_reads_forbidden() -> Iterator[list[str]]:
    """Inside the block, every operation that would sync a GPU with the host raises; the list it yields records
    each one as well, so that code which swallows the exception is still caught (check the list afterwards)."""
    seen: list[str] = []

    def forbid(name: str) -> Callable[..., Any]:
        def forbidden(*_args: object, **_kwargs: object) -> Any:
            seen.append(name)
            raise AssertionError(f"{name} reads tensor values on the host: on a GPU it would sync every step")
        return forbidden

    def guarded(name: str, original: Callable[..., Any], syncs: Callable[..., bool]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if syncs(*args, **kwargs):
                forbid(name)()
            return original(*args, **kwargs)
        return call

    def masked(_tensor: torch.Tensor, index: Any, *_rest: Any, **_kwargs: Any) -> bool:
        return _has_mask(index)

    def repeats_from_a_tensor(*args: Any, **kwargs: Any) -> bool:
        # Tensor repeats without output_size: the output length is their sum, read on the host.
        repeats = kwargs.get("repeats", args[1] if len(args) > 1 else args[0] if args else None)
        return isinstance(repeats, torch.Tensor) and kwargs.get("output_size") is None

    with pytest.MonkeyPatch.context() as patched:
        for name in SYNCING_METHODS:
            patched.setattr(torch.Tensor, name, forbid(f"Tensor.{name}"))
        for name in SYNCING_FUNCTIONS:
            patched.setattr(torch, name, forbid(f"torch.{name}"))
        for name in ("__getitem__", "__setitem__", "index_put", "index_put_"):
            patched.setattr(torch.Tensor, name,
                            guarded(f"Tensor.{name} with a boolean mask", getattr(torch.Tensor, name), masked))
        patched.setattr(torch.Tensor, "repeat_interleave", guarded(
            "Tensor.repeat_interleave without output_size", torch.Tensor.repeat_interleave, repeats_from_a_tensor))
        patched.setattr(torch, "repeat_interleave", guarded(
            "torch.repeat_interleave without output_size", torch.repeat_interleave, repeats_from_a_tensor))
        patched.setattr(torch, "where", guarded(
            "torch.where(condition) (nonzero)", torch.where, lambda *a, **k: len(a) + len(k) == 1))
        yield seen


def assert_step_never_syncs(
    env: BatchedEnv, sample_actions: Callable[[torch.Generator], torch.Tensor], steps: int
) -> None:
    """`steps` calls of `env.step` (on seeded actions) do nothing that would sync with the host on a GPU."""
    generator = torch.Generator().manual_seed(0)
    actions = [sample_actions(generator) for _ in range(steps)]
    with pytest.MonkeyPatch.context() as patched:
        # On the CPU a window restarts exactly the finished envs (nonzero: free there); accelerators address
        # every env instead. Run the accelerator path, the one that must not sync.
        for part in vars(env).values():
            if isinstance(part, RollingWindow):
                patched.setattr(part, "padded", True)
        env.reset(seed=0)
        with host_reads_forbidden() as seen:
            for action in actions:
                obs, reward, *_ = env.step(action)
    assert not seen, f"step read tensor values on the host: {sorted(set(seen))}"
    assert obs.device.type == "cpu" and reward.dtype == torch.float32
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
