"""Does the intraday agent learn with the defaults, through the assets? The last row of docs/LEARNING.md.

For each market seed (the embedded synthetic market at `--alpha`, the default symbols): ingest and features over
the default dataset window of D (41 sessions ending at D) in one range run; then, for each training seed, the
training group's `training_dataset` and `clstm_ppo_policy` assets for D with their defaults (the compute
resource's default budget and preset; only `seed` is set). Each registered policy then walks the gate days of D's
dataset (the last 15 sessions, which nothing in training or checkpoint choice read) with costs, in the envs'
evaluation mode, beside the baselines the gate compares with (`run_baselines`: bands and weights fitted on the
train days; the cost-aware oracle knows the planted horizon).

Per (market, seed) it reports the policy's share of the cost-aware oracle's mean daily net return with its
stationary-bootstrap interval (`share_interval`), the paired t statistic of its daily net return over banded
momentum's, and the seconds the `clstm_ppo_policy` materialization took (process start, dataset load, training,
validation). The top-level figures are the worst over all runs: the claim holds for every seed or it does not.

    python benchmarks/learning.py                        # one market, one training seed (about 7 min on 2 cores)
    python benchmarks/learning.py --seeds 3              # 3 markets x 3 training seeds (the table's row)
    python benchmarks/learning.py --alpha 0.10 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

from benchmarks._shared import stdout_to_stderr  # noqa: E402
from pipeline.backtest.inputs import dataset_part, load_registered  # noqa: E402
from pipeline.backtest.metrics import daily_frame, share_interval  # noqa: E402
from pipeline.backtest.promotion import CANDIDATE  # noqa: E402
from pipeline.backtest.runner import run_intraday  # noqa: E402
from pipeline.backtest.strategies import COST_AWARE_ORACLE, FLAT, MOMENTUM_BAND, run_baselines  # noqa: E402
from pipeline.definitions import build_definitions  # noqa: E402
from pipeline.lake import Warehouse  # noqa: E402
from pipeline.registry import read_registry  # noqa: E402
from pipeline.training.dataset import DatasetConfig, window_split  # noqa: E402
from resources.compute import ComputeResource  # noqa: E402
from resources.sources import MarketDataResource  # noqa: E402
from resources.warehouse import WarehouseResource  # noqa: E402

DAY = date(2024, 8, 30)
"""D: the last session of the window (its gate days are the 15 sessions up to it)."""
INSTANCE_TEMPLATE = Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml"


def _assets(groups: tuple[str, ...], names: tuple[str, ...] | None = None) -> list[Any]:
    assets = [a for a in build_definitions().assets if set(a.group_names_by_key.values()) & set(groups)]
    return assets if names is None else [a for a in assets if a.key.path[-1] in names]


def paired_t(diff: np.ndarray) -> float:
    """t statistic of the mean of a paired daily difference (nan when it has no spread)."""
    sd = diff.std(ddof=1)
    return float(diff.mean() / (sd / np.sqrt(diff.size))) if diff.size > 1 and sd > 0 else float("nan")


def judge(store: Warehouse, row: dict[str, Any], signal_minutes: int) -> dict[str, Any]:
    """The registered policy of `row` and the baselines on the gate days of its dataset."""
    model = load_registered(row)
    gate, train = dataset_part(model.dataset_dir, "gate"), dataset_part(model.dataset_dir, "train")
    rows = pl.concat([
        run_intraday(gate, model.policy, CANDIDATE, model_id=model.model_id, env_config=model.env_config),
        run_baselines(gate, train, env_config=model.env_config, oracle_signal_minutes=signal_minutes),
    ], how="vertical_relaxed")
    daily = daily_frame(rows).pivot(on="strategy", index="trading_day", values="ret").sort("trading_day")
    ours, oracle, band = (daily[name].to_numpy() for name in (CANDIDATE, COST_AWARE_ORACLE, MOMENTUM_BAND))
    share = share_interval(ours, oracle, n_boot=1000, level=0.9, seed=0)
    exposure = rows.filter(pl.col("strategy") == CANDIDATE)["position"].abs().sum()
    return {
        "gate_days": int(daily.height),
        "share_of_cost_aware_oracle": share.mean,
        "share_ci90": [share.ci_low, share.ci_high],
        "t_vs_banded_momentum": paired_t(ours - band),
        "t_vs_flat": paired_t(ours - daily[FLAT].to_numpy()),
        "mean_daily_return": {name: float(daily[name].mean()) for name in daily.columns if name != "trading_day"},
        "traded": bool(exposure > 0),
    }



def run_market(root: Path, market_seed: int, train_seeds: list[int], alpha: float, steps: int | None,
               log: Any) -> list[dict[str, Any]]:
    """One market: ingest + features over D's window, then train and judge each training seed."""
    lake, home = root / "data_lake", root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(INSTANCE_TEMPLATE, home / "dagster.yaml")
    os.environ.update(PIPELINE_DATA_LAKE=str(lake), DAGSTER_HOME=str(home))
    split = window_split(DAY, DatasetConfig())
    warehouse = WarehouseResource()
    market = MarketDataResource(alpha=alpha, seed=market_seed)
    started = time.perf_counter()
    data = dg.materialize(_assets(("ingest", "features")), resources={"warehouse": warehouse, "market_data": market},
                          tags={"dagster/asset_partition_range_start": split.window[0].isoformat(),
                                "dagster/asset_partition_range_end": DAY.isoformat()})
    if not data.success:
        raise RuntimeError(f"ingest + features failed for market {market_seed}")
    log(f"market {market_seed}: ingest + features of {len(split.window)} days in {time.perf_counter() - started:.0f} s")
    compute = ComputeResource() if steps is None else ComputeResource(total_timesteps=steps)
    resources = {"warehouse": warehouse, "pipes_subprocess_client": dg.PipesSubprocessClient(), "compute": compute}
    dataset, clstm = _assets(("training",), ("training_dataset",)), _assets(("training",), ("clstm_ppo_policy",))
    assert dg.materialize(dataset, resources=resources, partition_key=DAY.isoformat()).success
    store = Warehouse(warehouse.database_path())
    signal_minutes = market.synthetic_config().signal_minutes
    out = []
    for seed in train_seeds:
        started = time.perf_counter()
        result = dg.materialize(clstm, resources=resources, partition_key=DAY.isoformat(),
                                run_config={"ops": {"clstm_ppo_policy": {"config": {"seed": seed}}}})
        seconds = time.perf_counter() - started
        if not result.success:
            raise RuntimeError(f"clstm_ppo_policy failed for market {market_seed}, seed {seed}")
        registry = read_registry(store).filter((pl.col("algo") == "clstm_ppo") & (pl.col("member") == f"seed{seed}"))
        row = registry.sort("registered_at").to_dicts()[-1]
        judged = {"market_seed": market_seed, "train_seed": seed, "train_seconds": round(seconds, 1),
                  **judge(store, row, signal_minutes)}
        log(json.dumps(judged, default=float))
        out.append(judged)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1, help="market seeds and training seeds each (N x N runs)")
    parser.add_argument("--alpha", type=float, default=None, help="planted signal; unset: the market's default")
    parser.add_argument("--steps", type=int, default=None, help="env steps; unset: the compute resource's default")
    parser.add_argument("--keep", type=Path, default=None, help="keep each market's lake under this folder")
    args = parser.parse_args(argv)
    market_defaults = MarketDataResource()
    alpha = args.alpha if args.alpha is not None else market_defaults.synthetic_config().alpha
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for market_seed in seeds:
        root = (args.keep / f"market{market_seed}") if args.keep else Path(tempfile.mkdtemp(prefix="learning-"))
        try:
            with stdout_to_stderr():
                runs.extend(run_market(root, market_seed, seeds, alpha, args.steps, log))
        finally:
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    shares = [r["share_of_cost_aware_oracle"] for r in runs]
    out = {
        "benchmark": "learning",
        "alpha": alpha,
        "day": DAY.isoformat(),
        "runs": len(runs),
        "share_of_cost_aware_oracle": float(np.nanmin(shares)) if np.isfinite(shares).any() else None,
        "median_share_of_cost_aware_oracle": float(np.nanmedian(shares)) if np.isfinite(shares).any() else None,
        "t_vs_banded_momentum": float(min(r["t_vs_banded_momentum"] for r in runs)),
        "train_seconds": max(r["train_seconds"] for r in runs),
        "all_traded": all(r["traded"] for r in runs),
        "per_run": runs,
        "settings": {"market_seeds": seeds, "train_seeds": seeds, "steps": args.steps or ComputeResource().total_timesteps,
                     "dataset": "defaults (41 sessions: 20 train, 1 embargo, 5 selection, 15 gate)"},
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
    }
    print(json.dumps(out, indent=2, default=float))
    return out


if __name__ == "__main__":
    main()
