"""Env factories over a saved training dataset, for the trainer's JSON config.

`{"factory": "pipeline.training.env_factories:intraday_env", "kwargs": {"dataset_dir": ..., "part": "train"}}`
builds the env from the files `save_dataset` wrote, so the trainer process needs only the dataset folder. Only the
parts that train and choose can be built (`CHOOSING_PARTS`): the gate's days are not theirs to read. The selection
part is always walked in evaluation mode (every (day, symbol) once, in time order): its metrics, which choose the
checkpoint, are then a fixed sum over the selection days, not a random sample of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.envs.intraday import IntradayConfig, IntradayTradingEnv
from pipeline.envs.portfolio import PortfolioAllocationEnv, PortfolioConfig
from pipeline.training.dataset import CHOOSING_PARTS, load_dataset


def _evaluation(part: str, config: dict[str, Any]) -> bool:
    if part not in CHOOSING_PARTS:
        raise ValueError(f"part must be one of {CHOOSING_PARTS} (the gate's days are read by the promotion gate "
                         f"alone); got {part!r}")
    if "evaluation" in config:
        raise ValueError("evaluation follows the part (selection walks every episode once); drop the evaluation kwarg")
    return part == "selection"


def intraday_env(dataset_dir: str | Path, part: str = "train", num_envs: int = 64,
                 device: torch.device | str = "cpu", **config: Any) -> IntradayTradingEnv:
    """IntradayTradingEnv on one part of a saved dataset; `config` are IntradayConfig fields."""
    evaluation = _evaluation(part, config)
    market = load_dataset(dataset_dir, device, parts=(part,)).part(part)
    return IntradayTradingEnv(market, num_envs=num_envs, config=IntradayConfig(**config, evaluation=evaluation),
                              device=device)


def portfolio_env(dataset_dir: str | Path, part: str = "train", num_envs: int = 64,
                  device: torch.device | str = "cpu", **config: Any) -> PortfolioAllocationEnv:
    """PortfolioAllocationEnv on one part of a saved dataset; `config` are PortfolioConfig fields."""
    evaluation = _evaluation(part, config)
    market = load_dataset(dataset_dir, device, parts=(part,)).part(part)
    return PortfolioAllocationEnv(market, num_envs=num_envs,
                                  config=PortfolioConfig(**config, evaluation=evaluation), device=device)
