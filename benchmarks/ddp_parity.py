"""Data-parallel parity on the planted-signal control market: the trainer CLI (the command `clstm_ppo_policy` runs)
with 1 process and under torchrun with 2 CPU processes (gloo), at the same total env-step budget, measured one
after the other in one run.

The market and recipe are the controls' (tests/trading_controls.py): 10 days of the embedded synthetic market with
a planted momentum signal (default alpha 0.25), trained on days 0-5 with the `small_budget` preset and judged on
days 6-9, each (day, symbol) walked once by the deterministic policy. `total_timesteps` counts every rank's steps
and `num_envs` is per rank, so the 2-process run gets half the envs per rank: the same steps per update, the same
number of updates. For each run it prints wall time (process start to exit: start-up, market build and training),
env-steps/s over that wall time and as the trainer's last update measured it, and the out-of-sample net PnL per
(day, symbol) with its t statistic, as ONE JSON object.

    python benchmarks/ddp_parity.py                    # the default budget (about 6 minutes on 2 busy cores)
    python benchmarks/ddp_parity.py --steps 409600     # the controls' full budget
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_ddp_parity import start_trainer  # noqa: E402
from trading_controls import (  # noqa: E402
    CONTROL_CONFIG,
    INTRADAY,
    TEST_DAYS,
    TRAIN_DAYS,
    agent_policy,
    control_market,
    out_of_sample,
    t_statistic,
)

from pipeline.agents.clstm_ppo import CLSTMPPO  # noqa: E402
from pipeline.envs.tensors import MarketTensors  # noqa: E402
from pipeline.training.env_factories import NUM_ENVS  # noqa: E402
from pipeline.training.run import SyntheticData, TrainingRun  # noqa: E402

CONTROL_NUM_ENVS = NUM_ENVS  # the controls' envs (all ranks together)


def trainer_run(args: argparse.Namespace, nproc: int, output: Path) -> TrainingRun:
    """The controls' recipe on their training days for `nproc` ranks at the total budget `args.steps`."""
    # control_market's days: the embedded SyntheticMarket, trained on the first TRAIN_DAYS.
    data = SyntheticData(days=TRAIN_DAYS + TEST_DAYS, alpha=args.alpha, seed=args.market_seed, last_day=TRAIN_DAYS,
                         source="market")
    agent = CONTROL_CONFIG.replace(num_envs=None)
    return TrainingRun(data, agent, args.steps, "small_budget", INTRADAY, num_envs=CONTROL_NUM_ENVS // nproc,
                       output_dir=str(output.parent))


def measure(args: argparse.Namespace, market: MarketTensors, nproc: int, workdir: Path) -> dict[str, Any]:
    """Train with `nproc` processes and judge the saved model on `market`'s test days."""
    output = workdir / f"nproc{nproc}" / "model.safetensors"
    result = start_trainer(trainer_run(args, nproc, output), nproc, output.parent).result()
    outcomes = out_of_sample(market, agent_policy(CLSTMPPO.load(output, device="cpu")))
    return {
        "processes": nproc,
        "envs_per_process": CONTROL_NUM_ENVS // nproc,
        "env_steps": result["num_timesteps"],
        "updates": result["num_updates"],
        "wall_s": round(result["wall_s"], 1),
        "env_steps_per_s": round(result["num_timesteps"] / result["wall_s"], 1),
        "last_update_env_steps_per_s": round(result["last"]["charts/SPS"], 1),
        "oos_mean_pnl_per_day_symbol": round(float(outcomes.pnl.mean()), 2),
        "oos_t": round(t_statistic(outcomes.pnl), 2),
        "oos_n": len(outcomes.pnl),
        "oos_orders": int(outcomes.fills.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=204_800, help="total env steps of each run (all ranks)")
    parser.add_argument("--alpha", type=float, default=0.25, help="planted momentum signal strength")
    parser.add_argument("--market-seed", type=int, default=1, help="the control market's seed (the positive "
                        "control's is 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        market = control_market(alpha=args.alpha, seed=args.market_seed)
        runs = [measure(args, market, n, Path(tmp)) for n in (1, 2)]
    print(json.dumps({
        "benchmark": "ddp_parity",
        "market": {"alpha": args.alpha, "seed": args.market_seed, "train_days": TRAIN_DAYS, "source": "market"},
        "recipe": "small_budget (tests/trading_controls.py CONTROL_CONFIG)",
        "total_env_steps": args.steps,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
