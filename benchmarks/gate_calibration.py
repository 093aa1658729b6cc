"""How often does the promotion gate promote a model of a market with nothing to find, and how often one of a market
with a planted signal? Its error rates, measured on the real path.

For each of K markets per alpha (the synthetic market's batched arrays, 3 symbols, 390 one-minute bars a day; seed
k is market k) the window of a dataset is split exactly as `training_dataset` splits it (`window_split` of the
default `DatasetConfig`: train, embargo, selection and gate days), then:

1. candidates are fitted on the train days: `--candidates rules` (the quick pool) is a family of banded momentum
   rules over several horizons (`LOOKBACKS`), each band tuned on the train days under the env's costs like the
   baselines' bands; `--candidates clstm` trains `--seeds` CLSTM-PPO agents (small_budget preset, `--steps` each)
   whose checkpoints are chosen on the selection days, as the trainer does in the assets;
2. the candidate is chosen among them on the selection days by `pipeline.backtest.selection.select_candidate`,
   the step `candidate_selection` runs;
3. the chosen model and every baseline (bands and portfolio weights fitted on the train days; the oracles beside
   them) walk the gate days, and `pipeline.backtest.promotion.evaluate_gate` with the default `PromotionPolicy`
   judges it, as `deployment_artifact`'s blocking checks do (no model in production: a first promotion).

alpha 0 is a martingale with costs: no rule or model can have a real edge, so every promotion is a false one.
alpha > 0 plants a 10-minute momentum signal: the strongest simple rule the gate compares with is momentum with a
tuned band on a 30-minute horizon, so a promotion needs a real margin over it.

Prints ONE JSON object: null_markets, null_promoted, null_promotion_rate and its 95% Wilson interval
(statsmodels), the same for the positive markets (the highest alpha), per alpha the rate, its interval, the mean
margin over the best baseline and the chosen candidates' share of the cost-aware oracle, and the run's settings.

    python benchmarks/gate_calibration.py --quick          # 8 markets at alpha 0 and 8 at 0.25 (about 3 minutes)
    python benchmarks/gate_calibration.py --markets 40     # the README's table (alpha 0, 0.15, 0.25)
    python benchmarks/gate_calibration.py --markets 20 --gate-days 15 --alphas 0.15   # power at another size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from statsmodels.stats.proportion import proportion_confint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.agents.clstm_ppo import CLSTMPPO  # noqa: E402
from pipeline.agents.ppo_config import PPOConfig  # noqa: E402
from pipeline.backtest.metrics import daily_frame, share_interval  # noqa: E402
from pipeline.backtest.promotion import (  # noqa: E402
    CANDIDATE,
    PromotionPolicy,
    best_baseline,
    compare,
    evaluate_gate,
)
from pipeline.backtest.runner import run_intraday  # noqa: E402
from pipeline.backtest.selection import select_candidate  # noqa: E402
from pipeline.backtest.strategies import COST_AWARE_ORACLE, BandMomentum, run_baselines, tune_band  # noqa: E402
from pipeline.envs.intraday import IntradayConfig, IntradayTradingEnv  # noqa: E402
from pipeline.envs.tensors import MarketTensors, synthetic_market_tensors  # noqa: E402
from pipeline.synthetic.arrays import SIGNAL_MINUTES  # noqa: E402
from pipeline.training.dataset import DatasetConfig, window_split  # noqa: E402
from pipeline.training.env_factories import NUM_ENVS, SELECTION_ENVS  # noqa: E402
from pipeline.training.run import DEFAULT_INTRADAY  # noqa: E402

END_DAY = date(2024, 7, 31)
"""The last day of every market's window (the days only label the bars; each seed is another market)."""
LOOKBACKS = (5, 10, 20, 45)
"""Horizons of the rule candidates: the planted 10 minutes among others a researcher would try."""
SYMBOLS = ("AAA", "BBB", "CCC")


@dataclass(frozen=True)
class Candidate:
    """A fitted model to choose among: what `select_candidate` takes."""

    model_id: str
    policy: Any
    env_config: IntradayConfig
    metrics: dict[str, Any]


def market_parts(alpha: float, seed: int, config: DatasetConfig) -> dict[str, MarketTensors]:
    """One synthetic market over a dataset window ending at END_DAY, cut into its train, selection and gate parts."""
    split = window_split(END_DAY, config)
    market = synthetic_market_tensors(days=len(split.window), alpha=alpha, seed=seed, symbols=SYMBOLS)
    market = replace(market, trading_days=tuple(d.isoformat() for d in split.window))
    index = {day: i for i, day in enumerate(split.window)}
    return {part: market.subset(days=[index[d] for d in getattr(split, part)])
            for part in ("train", "selection", "gate")}


def rule_candidates(train: MarketTensors, env_config: IntradayConfig) -> list[Candidate]:
    """The quick pool: banded momentum over each of LOOKBACKS, each band tuned on the train days."""
    converged = {"last": {"losses/approx_kl": 0.0}}  # a rule has no training to diverge
    return [Candidate(f"rule-k{k}", BandMomentum(k, tune_band(train, k, env_config)), env_config, converged)
            for k in LOOKBACKS]


def clstm_candidates(parts: dict[str, MarketTensors], env_config: IntradayConfig, seeds: int,
                     steps: int) -> list[Candidate]:
    """CLSTM-PPO seeds trained on the train days, each checkpoint chosen on the selection days (best_composite)."""
    out = []
    for seed in range(seeds):
        train_env = IntradayTradingEnv(parts["train"], num_envs=NUM_ENVS, config=env_config)
        selection_env = IntradayTradingEnv(parts["selection"], num_envs=SELECTION_ENVS,
                                           config=replace(env_config, evaluation=True))
        agent = CLSTMPPO(train_env, PPOConfig.preset("small_budget", seed=seed, torch_threads=1),
                         validation_env=selection_env)
        agent.learn(steps)
        last = {k: v for k, v in agent.history[-1].items() if isinstance(v, int | float)} if agent.history else {}
        out.append(Candidate(f"clstm-seed{seed}", agent, env_config, {"last": last}))
    return out


def judge(alpha: float, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One market through fit -> choose on selection days -> gate on gate days; what the gate said."""
    torch.set_num_threads(1)
    config = DatasetConfig(window_days=args.train_days + 1 + args.selection_days + args.gate_days,
                           selection_days=args.selection_days, gate_days=args.gate_days)
    parts = market_parts(alpha, seed, config)
    env_config = DEFAULT_INTRADAY
    models = (rule_candidates(parts["train"], env_config) if args.candidates == "rules" else
              clstm_candidates(parts, env_config, args.seeds, args.steps))
    selection, _ = select_candidate(models, parts["selection"])
    chosen = next(m for m in models if m.model_id == selection.chosen)
    rows = pl.concat([
        run_intraday(parts["gate"], chosen.policy, CANDIDATE, model_id=chosen.model_id, env_config=env_config),
        run_baselines(parts["gate"], parts["train"], env_config=env_config, oracle_signal_minutes=SIGNAL_MINUTES),
    ], how="vertical_relaxed")
    policy = PromotionPolicy()
    gate = evaluate_gate(rows, chosen.metrics, False, policy)
    against = best_baseline(rows)
    margin = compare(rows, against, policy)
    daily = daily_frame(rows)
    means = dict(daily.group_by("strategy").agg(pl.col("ret").mean()).iter_rows())
    paired = daily.pivot(on="strategy", index="trading_day", values="ret").sort("trading_day")
    share = share_interval(paired[CANDIDATE].to_numpy(), paired[COST_AWARE_ORACLE].to_numpy(),
                           n_boot=policy.n_boot, level=policy.level, seed=policy.seed)
    return {
        "alpha": alpha, "seed": seed, "chosen": chosen.model_id, "promoted": all(g.passed for g in gate),
        "failed": [g.name for g in gate if not g.passed], "best_baseline": against,
        "margin": margin.mean_difference, "ci_low": margin.ci_low, "ci_high": margin.ci_high,
        "block_length": margin.block_length, "candidate_mean": means[CANDIDATE],
        "cost_aware_oracle_mean": means[COST_AWARE_ORACLE],
        "oracle_share": share.mean if np.isfinite(share.mean) else None,
        "oracle_share_ci": [share.ci_low, share.ci_high] if np.isfinite(share.ci_low) else None,
        "selection_scores": selection.scores,
        "mean_daily_returns": means,
    }


def _wilson(count: int, total: int) -> list[float]:
    low, high = proportion_confint(count, total, alpha=0.05, method="wilson")
    return [round(float(low), 4), round(float(high), 4)]


def summarize(results: Sequence[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """Rate, interval and margins of the markets of one alpha."""
    of = [r for r in results if r["alpha"] == alpha]
    promoted = sum(r["promoted"] for r in of)
    shares = [r["oracle_share"] for r in of if r["oracle_share"] is not None]
    return {
        "markets": len(of), "promoted": promoted, "rate": round(promoted / len(of), 4),
        "rate_ci95": _wilson(promoted, len(of)),
        "mean_margin_over_best_baseline": float(np.mean([r["margin"] for r in of])),
        "best_baselines": {name: sum(r["best_baseline"] == name for r in of)
                           for name in sorted({r["best_baseline"] for r in of})},
        "chosen": {name: sum(r["chosen"] == name for r in of) for name in sorted({r["chosen"] for r in of})},
        "median_share_of_cost_aware_oracle": float(np.median(shares)) if shares else None,
        "mean_daily_returns": {name: float(np.mean([r["mean_daily_returns"][name] for r in of]))
                               for name in sorted(of[0]["mean_daily_returns"])},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 markets at alpha 0 and 8 at 0.25, rule candidates")
    parser.add_argument("--markets", type=int, default=40, help="markets per alpha (K)")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first market (add markets to a run)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.15, 0.25])
    parser.add_argument("--candidates", choices=("rules", "clstm"), default="rules")
    parser.add_argument("--seeds", type=int, default=2, help="CLSTM-PPO seeds per market (--candidates clstm)")
    parser.add_argument("--steps", type=int, default=409_600, help="env steps per CLSTM-PPO seed")
    defaults = DatasetConfig()
    parser.add_argument("--train-days", type=int, default=defaults.window_days - defaults.embargo_days
                        - defaults.selection_days - defaults.gate_days)
    parser.add_argument("--selection-days", type=int, default=defaults.selection_days)
    parser.add_argument("--gate-days", type=int, default=defaults.gate_days)
    parser.add_argument("--workers", type=int, default=1, help="processes judging markets at once")
    parser.add_argument("--details", action="store_true", help="include every market's figures")
    args = parser.parse_args(argv)
    if args.quick:
        args.markets, args.alphas, args.candidates = 8, [0.0, 0.25], "rules"
    jobs = [(alpha, seed) for alpha in args.alphas for seed in range(args.first_seed, args.first_seed + args.markets)]
    started = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(judge, *zip(*jobs, strict=True), [args] * len(jobs)))
    else:
        results = []
        for alpha, seed in jobs:
            results.append(judge(alpha, seed, args))
            print(f"alpha {alpha} market {seed}: {'promoted' if results[-1]['promoted'] else 'refused'} "
                  f"({results[-1]['chosen']}, margin {results[-1]['margin']:+.3%})", file=sys.stderr, flush=True)
    by_alpha = {str(alpha): summarize(results, alpha) for alpha in args.alphas}
    out: dict[str, Any] = {"benchmark": "gate_calibration"}
    if 0.0 in args.alphas:
        null = by_alpha["0.0"]
        out |= {"null_markets": null["markets"], "null_promoted": null["promoted"],
                "null_promotion_rate": null["rate"], "null_promotion_rate_ci95": null["rate_ci95"]}
    positives = sorted(a for a in args.alphas if a > 0)
    if positives:
        top = by_alpha[str(positives[-1])]
        out |= {"positive_alpha": positives[-1], "positive_markets": top["markets"],
                "positive_promoted": top["promoted"], "positive_promotion_rate": top["rate"],
                "positive_promotion_rate_ci95": top["rate_ci95"]}
    out |= {
        "by_alpha": by_alpha,
        "settings": {"markets_per_alpha": args.markets, "first_seed": args.first_seed, "candidates": args.candidates,
                     "lookbacks": list(LOOKBACKS) if args.candidates == "rules" else None,
                     "seeds": args.seeds if args.candidates == "clstm" else None,
                     "steps_per_seed": args.steps if args.candidates == "clstm" else None,
                     "train_days": args.train_days, "selection_days": args.selection_days,
                     "gate_days": args.gate_days, "gate": {"level": PromotionPolicy().level,
                                                           "n_boot": PromotionPolicy().n_boot},
                     "symbols": len(SYMBOLS), "bars_per_day": 390},
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
    }
    if args.details:
        out["markets"] = results
    print(json.dumps(out, indent=2, default=float))
    return out


if __name__ == "__main__":
    main()
