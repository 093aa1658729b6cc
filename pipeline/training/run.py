"""One CLSTM-PPO training run as one typed record: `TrainingRun`.

Everything that decides what a run learns is a field: the data it trains on (a saved dataset, a synthetic market,
a gymnasium id, or option chains: a saved options dataset or the synthetic market's), the intraday or the
options env's settings, every agent hyperparameter (`PPOConfig`, the preset's values
already in it), the number of envs of training and of the selection walk, and the budget. The training asset
builds it from its Dagster config (which mirrors these fields, so the launchpad shows and checks them), the
hyperparameter search builds one per trial, the trainer process loads it (`python -m pipeline.training.trainer
training_run.json`), and it is saved beside every model as `training_run.json`, where evaluation, ensembles
and export read the env settings and the dataset back. Its `config_hash` is the registry's.

JSON in and out goes through pydantic's `TypeAdapter` over these dataclasses: every value is checked against its
annotation, an unknown key anywhere is refused with its path, and `PPOConfig`'s own range checks run on load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import torch

from pipeline.agents.ppo_config import PPOConfig, preset_for_budget, scaled_to_batch
from pipeline.envs.intraday import IntradayConfig, IntradayTradingEnv
from pipeline.envs.options import OptionsTradingConfig, OptionsTradingEnv
from pipeline.envs.options_chain import chain_days, synthetic_chain_tensors
from pipeline.registry import config_hash
from pipeline.synthetic.config import SyntheticMarketConfig
from pipeline.training.env_factories import NUM_ENVS, SELECTION_ENVS, intraday_env, options_env

DEFAULT_INTRADAY = IntradayConfig(window=8, loss_cut=None, profit_lock=None)
"""Whole-day episodes (no loss-cut or profit-lock) over 8-bar windows: the intraday settings the small_budget
preset was measured to learn with (tests/trading_controls.py), and what every intraday model is trained on unless
a run says otherwise."""
RUN_FILE = "training_run.json"
"""The run's record, beside its model."""
MODEL_FILE = "model.safetensors"
"""The chosen model of a run, in its output folder."""
_FORBID = pydantic.ConfigDict(extra="forbid")
"""Unknown keys are errors. pydantic ignores them in a stdlib dataclass by default; set on the outer record, this
also reaches the nested PPOConfig and IntradayConfig (tests/test_agent_claims.py holds every level to it)."""
_PATHS = ("checkpoint_dir", "tensorboard_dir")
"""PPOConfig fields that say where a run writes, not what it learns (outside the config hash)."""


@pydantic.with_config(_FORBID)
@dataclass(frozen=True)
class DatasetData:
    """A dataset saved by `save_dataset`: training on its train part, checkpoints chosen on its selection part
    (the gate's days are never loaded)."""

    dataset_dir: str
    kind: Literal["dataset"] = "dataset"


@pydantic.with_config(_FORBID)
@dataclass(frozen=True)
class SyntheticData:
    """The embedded synthetic market's days [first_day, last_day) (`synthetic_market_tensors`): for controls,
    benchmarks and tests; no selection walk."""

    days: int = 6
    alpha: float = 0.3
    seed: int = 0
    minutes: int = 390
    first_day: int = 0
    last_day: int | None = None
    source: Literal["numpy", "market"] = "numpy"
    """The fast arrays of `pipeline.synthetic.arrays`, or the embedded SyntheticMarket (the controls' market)."""
    kind: Literal["synthetic"] = "synthetic"


@pydantic.with_config(_FORBID)
@dataclass(frozen=True)
class GymData:
    """A registered gymnasium id (CartPole-v1, ...), built as `num_envs` copies; no selection walk."""

    env_id: str
    kind: Literal["gym"] = "gym"


@pydantic.with_config(_FORBID)
@dataclass(frozen=True)
class OptionsData:
    """An options dataset saved by `build_options_dataset`: training on its train part's chains, checkpoints
    chosen on its selection part (the gate's days are never loaded)."""

    dataset_dir: str
    kind: Literal["options"] = "options"


_MARKET = SyntheticMarketConfig()


@pydantic.with_config(_FORBID)
@dataclass(frozen=True)
class SyntheticOptionsData:
    """One symbol's chain of the embedded synthetic market over the `days` sessions from `start` (all regular
    ones), days [first_day, last_day): for controls, benchmarks and tests; no selection walk."""

    days: int = 6
    start: str = "2024-07-08"
    symbol: str = "SYMA"
    seed: int = _MARKET.seed
    alpha: float = _MARKET.alpha
    iv_premium: float = _MARKET.iv_premium
    first_day: int = 0
    last_day: int | None = None
    kind: Literal["synthetic_options"] = "synthetic_options"


RunData = Annotated[DatasetData | SyntheticData | GymData | OptionsData | SyntheticOptionsData,
                    pydantic.Field(discriminator="kind")]
OPTIONS_DATA = (OptionsData, SyntheticOptionsData)


@pydantic.with_config(_FORBID)
@dataclass(frozen=True)
class TrainingRun:
    """What one training run learns from and with (see the module docstring)."""

    data: RunData
    """Where the episodes come from."""
    agent: PPOConfig
    """Every CLSTM-PPO hyperparameter, the preset's values included: exactly what the optimizer gets."""
    total_timesteps: int
    """Env steps of the run, all processes together."""
    preset: str | None = None
    """The preset `agent` started from (a record: the values themselves are in `agent`)."""
    env: IntradayConfig = DEFAULT_INTRADAY
    """The intraday env's settings (costs, window, stops, reward scale); unused for a gymnasium id and options."""
    options_env: OptionsTradingConfig | None = None
    """The options env's settings (action set, window, costs, reward scale): set exactly when the data are option
    chains."""
    num_envs: int = NUM_ENVS
    """Parallel training episodes per process."""
    selection_envs: int = SELECTION_ENVS
    """Parallel envs of the selection walk of a dataset run (0: no selection walk, the last update is kept)."""
    output_dir: str | None = None
    """Where the model, its checkpoints, its TensorBoard run and this record go (outside the config hash)."""
    resume: bool = False
    """Continue from the checkpoint_dir's latest checkpoint where there is one."""

    def __post_init__(self) -> None:
        if self.total_timesteps < 1 or self.num_envs < 1 or self.selection_envs < 0:
            raise ValueError(f"a training run needs total_timesteps >= 1, num_envs >= 1 and selection_envs >= 0; "
                             f"got {self.total_timesteps}, {self.num_envs}, {self.selection_envs}")
        if self.agent.num_envs is not None:
            raise ValueError("the run's num_envs is the one count of envs; leave agent.num_envs unset")
        if self.env.evaluation or (self.options_env is not None and self.options_env.evaluation):
            raise ValueError("the training env samples episodes; the selection walk sets evaluation itself")
        if isinstance(self.data, OPTIONS_DATA) != (self.options_env is not None):
            raise ValueError(f"options_env is set exactly when the data are option chains; got {self.data.kind} data "
                             f"with options_env={self.options_env}")

    @classmethod
    def build(cls, data: RunData, *, total_timesteps: int, seed: int = 0,
              device: str = "cpu", preset: str | None = None, agent: dict[str, Any] | None = None,
              **fields: Any) -> TrainingRun:
        """A run whose agent is `preset` (unset: the one for this budget and device, `preset_for_budget`) with
        `agent` hyperparameters on top; `fields` are the other TrainingRun fields."""
        name = preset or preset_for_budget(total_timesteps, device)
        scaled = {} if preset else scaled_to_batch(name, fields.get("num_envs", NUM_ENVS))
        config = PPOConfig.preset(name, **{**scaled, **(agent or {}), "seed": seed, "device": device})
        if isinstance(data, OPTIONS_DATA):
            fields.setdefault("options_env", OptionsTradingConfig())
        return cls(data=data, agent=config, total_timesteps=total_timesteps, preset=name, **fields)

    def replace(self, **changes: Any) -> TrainingRun:
        return dataclasses.replace(self, **changes)

    def with_output(self, folder: str | Path) -> TrainingRun:
        """The run writing its model, checkpoints and TensorBoard run under `folder`."""
        folder = Path(folder)
        agent = self.agent.replace(checkpoint_dir=str(folder / "checkpoints"),
                                   tensorboard_dir=str(folder / "tensorboard"))
        return self.replace(agent=agent, output_dir=str(folder))

    @property
    def output(self) -> Path | None:
        """The chosen model's file."""
        return Path(self.output_dir) / MODEL_FILE if self.output_dir else None

    @property
    def dataset_dir(self) -> Path:
        if not isinstance(self.data, DatasetData | OptionsData):
            raise ValueError(f"this run trains on {self.data.kind} data, not on a saved dataset")
        return Path(self.data.dataset_dir)

    def to_dict(self) -> dict[str, Any]:
        return _adapter().dump_python(self, mode="json")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingRun:
        """The run of `values`; any unknown key or ill-typed value is refused with where it is."""
        return _adapter().validate_python(values)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_adapter().dump_json(self, indent=2).decode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainingRun:
        """A saved run: `training_run.json`, or the folder that holds one."""
        path = Path(path)
        return _adapter().validate_json((path / RUN_FILE if path.is_dir() else path).read_text())

    def config_hash(self) -> str:
        """The registry's config hash: everything that decides what the run learns, not where it writes."""
        values = self.to_dict()
        values.pop("output_dir")
        values.pop("resume")
        if values["options_env"] is None:
            values.pop("options_env")  # an intraday run hashes as it did before options runs existed
        for name in _PATHS:
            values["agent"].pop(name)
        return config_hash(values)

    def train_env(self, device: torch.device | str | None = None) -> Any:
        """The training env: a batched env, or a gymnasium id the agent builds `num_envs` copies of."""
        device = device or self.agent.device
        if isinstance(self.data, GymData):
            return self.data.env_id
        if isinstance(self.data, DatasetData):
            return intraday_env(self.data.dataset_dir, "train", self.num_envs, device, self.env)
        if isinstance(self.data, OptionsData):
            return options_env(self.data.dataset_dir, "train", self.num_envs, device, self.options_env)
        if isinstance(self.data, SyntheticOptionsData):
            return synthetic_options_env(self.data, self.num_envs, self.options_env, device)
        return synthetic_env(self.data, self.num_envs, self.env, device)

    def selection_env(self, device: torch.device | str | None = None) -> IntradayTradingEnv | OptionsTradingEnv | None:
        """The selection walk that chooses checkpoints and drives early stopping (None without one)."""
        device = device or self.agent.device
        if self.selection_envs == 0:
            return None
        if isinstance(self.data, DatasetData):
            return intraday_env(self.data.dataset_dir, "selection", self.selection_envs, device, self.env)
        if isinstance(self.data, OptionsData):
            return options_env(self.data.dataset_dir, "selection", self.selection_envs, device, self.options_env)
        return None

    def agent_config(self) -> PPOConfig:
        """The agent's config as the trainer builds it: a gymnasium id takes the run's count of copies."""
        return self.agent.replace(num_envs=self.num_envs) if isinstance(self.data, GymData) else self.agent


def synthetic_env(data: SyntheticData, num_envs: int, config: IntradayConfig,
                  device: torch.device | str = "cpu") -> IntradayTradingEnv:
    """IntradayTrading on the synthetic market's days [first_day, last_day)."""
    from pipeline.envs.tensors import synthetic_market_tensors

    market = synthetic_market_tensors(days=data.days, alpha=data.alpha, seed=data.seed, minutes=data.minutes,
                                      source=data.source, device=device)
    market = market.subset(days=range(data.first_day, data.days if data.last_day is None else data.last_day))
    return IntradayTradingEnv(market, num_envs=num_envs, config=config, device=device)


def synthetic_options_env(data: SyntheticOptionsData, num_envs: int, config: OptionsTradingConfig | None,
                          device: torch.device | str = "cpu") -> OptionsTradingEnv:
    """OptionsTrading on the synthetic market's chain of days [first_day, last_day)."""
    chain = synthetic_chain_tensors(days=data.days, seed=data.seed, symbol=data.symbol, start=data.start,
                                    alpha=data.alpha, iv_premium=data.iv_premium)
    chain = chain_days(chain, range(data.first_day, data.days if data.last_day is None else data.last_day))
    return OptionsTradingEnv(chain, num_envs=num_envs, config=config, device=device)


@cache
def _adapter() -> pydantic.TypeAdapter[TrainingRun]:
    return pydantic.TypeAdapter(TrainingRun)
