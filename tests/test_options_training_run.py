"""The options agent as a `TrainingRun`: option-chain data kinds with the options env's settings, the same strict
JSON contract, and the same trainer process (`python -m pipeline.training.trainer training_run.json`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
import torch

from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.envs.options import OptionsTradingConfig, OptionsTradingEnv
from pipeline.envs.options_chain import chain_days, synthetic_chain_tensors
from pipeline.training.run import (
    DatasetData,
    OptionsData,
    SyntheticOptionsData,
    TrainingRun,
)

REPO = Path(__file__).resolve().parents[1]
TINY = {"num_steps": 8, "hidden": 8, "window": 2}


def test_an_options_run_takes_the_options_env_and_round_trips() -> None:
    run = TrainingRun.build(OptionsData("/nowhere"), total_timesteps=64, options_env=OptionsTradingConfig(action_set=91))
    assert run.options_env == OptionsTradingConfig(action_set=91)
    assert TrainingRun.from_dict(run.to_dict()) == run
    assert TrainingRun.build(SyntheticOptionsData(), total_timesteps=64).options_env == OptionsTradingConfig()
    # An intraday run has none, and its hash does not see the field.
    intraday = TrainingRun.build(DatasetData("/nowhere"), total_timesteps=64)
    assert intraday.options_env is None and run.config_hash() != intraday.config_hash()


def test_options_env_goes_with_option_data_only() -> None:
    with pytest.raises(ValueError, match="options_env is set exactly when the data are option chains"):
        TrainingRun.build(DatasetData("/nowhere"), total_timesteps=64, options_env=OptionsTradingConfig())
    run = TrainingRun.build(OptionsData("/nowhere"), total_timesteps=64)
    with pytest.raises(ValueError, match="options_env is set exactly"):
        run.replace(options_env=None)
    with pytest.raises(ValueError, match="selection walk sets evaluation"):
        run.replace(options_env=OptionsTradingConfig(evaluation=True))


@pytest.mark.parametrize(("where", "bad"), [("options_env.windw", {"options_env": {"windw": 3}}),
                                            ("data.options.oops", {"data": {"oops": 1}})])
def test_a_saved_options_run_refuses_an_unknown_key(where: str, bad: dict) -> None:
    values = TrainingRun.build(OptionsData("/nowhere"), total_timesteps=64).to_dict()
    merged = {k: (values[k] | v if isinstance(v, dict) else v) for k, v in bad.items()}
    with pytest.raises(pydantic.ValidationError, match=where.replace(".", r"\.")):
        TrainingRun.from_dict(values | merged)


def test_a_synthetic_options_run_trains_on_the_chain_it_names() -> None:
    data = SyntheticOptionsData(days=2, symbol="SYMB", iv_premium=0.0, last_day=1)
    env = TrainingRun.build(data, total_timesteps=64, num_envs=2).train_env()
    expected = chain_days(synthetic_chain_tensors(days=2, symbol="SYMB", iv_premium=0.0, start=data.start),
                          range(1))
    assert isinstance(env, OptionsTradingEnv) and env.num_envs == 2
    assert torch.equal(env.chain.bid, expected.bid.float()) and env.n_days == 1


@pytest.mark.slow
def test_the_trainer_process_trains_an_options_run(tmp_path: Path) -> None:
    run = TrainingRun.build(SyntheticOptionsData(days=1), total_timesteps=64, num_envs=4, agent=TINY,
                            options_env=OptionsTradingConfig(action_set=91, window=4)).with_output(tmp_path)
    path = run.save(tmp_path / "training_run.json")
    done = subprocess.run([sys.executable, "-m", "pipeline.training.trainer", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert summary["num_timesteps"] >= 64 and summary["selected"] == "last update"
    agent = CLSTMPPO.load(run.output)
    assert agent.action_dim == 91 and tuple(agent.obs_shape) == (4, len(OptionsTradingEnv(
        synthetic_chain_tensors(days=1), config=OptionsTradingConfig(window=4)).feature_names))
