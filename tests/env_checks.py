"""Checks shared by the batched-env tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from pipeline.envs.base import BatchedEnv


def assert_step_never_syncs(
    monkeypatch: pytest.MonkeyPatch, env: BatchedEnv, sample_actions: Callable[[], torch.Tensor], steps: int
) -> None:
    """`steps` calls of `env.step` read no tensor value on the host (.item()/bool()), so none would sync on a GPU."""
    env.reset(seed=0)

    def forbidden(*_args: object) -> None:
        raise AssertionError("step must not read tensor values on the host (.item()/bool())")

    with monkeypatch.context() as patched:
        patched.setattr(torch.Tensor, "item", forbidden)
        patched.setattr(torch.Tensor, "__bool__", forbidden)
        for _ in range(steps):
            obs, reward, *_ = env.step(sample_actions())
    assert obs.device.type == "cpu" and reward.dtype == torch.float32
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
