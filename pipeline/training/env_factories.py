"""Envs over a saved training dataset: what a `TrainingRun` on a dataset trains and chooses on.

`intraday_env(dataset_dir, "train", ...)` builds the env from the files `save_dataset` wrote (`options_env`
from those of `build_options_dataset`), so the trainer
process needs only the dataset folder. Only the
parts that train and choose can be built (`CHOOSING_PARTS`): the gate's days are not theirs to read. The selection
part is always walked in evaluation mode (every (day, symbol) once, in time order): its metrics, which choose the
checkpoint, are then a fixed sum over the selection days, not a random sample of them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import torch

from pipeline.envs.intraday import IntradayConfig, IntradayTradingEnv
from pipeline.envs.options import OptionsTradingConfig, OptionsTradingEnv
from pipeline.envs.portfolio import PortfolioAllocationEnv, PortfolioConfig
from pipeline.training.dataset import CHOOSING_PARTS, load_dataset
from pipeline.training.options_dataset import load_options_part

NUM_ENVS = 64
"""Parallel training episodes of a run, per process: the one owner of this number (the training asset's config,
`TrainingRun` and the benchmarks take it from here)."""
SELECTION_ENVS = 16
"""Parallel envs of a selection walk (it visits every (day, symbol) once whatever the count)."""

EnvT = TypeVar("EnvT", IntradayTradingEnv, PortfolioAllocationEnv)


def _evaluation(part: str, config: dict[str, Any]) -> bool:
    if part not in CHOOSING_PARTS:
        raise ValueError(f"part must be one of {CHOOSING_PARTS} (the gate's days are read by the promotion gate "
                         f"alone); got {part!r}")
    if "evaluation" in config:
        raise ValueError("evaluation follows the part (selection walks every episode once); drop the evaluation kwarg")
    return part == "selection"


def intraday_env(dataset_dir: str | Path, part: str = "train", num_envs: int = NUM_ENVS,
                 device: torch.device | str = "cpu", settings: IntradayConfig | None = None,
                 **config: Any) -> IntradayTradingEnv:
    """IntradayTradingEnv on one part of a saved dataset, with `settings` (default: IntradayConfig's) and
    `config` (IntradayConfig fields) over them."""
    return _dataset_env(IntradayTradingEnv, settings or IntradayConfig(), dataset_dir, part, num_envs, device, config)


def portfolio_env(dataset_dir: str | Path, part: str = "train", num_envs: int = NUM_ENVS,
                  device: torch.device | str = "cpu", settings: PortfolioConfig | None = None,
                  **config: Any) -> PortfolioAllocationEnv:
    """PortfolioAllocationEnv on one part of a saved dataset, with `settings` (default: PortfolioConfig's) and
    `config` (PortfolioConfig fields) over them."""
    return _dataset_env(PortfolioAllocationEnv, settings or PortfolioConfig(), dataset_dir, part, num_envs, device,
                        config)


def _dataset_env(env_type: type[EnvT], settings: Any, dataset_dir: str | Path, part: str, num_envs: int,
                 device: torch.device | str, config: dict[str, Any]) -> EnvT:
    evaluation = _evaluation(part, config)
    market = load_dataset(dataset_dir, device, parts=(part,)).part(part)
    return env_type(market, num_envs=num_envs, config=dataclasses.replace(settings, **config, evaluation=evaluation),
                    device=device)


def options_env(dataset_dir: str | Path, part: str = "train", num_envs: int = NUM_ENVS,
                device: torch.device | str = "cpu", settings: OptionsTradingConfig | None = None) -> OptionsTradingEnv:
    """OptionsTradingEnv on one part of a saved options dataset (`options_dataset.build_options_dataset`)."""
    evaluation = _evaluation(part, {})
    chain = load_options_part(dataset_dir, part, device)
    config = dataclasses.replace(settings or OptionsTradingConfig(), evaluation=evaluation)
    return OptionsTradingEnv(chain, num_envs=num_envs, config=config, device=device)
