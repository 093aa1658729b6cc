"""Training from landed files, not only from synthetic ticks: daily bars (bar-only symbols, one bar a day) landed
as a file go through raw.bars and features.market in a range backfill, then `training_dataset` and `sb3_baselines`
train on them as real Dagster runs, the portfolio SAC over multi-day episodes (a daily portfolio rebalances from
day to day; one-day episodes on daily bars would have a single bar and no step).

Budgets are tiny: this is about the path from files to a registered, loadable model, not about learning.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch
from conftest import materialized_metadata
from test_assets_feature_lookback import DAYS, SYMBOLS, daily_bar_lake

from assets.training import DATASET_KEY
from assets.training_sb3 import BASELINES_KEY
from pipeline.agents.sb3 import load_baseline
from pipeline.definitions import build_definitions
from pipeline.envs.portfolio import PortfolioConfig
from pipeline.lake import Warehouse
from pipeline.registry import file_sha256, read_registry
from pipeline.training.dataset import load_dataset
from pipeline.training.env_factories import portfolio_env
from pipeline.training.run import DEFAULT_INTRADAY
from pipeline.training.sb3 import EvaluatedPolicy, portfolio_return, torch_threads
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource

DAY = DAYS[-1]  # the partition D: the last landed session
WINDOW_DAYS, SELECTION_DAYS, GATE_DAYS, EPISODE_DAYS = 50, 10, 10, 5
# Daily catalog features that fill on daily bars (drawdown_60d only from the 60th landed day: its missing flag
# is part of what the agent sees). The minute turbulence index has no rows to read on daily bars.
FEATURES = ["log_return_1d", "log_return_5d", "realized_vol_20d", "drawdown_60d"]
SAC_STEPS, PPO_STEPS = 200, 128
# The intraday env on daily bars needs multi-day episodes too, and carries its position overnight (otherwise it is
# flattened at every close, which on daily bars is every bar).
INTRADAY = {"window": DEFAULT_INTRADAY.window, "loss_cut": None, "profit_lock": None, "episode_days": EPISODE_DAYS,
            "carry_overnight": True}
PORTFOLIO = {"episode_days": EPISODE_DAYS}


def _assets(*keys: dg.AssetKey) -> list[dg.AssetsDefinition]:
    return [a for a in build_definitions().assets if a.key in keys]


@pytest.fixture(scope="module")
def trained(module_lake_env: dict[str, str], lake_cache: Path):
    lake = Path(module_lake_env["PIPELINE_DATA_LAKE"])
    daily_bar_lake(lake, lake_cache)
    resources = {"warehouse": WarehouseResource(), "compute": ComputeResource(torch_threads=1)}
    run_config = {"ops": {
        "training_dataset": {"config": {"window_days": WINDOW_DAYS, "selection_days": SELECTION_DAYS,
                                        "gate_days": GATE_DAYS,
                                        "features": FEATURES, "turbulence": "turbulence_index_daily"}},
        "sb3_baselines": {"config": {"sac_timesteps": SAC_STEPS, "ppo_timesteps": PPO_STEPS,
                                     "ppo": {"n_steps": 64, "batch_size": 64},
                                     "intraday_env": INTRADAY, "portfolio_env": PORTFOLIO}},
    }}
    result = dg.materialize(_assets(DATASET_KEY, BASELINES_KEY), resources=resources,
                            partition_key=DAY.isoformat(), run_config=run_config)
    assert result.success
    yield lake, result, Warehouse(lake / "warehouse.duckdb")


def test_the_dataset_is_the_landed_sessions_ending_at_d(trained) -> None:
    lake, result, _ = trained
    meta = materialized_metadata(result, "training_dataset")
    window = [d.isoformat() for d in DAYS[-WINDOW_DAYS:]]
    n_train = WINDOW_DAYS - 1 - SELECTION_DAYS - GATE_DAYS  # one embargo day
    manifest = meta["manifest"]
    assert manifest["window"] == [window[0], window[-1]]
    assert meta["train_days"] == window[:n_train] and meta["embargo_days"] == [window[n_train]]
    assert meta["selection_days"] == window[n_train + 1:n_train + 1 + SELECTION_DAYS]
    assert meta["gate_days"] == window[-GATE_DAYS:]
    assert meta["symbols"] == sorted(SYMBOLS)
    assert set(FEATURES) <= set(meta["feature_names"])
    assert meta["feature_fill"] == dict.fromkeys(FEATURES, "filled")
    dataset = load_dataset(meta["path"])
    assert meta["path"] == str(lake / "artifacts" / "datasets" / DAY.isoformat())
    assert dataset.data_version == meta["data_version"]
    # One bar a day in both parts, priced from the landed closes (bar-only symbols get an imputed spread).
    for part, days in (("train", n_train), ("selection", SELECTION_DAYS), ("gate", GATE_DAYS)):
        market = dataset.part(part)
        assert market.session_minutes.tolist() == [1] * days
        assert torch.isfinite(market.mid).all() and (market.ask > market.bid).all()


def test_the_sac_model_is_registered_with_the_datasets_lineage(trained) -> None:
    lake, result, store = trained
    meta, dataset = materialized_metadata(result, "sb3_baselines"), materialized_metadata(result, "training_dataset")
    rows = {row["algo"]: row for row in read_registry(store, DAY).to_dicts()}
    assert set(rows) == {"sb3_ppo", "sb3_sac"}
    row = rows["sb3_sac"]
    folder = lake / "artifacts" / "models" / row["model_id"]
    assert (row["member"], row["status"], row["model_id"]) == ("seed0", "candidate", meta["sb3_sac/model_id"])
    assert row["data_version"] == dataset["data_version"] == meta["data_version"]
    assert (row["window_start"], row["window_end"]) == (DAYS[-WINDOW_DAYS], DAY)
    assert row["sha256"] == file_sha256(folder / "model.zip") == meta["sb3_sac/sha256"]
    saved = json.loads((folder / "baseline.json").read_text())
    # Every PortfolioConfig field the run was configured with (the launchpad's), the set ones included.
    settings = {k: v for k, v in dataclasses.asdict(PortfolioConfig(**PORTFOLIO)).items() if k != "evaluation"}
    assert saved["env_kwargs"] == {"dataset_dir": dataset["path"], "part": "train", **settings}
    assert saved["num_timesteps"] == meta["sb3_sac/num_timesteps"] == SAC_STEPS
    assert json.loads(row["metrics"])["train"]["num_timesteps"] == SAC_STEPS
    assert isinstance(saved["mean_episode_return"], float), "SAC finished no multi-day training episode"


def test_the_selection_walk_covers_every_multi_day_episode_once(trained) -> None:
    _, result, _ = trained
    meta = materialized_metadata(result, "sb3_baselines")
    blocks = SELECTION_DAYS // EPISODE_DAYS
    # The portfolio plays all symbols in one episode per block; the intraday env one episode per (block, symbol).
    assert meta["sb3_sac/selection/episodes"] == blocks
    assert meta["sb3_ppo/selection/episodes"] == blocks * len(SYMBOLS)


def test_the_sac_model_loads_and_walks_the_selection_days(trained) -> None:
    _, result, store = trained
    meta, dataset = materialized_metadata(result, "sb3_baselines"), materialized_metadata(result, "training_dataset")
    (row,) = [r for r in read_registry(store, DAY).to_dicts() if r["algo"] == "sb3_sac"]
    policy = load_baseline(Path(row["artifact_path"]).parent)
    # Another env count than the asset's: every block is dealt once whatever the count.
    env = portfolio_env(dataset["path"], "selection", num_envs=3, **PORTFOLIO)
    agent = EvaluatedPolicy.of(policy)
    assert (agent.obs_shape, agent.action_dim) == (tuple(env.obs_shape), len(SYMBOLS) + 1)
    obs, _ = env.reset(seed=0)
    steps, episodes = torch.zeros(env.num_envs, dtype=torch.int64), defaultdict(list)
    with torch_threads(1):
        while not bool(env.eval_finished):
            actions, _ = agent.predict(obs)
            again, _ = agent.predict(obs)
            assert np.isfinite(actions).all() and np.array_equal(actions, again)  # deterministic
            obs, _, terminated, _, info = env.step(torch.as_tensor(actions))
            steps += 1
            for i in torch.nonzero(terminated).flatten().tolist():
                if int(info["episode_id"][i]) >= 0:
                    episodes[int(info["episode_id"][i])].append(
                        (int(info["day"][i]), int(steps[i]), float(portfolio_return(info)[i])))
                steps[i] = 0
    # Each block of EPISODE_DAYS sessions once, ending on its last day after EPISODE_DAYS - 1 daily rebalances.
    ends = {episode: [(day, n) for day, n, _ in finished] for episode, finished in episodes.items()}
    assert ends == {b: [((b + 1) * EPISODE_DAYS - 1, EPISODE_DAYS - 1)] for b in range(SELECTION_DAYS // EPISODE_DAYS)}
    returns = [finished[0][2] for _, finished in sorted(episodes.items())]
    assert all(r != 0.0 for r in returns), "a portfolio that held risky assets for days changed value"
    # The env's value is float32 (one ulp near 1 is 6e-8) and the policy's outputs round by batch size (3 here).
    assert meta["sb3_sac/selection/mean_pnl"] == pytest.approx(float(np.mean(returns)), abs=1e-7)
