"""Env steps per second of the batched trading envs, and of the same envs one by one under SB3's DummyVecEnv.

Prints ONE JSON object: for each env (intraday, portfolio on 4 symbols, portfolio_30 on 30 symbols, options) the
batched steps/s at 1..4096 envs on `--device` (256 and 4096 always), how throughput scales from 256 to 4096 envs
(goal: >= 1, a step costs no more per env at 4096 than at 256), the steps/s of 256 gymnasium adapters under
DummyVecEnv (CPU; gymnasium's SyncVectorEnv where SB3 is not installed), and their ratio at 256 envs, measured in
the same run.
Needs torch, numpy, polars and gymnasium (no SB3, duckdb or dagster): the market (`--market auto`) is the embedded
SyntheticMarket, or with `--market numpy` its batched arrays (same planted signal, every day drawn at once).

    python benchmarks/env_throughput.py [--device cuda] [--sizes 1 64 256 1024 4096] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.envs.gym_adapter import make_intraday_gym, make_portfolio_gym  # noqa: E402
from pipeline.envs.intraday import IntradayTradingEnv  # noqa: E402
from pipeline.envs.options import OptionsTradingEnv  # noqa: E402
from pipeline.envs.options_chain import black_scholes_chain  # noqa: E402
from pipeline.envs.options_gym import make_options_gym  # noqa: E402
from pipeline.envs.portfolio import PortfolioAllocationEnv  # noqa: E402
from pipeline.envs.tensors import (  # noqa: E402
    MarketTensors,
    embedded_market_available,
    synthetic_market_tensors,
)

VEC_ENVS = 256
SCALED_ENVS = 4096
GOAL_RATIO = 50.0
GOAL_SCALING = 1.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_rate(
    step: Callable[[int], None], work_per_call: int, calls: int, chunks: int, sync: Callable[[], None]
) -> float:
    """Best work/s over `chunks` timed runs of `calls` calls: the machine is shared, so the fastest chunk is the
    one least disturbed by other processes."""
    best, i = 0.0, 0
    for _ in range(chunks):
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            step(i)
            i += 1
        sync()
        best = max(best, calls * work_per_call / (time.perf_counter() - start))
    return best


def batched_steps_per_s(env: Any, seconds: float, chunks: int) -> float:
    """Steps of all envs per second, after a warm-up, with random actions pre-drawn on the device."""
    n, device = env.num_envs, env.device
    gen = torch.Generator(device=device).manual_seed(0)
    if env.discrete:
        pool = torch.randint(env.action_dim, (64, n), generator=gen, device=device)
    else:
        pool = torch.rand((64, n, env.action_dim), generator=gen, device=device) * 2 - 1
    env.reset(seed=0)

    def sync() -> None:
        _sync(device)

    start = time.perf_counter()
    for i in range(10):
        env.step(pool[i])
    sync()
    per_step = (time.perf_counter() - start) / 10
    calls = max(int(seconds / chunks / per_step), 10)
    return best_rate(lambda i: env.step(pool[i % 64]), n, calls, chunks, sync)


def vec_env_steps_per_s(make_gym: Callable[[], Any], total_steps: int, chunks: int) -> tuple[float, str]:
    """Steps/s of VEC_ENVS single gymnasium envs stepped one by one (SB3 DummyVecEnv, else SyncVectorEnv)."""
    try:
        from stable_baselines3.common.vec_env import DummyVecEnv
    except ImportError:
        import gymnasium as gym

        vec: Any = gym.vector.SyncVectorEnv([make_gym] * VEC_ENVS)
        vec.reset(seed=0)
        impl = "gymnasium.vector.SyncVectorEnv"
    else:
        vec = DummyVecEnv([make_gym] * VEC_ENVS)
        vec.seed(0)
        vec.reset()
        impl = "stable_baselines3.DummyVecEnv"
    space = getattr(vec, "single_action_space", vec.action_space)  # gymnasium's action_space is batched
    actions = [np.stack([space.sample() for _ in range(VEC_ENVS)]) for _ in range(4)]
    vec.step(actions[0])
    calls = max(total_steps // VEC_ENVS // chunks, 1)
    rate = best_rate(lambda i: vec.step(actions[i % 4]), VEC_ENVS, calls, chunks, lambda: None)
    vec.close()
    return rate, impl


def env_builders(
    device: torch.device, source: str = "numpy"
) -> dict[str, tuple[Callable[[int], Any], Callable[[], Any]]]:
    """Per env name: (batched env of n envs on `device`, one gymnasium env on the CPU); each market is built on
    first use and shared by both."""

    @cache
    def market(symbols: int, where: str) -> MarketTensors:
        names = ("AAA", "BBB", "CCC", "DDD") if symbols == 4 else tuple(f"S{i:02d}" for i in range(symbols))
        built = synthetic_market_tensors(days=8, alpha=0.1, seed=0, symbols=names, source=source)
        return built.to(device if where == "device" else "cpu")

    chain = black_scholes_chain(days=8, seed=0)
    return {
        "intraday": (
            lambda n: IntradayTradingEnv(market(4, "device"), num_envs=n, device=device),
            lambda: make_intraday_gym(market=market(4, "cpu")),
        ),
        "portfolio": (
            lambda n: PortfolioAllocationEnv(market(4, "device"), num_envs=n, device=device),
            lambda: make_portfolio_gym(market=market(4, "cpu")),
        ),
        "portfolio_30": (
            lambda n: PortfolioAllocationEnv(market(30, "device"), num_envs=n, device=device),
            lambda: make_portfolio_gym(market=market(30, "cpu")),
        ),
        "options": (
            lambda n: OptionsTradingEnv(chain, num_envs=n, device=device),
            lambda: make_options_gym(chain=chain),
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="cpu", help="torch device of the batched envs (cpu, cuda, cuda:1)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 256, 1024, 4096])
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per batched measurement")
    parser.add_argument("--vec-steps", type=int, default=4096, help="env steps timed under DummyVecEnv")
    parser.add_argument(
        "--chunks", type=int, default=4, help="timed chunks per measurement; the best one counts"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (small ops: 1 is fastest)")
    parser.add_argument("--envs", nargs="+", default=None,
                        help="subset of intraday, portfolio, portfolio_30, options")
    parser.add_argument("--market", choices=("auto", "numpy", "market"), default="auto",
                        help="synthetic market: embedded SyntheticMarket, its numpy arrays, or auto (the "
                        "embedded one where exchange_calendars is installed, else numpy)")
    args = parser.parse_args(argv)
    source = args.market if args.market != "auto" else ("market" if embedded_market_available() else "numpy")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA GPU; use --device cpu")
    sizes = sorted(set(args.sizes) | {VEC_ENVS, SCALED_ENVS})
    builders = env_builders(device, source)
    unknown = set(args.envs or []) - set(builders)
    if unknown:
        parser.error(f"unknown or unavailable envs {sorted(unknown)}; choose from {sorted(builders)}")
    results: dict[str, Any] = {}
    for name, (make_batched, make_gym) in builders.items():
        if args.envs and name not in args.envs:
            continue
        batched = {
            str(n): round(batched_steps_per_s(make_batched(n), args.seconds, args.chunks)) for n in sizes
        }
        vec_rate, impl = vec_env_steps_per_s(make_gym, args.vec_steps, args.chunks)
        results[name] = {
            "batched_steps_per_s": batched,
            "vec_env_256_steps_per_s": round(vec_rate),
            "vec_env": impl,
            "ratio_batched_over_vec_env_at_256": round(batched[str(VEC_ENVS)] / vec_rate, 1),
            "scaling_4096_over_256": round(batched[str(SCALED_ENVS)] / batched[str(VEC_ENVS)], 2),
        }
    report = {
        "benchmark": "env_throughput",
        "device": str(device),
        "market": source,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "timing": f"best of {args.chunks} chunks per figure",
        "torch": torch.__version__,
        "goal_ratio_at_256": GOAL_RATIO,
        "goal_scaling_4096_over_256": GOAL_SCALING,
        "envs": results,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
