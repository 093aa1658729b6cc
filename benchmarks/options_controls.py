"""Options controls: is CLSTM-PPO on OptionsTrading better than simple policies out of sample, with the env's
default costs, on markets with and without an edge options can trade?

Two sets of controls (`--controls alpha|premium|both`):

**Volatility premium** (`premium`; docs/SYNTHETIC_MARKET.md): one symbol's chain at the default `iv_premium`
(positive control) and at 0 (negative control), `--premium-train-days` to train CLSTM-PPO (`small_budget`, action
set 91: it can sell straddles) and `--premium-test-days` after them to judge it. Every policy walks each test day
once (`options_rules.walk`): the agent, flat, random, the always-short ATM straddle and the straddle oracle.
Positive control: the agent beats flat and the straddle rule, paired t > 2 each. Negative control: at premium 0 the
options gate (`options_runner.options_gate`: beats flat and the straddle, bootstrap interval of the daily
difference above 0) does not promote it.

**Planted alpha** (`alpha`): for alpha 0 (a martingale: nothing to learn) and the synthetic market's planted alpha,
one symbol's option chain is built for `--train-days + --test-days` trading days. CLSTM-PPO (`small_budget`
preset, action set 31) trains on the first days; then every policy walks each test day once in evaluation mode and
its net PnL per day (dollars, after crossing the option spreads and paying fees) is recorded:

- flat: always action 0;
- random: uniform over the action set (a seeded numpy Generator);
- oracle: the synthetic oracle's direction at each snapshot, sign(log mid(t) / mid(t - k)) of the underlying's
  minute mids (k = signal_minutes; mids from the same market's minute bars, only bars up to the snapshot), as
  the long ATM call (> 0) or put (< 0) of the nearest expiry, flat when the sign is 0 and when its order would
  fill at the day's last snapshot (where the env liquidates it at once);
- agent: the trained agent's deterministic policy;
- oracle_at_mid_no_fees: the oracle on the same chain quoted at its mid, without fees: its edge before costs.

Prints ONE JSON object: per premium and policy the per-day PnL, mean and t statistic, the paired margins, the gate
and the two controls' verdicts (`premium`); per alpha and policy the per-day PnL, mean and t statistic, the agent's and the oracle's
paired margins over flat and random, the env's default costs and the measured ATM option half-spread.

    python benchmarks/options_controls.py                     # the default budget (docs/OPTIONS_CONTROLS.md)
    python benchmarks/options_controls.py --controls premium  # the volatility-premium controls alone
    python benchmarks/options_controls.py --steps 4096 --train-days 1 --test-days 2   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.agents.clstm_ppo import CLSTMPPO  # noqa: E402
from pipeline.agents.ppo_config import PPOConfig  # noqa: E402
from pipeline.backtest.options_rules import BASELINE_ACTION_SET, walk_baselines  # noqa: E402
from pipeline.backtest.options_rules import walk as walk_days  # noqa: E402
from pipeline.backtest.options_runner import day_rows, options_gate  # noqa: E402
from pipeline.backtest.promotion import PromotionPolicy  # noqa: E402
from pipeline.contract.calendar import trading_days, trading_session  # noqa: E402
from pipeline.envs.options import OptionsTradingConfig, OptionsTradingEnv  # noqa: E402
from pipeline.envs.options_actions import action_index  # noqa: E402
from pipeline.envs.options_chain import OptionChainTensors, chain_days, synthetic_chain_tensors  # noqa: E402
from pipeline.envs.options_features import first_alive_expiry  # noqa: E402
from pipeline.synthetic.source import SyntheticMarket, SyntheticMarketConfig  # noqa: E402
from pipeline.training.env_factories import NUM_ENVS  # noqa: E402

FLAT = action_index("flat")
ATM_CALL = action_index("long_call_k+0_e0")
ATM_PUT = action_index("long_put_k+0_e0")
SYMBOL = "SYMA"
# Minute bars and chains come from one market per alpha; everything else is its default (seed 7).
PLANTED_ALPHA = SyntheticMarketConfig().alpha

Policy = Callable[[torch.Tensor, OptionsTradingEnv], Any]


def underlying_minute_mids(market: SyntheticMarket, start: str, days: int) -> np.ndarray:
    """[days, minutes] mid of the underlying at each minute bar's end, for the days `synthetic_chain_tensors`
    builds from `start` (the first `days` trading days)."""
    first = date.fromisoformat(start)
    sessions = [trading_session(d) for d in trading_days(first, first + timedelta(days=7 * days + 7))][:days]
    bars = [market.minute_bars(s, [SYMBOL]) for s in sessions]
    minutes = {len(b) for b in bars}
    if len(minutes) != 1:
        raise ValueError(f"the days from {start} have different session lengths {sorted(minutes)} (an early close); "
                         "pick a --start whose days are all full sessions")
    return np.stack([((b["bid"] + b["ask"]) / 2).to_numpy() for b in bars])


def oracle_direction(mids: np.ndarray, chain: OptionChainTensors, config: SyntheticMarketConfig) -> np.ndarray:
    """float [D, S] in {-1, 0, 1}: sign(log mid(t) / mid(t - k)) at each snapshot, from minute mids up to it only.

    Snapshot s is taken at the end of minute bar (s + 1) * snapshot_minutes - 1; its underlying price is that
    bar's mid (checked here, so the oracle and the env read the same clock). 0 before k minutes have passed.
    """
    d, s = chain.underlying.shape
    bar = config.snapshot_minutes * np.arange(1, s + 1) - 1
    if not np.allclose(mids[:, bar], chain.underlying.double().numpy(), rtol=1e-6):
        raise AssertionError("the chain's underlying is not the minute mid at its snapshots: the clocks disagree")
    k = config.signal_minutes
    direction = np.zeros((d, s))
    known = bar >= k
    direction[:, known] = np.sign(np.log(mids[:, bar[known]] / mids[:, bar[known] - k]))
    return direction


def oracle_actions(direction: np.ndarray) -> np.ndarray:
    """int64 [D, S]: the long ATM call (up), put (down) or flat (0) of the nearest expiry. The env fills at
    snapshot s + 1, so an order at the second-to-last snapshot would fill at the close and be liquidated at
    once: flat there."""
    actions = np.where(direction > 0, ATM_CALL, np.where(direction < 0, ATM_PUT, FLAT))
    actions[:, -2:] = FLAT
    return actions


def signal_edge(direction: np.ndarray, chain: OptionChainTensors) -> dict[str, float]:
    """The oracle direction's mean underlying move per share: over the interval after the snapshot it was seen
    at (s to s + 1, out of reach: the env fills at s + 1) and over the interval its order is filled into and
    held (s + 1 to s + 2); and its sign flips per day (each is a round trip across two option spreads)."""
    move = np.diff(chain.underlying.double().numpy(), axis=1)
    acted = direction[:, :-2]  # the snapshots whose order is not liquidated at once
    flips = (acted[:, :-1] * acted[:, 1:] < 0).sum(1)
    return {"seen_interval_dollars_per_share": float((direction[:, :-1] * move).mean()),
            "fill_interval_dollars_per_share": float((direction[:, :-2] * move[:, 1:]).mean()),
            "flips_per_day": float(flips.mean())}


def walk(chain: OptionChainTensors, policy: Policy, config: OptionsTradingConfig) -> dict[str, Any]:
    """Every day of `chain` walked once under `policy` (`options_rules.walk`): net PnL and fees per day, in day
    order, and the share of decisions that were flat."""
    walked = walk_days(chain, policy, config)
    return {**summary(walked.pnl), "fees_per_day": walked.fees.round(2).tolist(), "flat_decisions": walked.flat_share}


def t_statistic(values: np.ndarray) -> float | None:
    """One-sample t statistic of the mean against 0; None with fewer than 2 values, 0 when they are all equal."""
    if len(values) < 2:
        return None
    sd = values.std(ddof=1)
    return 0.0 if sd == 0 else float(values.mean() / (sd / np.sqrt(len(values))))


def summary(per_day: np.ndarray) -> dict[str, Any]:
    return {"mean": float(per_day.mean()), "t": t_statistic(per_day), "per_day": per_day.round(2).tolist()}


def margin(policy: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Paired margin over a baseline on the same days: mean difference and its own t statistic."""
    diff = np.array(policy["per_day"]) - np.array(baseline["per_day"])
    return {"mean": float(diff.mean()), "t": t_statistic(diff)}


def atm_half_spread(chain: OptionChainTensors) -> dict[str, float]:
    """Average half-spread of the nearest expiry's ATM call and put (strike nearest the spot) over every quoted
    snapshot: as a fraction of mid and in dollars per contract (x100), with their average mid."""
    d, s, _, _ = chain.shape
    front = first_alive_expiry(chain)
    di, si = torch.meshgrid(torch.arange(d), torch.arange(s), indexing="ij")
    atm = (chain.strike[di, front] - chain.underlying[..., None]).abs().argmin(-1)
    bid, ask, mid = (x[di, si, front, atm].double() for x in (chain.bid, chain.ask, chain.mid))
    ok = chain.quoted[di, si, front, atm] & (mid > 0)
    half = (ask - bid)[ok] / 2
    return {"fraction_of_mid": float((half / mid[ok]).mean()), "dollars_per_contract": float(half.mean() * 100),
            "mid_dollars_per_contract": float(mid[ok].mean() * 100)}


def at_mid(chain: OptionChainTensors) -> OptionChainTensors:
    """The chain quoted at its mid (bid = ask = mid): crossing the spread costs nothing."""
    return replace(chain, bid=chain.mid.clone(), ask=chain.mid.clone())


def agent_policy(agent: CLSTMPPO) -> Policy:
    return lambda obs, env: agent.predict(obs.numpy())[0]


def run_alpha(alpha: float, args: argparse.Namespace, costs: OptionsTradingConfig) -> dict[str, Any]:
    """Every policy out of sample on one market (planted signal `alpha`)."""
    started = time.perf_counter()
    days = args.train_days + args.test_days
    market_config = SyntheticMarketConfig(alpha=alpha)
    chain = synthetic_chain_tensors(days=days, symbol=SYMBOL, start=args.start, alpha=alpha)
    mids = underlying_minute_mids(SyntheticMarket(market_config), args.start, days)
    test_days = range(args.train_days, days)
    test = chain_days(chain, test_days)
    direction = oracle_direction(mids[args.train_days:], test, market_config)
    oracle = torch.as_tensor(oracle_actions(direction))
    rng = np.random.default_rng(args.seed)
    action_dim = len(OptionsTradingEnv(test, config=costs).strategies)

    def oracle_policy(obs: torch.Tensor, env: OptionsTradingEnv) -> np.ndarray:
        return oracle[env.day, env.snap].numpy()

    results: dict[str, Any] = {
        "flat": walk(test, lambda obs, env: np.full(env.num_envs, FLAT), costs),
        "random": walk(test, lambda obs, env: rng.integers(0, action_dim, env.num_envs), costs),
        "oracle": walk(test, oracle_policy, costs),
    }
    frictionless = replace(costs, fee_per_contract=0.0, fee_per_share=0.0, underlying_half_spread_bps=0.0)
    results["oracle_at_mid_no_fees"] = walk(at_mid(test), oracle_policy, frictionless)
    train_started = time.perf_counter()
    train_env = OptionsTradingEnv(chain_days(chain, range(args.train_days)), num_envs=args.num_envs, config=costs)
    agent = CLSTMPPO(train_env, PPOConfig.preset("small_budget", torch_threads=args.threads, seed=args.seed))
    agent.learn(args.steps)
    train_seconds = time.perf_counter() - train_started
    results["agent"] = walk(test, agent_policy(agent), costs)
    margins = {f"{name}_vs_{base}": margin(results[name], results[base])
               for name in ("agent", "oracle") for base in ("flat", "random")}
    margins["agent_vs_oracle"] = margin(results["agent"], results["oracle"])
    return {"alpha": alpha, "policies": results, "margins": margins, "atm_half_spread": atm_half_spread(test),
            "oracle_signal_edge": signal_edge(direction, test),
            "train_seconds": train_seconds, "seconds": time.perf_counter() - started}


def session_dates(start: str, days: int) -> list[str]:
    """The ISO dates of the first `days` trading days from `start` (the days `synthetic_chain_tensors` builds)."""
    first = date.fromisoformat(start)
    return [d.isoformat() for d in trading_days(first, first + timedelta(days=7 * days + 7))[:days]]


def run_premium(iv_premium: float, args: argparse.Namespace) -> dict[str, Any]:
    """The volatility-premium controls on one market: CLSTM-PPO (action set 91) trained on the first days, then it
    and the options baselines (`options_rules`) walk the test days; the gate of `options_runner.options_gate`
    (beats flat and the short straddle, each interval above 0) on them."""
    started = time.perf_counter()
    days = args.premium_train_days + args.premium_test_days
    costs = OptionsTradingConfig(action_set=BASELINE_ACTION_SET)
    chain = synthetic_chain_tensors(days=days, symbol=SYMBOL, start=args.premium_start, iv_premium=iv_premium)
    test = chain_days(chain, range(args.premium_train_days, days))
    dates = session_dates(args.premium_start, days)[args.premium_train_days:]
    walks = walk_baselines(test, args.seed, costs)
    train_env = OptionsTradingEnv(chain_days(chain, range(args.premium_train_days)), num_envs=args.num_envs,
                                  config=costs)
    agent = CLSTMPPO(train_env, PPOConfig.preset("small_budget", torch_threads=args.threads, seed=args.seed))
    agent.learn(args.steps)
    walks["agent"] = walk_days(test, agent_policy(agent), costs)
    policies = {name: {**summary(w.pnl), "fees_per_day": w.fees.round(2).tolist(), "flat_decisions": w.flat_share}
                for name, w in walks.items()}
    returns = pl.concat([day_rows(test, dates, "candidate" if name == "agent" else name, w)
                         for name, w in walks.items()])
    promoted, comparisons = options_gate(returns, PromotionPolicy(n_boot=args.n_boot, seed=args.seed))
    margins = {f"{name}_vs_{base}": margin(policies[name], policies[base])
               for name in ("agent", "straddle_oracle") for base in ("flat", "short_straddle")}
    return {"iv_premium": iv_premium, "test_days": dates, "policies": policies, "margins": margins,
            "gate": {"promoted": promoted, "comparisons": [asdict(c) for c in comparisons]},
            "seconds": time.perf_counter() - started}


def premium_controls(args: argparse.Namespace) -> dict[str, Any]:
    """Positive: at the default premium the agent beats flat and the straddle rule (paired t > 2 each); negative:
    at iv_premium 0 the gate does not promote it."""
    default, fair = (run_premium(p, args) for p in (SyntheticMarketConfig().iv_premium, 0.0))
    t_flat, t_straddle = (default["margins"][f"agent_vs_{b}"]["t"] or 0.0 for b in ("flat", "short_straddle"))
    return {"markets": [default, fair],
            "positive_control": {"agent_vs_flat_t": t_flat, "agent_vs_short_straddle_t": t_straddle,
                                 "passed": t_flat > 2 and t_straddle > 2},
            "negative_control": {"promoted": fair["gate"]["promoted"], "passed": not fair["gate"]["promoted"]}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-days", type=int, default=6)
    parser.add_argument("--test-days", type=int, default=4)
    parser.add_argument("--start", default="2024-07-08",
                        help="first trading day (its days must be full sessions: 2024-07-03 closes early)")
    parser.add_argument("--steps", type=int, default=300_000, help="CLSTM-PPO training env steps per alpha")
    parser.add_argument("--num-envs", type=int, default=NUM_ENVS, help="training envs")
    parser.add_argument("--seed", type=int, default=0, help="agent seed and the random policy's seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--controls", choices=("alpha", "premium", "both"), default="both",
                        help="the planted-alpha controls, the volatility-premium controls, or both")
    parser.add_argument("--premium-train-days", type=int, default=40)
    parser.add_argument("--premium-test-days", type=int, default=20, help="days the premium controls are judged on")
    parser.add_argument("--premium-start", default="2024-01-02", help="first day of the premium controls")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the premium gate")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    costs = OptionsTradingConfig()
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "options_controls",
        "env": f"OptionsTrading (action_set {costs.action_set}) on the embedded SyntheticMarket's {SYMBOL} chain",
        "args": vars(args),
        "env_default_costs": {name: value for name, value in asdict(costs).items()
                              if name in ("fee_per_contract", "fee_per_share", "underlying_half_spread_bps")},
        "oracle_actions": {"call": ATM_CALL, "put": ATM_PUT, "flat": FLAT},
        "platform": platform.platform(),
        "device_name": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
    }
    if args.controls in ("alpha", "both"):
        result["alphas"] = [run_alpha(alpha, args, costs) for alpha in (0.0, PLANTED_ALPHA)]
    if args.controls in ("premium", "both"):
        result["premium"] = premium_controls(args)
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
