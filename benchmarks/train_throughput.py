"""Training throughput on IntradayTrading: CLSTM-PPO (rollout + update, env-steps/s) vs SB3 PPO in the same run,
and, where dagster is installed, the `clstm_ppo_policy` asset end to end (dataset asset, Pipes start-up, the
trainer process, registration) against the bare trainer on the same dataset and budget.

Both agents train on the intraday env's default training settings (`DEFAULT_INTRADAY`: 8-bar windows, whole-day
episodes). CLSTM-PPO runs the preset a run of this device gets (`preset_for_budget`: small_budget, scaled to the env count as a training run scales it) with its
network; --hidden, --num-steps and --num-minibatches override the preset's values. SB3 PPO is MlpPolicy with
its defaults except the rollout length, batch and one epoch.

Prints ONE JSON object. Needs torch, numpy and polars (+ gymnasium): the market (`--market auto`) is the embedded
SyntheticMarket, or with `--market numpy` its batched arrays (same planted signal, every day drawn at once), and
the SB3 part is skipped with a note when stable-baselines3 is not installed (e.g. on the GPU machine).

    python benchmarks/train_throughput.py                                  # CPU figures
    python benchmarks/train_throughput.py --device cuda --num-envs 4096 --hidden 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._shared import stdout_to_stderr  # noqa: E402
from pipeline.agents.clstm_ppo import CLSTMPPO  # noqa: E402
from pipeline.agents.ppo_config import PPOConfig, preset_for_budget, scaled_to_batch  # noqa: E402
from pipeline.envs.intraday import IntradayTradingEnv  # noqa: E402
from pipeline.envs.tensors import embedded_market_available, synthetic_market_tensors  # noqa: E402
from pipeline.training.run import DEFAULT_INTRADAY  # noqa: E402


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (the trainer process of the asset).

    Beside the wall-clock figures: on a shared machine other work stretches wall time, not CPU time."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def clstm_config(args: argparse.Namespace) -> PPOConfig:
    """The preset of this device (or --preset) with the flags that override it."""
    # As a training run gets it: the preset scaled to the env count (TrainingRun.build), then the flags.
    overrides = scaled_to_batch(args.preset, args.num_envs)
    overrides.update({name: getattr(args, name) for name in ("hidden", "num_steps", "num_minibatches")
                      if getattr(args, name) is not None})
    return PPOConfig.preset(args.preset, device=args.device, seed=0, critic_warmup_rollouts=1,
                            critic_warmup_epochs=1, compile=args.compile, **overrides)


def clstm_ppo_throughput(args: argparse.Namespace, market: Any) -> dict[str, Any]:
    """Env-steps/s of CLSTMPPO.learn (rollout + PPO/critic epochs), after one untimed warm-up update."""
    env = IntradayTradingEnv(market, num_envs=args.num_envs, config=DEFAULT_INTRADAY, device=args.device)
    config = clstm_config(args)
    agent = CLSTMPPO(env, config)
    per_update = config.num_steps * args.num_envs
    agent.learn(2 * per_update)  # warm-up rollout + one update: allocations, cuDNN plans, compile
    if agent.device.type == "cuda":
        torch.cuda.synchronize()
    started, cpu = time.perf_counter(), cpu_seconds()
    agent.learn(args.updates * per_update, reset_num_timesteps=False)
    if agent.device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {
        "env_steps_per_s": args.updates * per_update / seconds,
        "env_steps": args.updates * per_update,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "env_steps_per_cpu_s": args.updates * per_update / cpu,
        "updates": args.updates,
        "preset": args.preset,
        "num_steps": config.num_steps,
        "hidden": config.hidden,
        "num_minibatches": config.num_minibatches,
        "policy_epochs": config.policy_epochs,
        "extra_critic_epochs": config.extra_critic_epochs,
        "parameters": sum(p.numel() for p in agent.policy.parameters()),
        "last_update_sps": agent.history[-1]["charts/SPS"],
    }


def sb3_throughput(args: argparse.Namespace, market: Any) -> dict[str, Any]:
    """Env-steps/s of SB3 PPO (MlpPolicy) on a DummyVecEnv of the gymnasium adapter, same market."""
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import DummyVecEnv
    except ImportError:
        return {"skipped": "stable-baselines3 is not installed here; run on a machine with it for the ratio"}
    from pipeline.envs.gym_adapter import make_intraday_gym

    cpu_market = market.to("cpu")
    vec = DummyVecEnv([lambda: make_intraday_gym(cpu_market, DEFAULT_INTRADAY) for _ in range(args.sb3_envs)])
    n_steps = max(8, args.sb3_steps // args.sb3_envs // 2)
    model = PPO("MlpPolicy", vec, n_steps=n_steps, batch_size=n_steps * args.sb3_envs // 4, n_epochs=1,
                device="cpu", seed=0, verbose=0)
    model.learn(n_steps * args.sb3_envs)  # warm-up
    started, cpu = time.perf_counter(), cpu_seconds()
    model.learn(args.sb3_steps, reset_num_timesteps=False)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"env_steps_per_s": args.sb3_steps / seconds, "env_steps": args.sb3_steps, "seconds": seconds,
            "cpu_seconds": cpu, "env_steps_per_cpu_s": args.sb3_steps / cpu, "num_envs": args.sb3_envs,
            "n_steps": n_steps, "device": "cpu"}


def asset_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Env-steps/s of `dg.materialize` of `training_dataset` + `clstm_ppo_policy` for one day (Pipes) vs
    CLSTMPPO.learn in this process on the same saved dataset, preset and budget. Ingest and features of the
    window are built first and not timed."""
    try:
        import dagster as dg
    except ImportError:
        return {"skipped": "dagster is not installed here"}
    import tempfile

    from pipeline.contract.calendar import earlier_trading_days
    from pipeline.training.dataset import DatasetConfig

    day, steps = "2024-07-05", args.asset_steps
    with tempfile.TemporaryDirectory() as root:
        os.environ.update(PIPELINE_DATA_LAKE=f"{root}/lake", PIPELINE_SYNTHETIC_SYMBOLS="SPY,QQQ",
                          PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES="390")
        from pipeline.definitions import build_definitions
        from pipeline.training.run import DatasetData, TrainingRun
        from resources.compute import ComputeResource
        from resources.sources import MarketDataResource
        from resources.warehouse import WarehouseResource

        assets = list(build_definitions().assets)
        groups = {a: set(a.group_names_by_key.values()) for a in assets}
        # The training dataset's window: every day of it ingested and featurized first.
        window = [*earlier_trading_days(date.fromisoformat(day), DatasetConfig().window_days - 1),
                  date.fromisoformat(day)]
        tags = {"dagster/asset_partition_range_start": window[0].isoformat(),
                "dagster/asset_partition_range_end": window[-1].isoformat()}
        data = [a for a in assets if groups[a] & {"ingest", "features"}]
        dg.materialize(data, tags=tags, resources={"warehouse": WarehouseResource(),
                                                   "market_data": MarketDataResource()})
        compute = ComputeResource(total_timesteps=steps, torch_threads=args.threads or None)
        resources = {"warehouse": WarehouseResource(), "compute": compute,
                     "pipes_subprocess_client": dg.PipesSubprocessClient()}
        started, cpu = time.perf_counter(), cpu_seconds()
        clstm = [a for a in assets if a.key.path[-1] in ("training_dataset", "clstm_ppo_policy")]
        with stdout_to_stderr():  # the trainer process prints its RESULT line: stdout carries only this JSON
            run = dg.materialize(clstm, resources=resources, partition_key=day)
        asset_seconds, asset_cpu = time.perf_counter() - started, cpu_seconds() - cpu
        assert run.success
        # The same run without Dagster, Pipes, the subprocess or the selection walk.
        bare = TrainingRun.build(DatasetData(f"{root}/lake/artifacts/datasets/{day}"), total_timesteps=steps,
                                 device=compute.resolved_device(), agent={"torch_threads": args.threads or None},
                                 selection_envs=0)
        started, cpu = time.perf_counter(), cpu_seconds()
        CLSTMPPO(bare.train_env(), bare.agent_config()).learn(steps)
        bare_seconds, bare_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {
        "env_steps": steps,
        "preset": bare.preset,
        "asset_end_to_end_env_steps_per_s": steps / asset_seconds,
        "asset_seconds": asset_seconds,
        "bare_trainer_env_steps_per_s": steps / bare_seconds,
        "bare_seconds": bare_seconds,
        "ratio_asset_over_bare": bare_seconds / asset_seconds,
        "asset_cpu_seconds": asset_cpu,
        "bare_cpu_seconds": bare_cpu,
        "ratio_asset_over_bare_cpu": bare_cpu / asset_cpu,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--preset", default=None, help="CLSTM-PPO preset (default: the one a training "
                        "run on --device gets, scaled to --num-envs)")
    parser.add_argument("--hidden", type=int, default=None, help="network width (default: the preset's)")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="rollout length per env per update (default: the preset's)")
    parser.add_argument("--num-minibatches", type=int, default=None, help="default: the preset's")
    parser.add_argument("--updates", type=int, default=3, help="timed updates")
    parser.add_argument("--days", type=int, default=4, help="days of the synthetic market")
    parser.add_argument("--market", choices=("auto", "numpy", "market"), default="auto",
                        help="synthetic market: embedded SyntheticMarket, its numpy arrays, or auto (the "
                        "embedded one where exchange_calendars is installed, else numpy)")
    parser.add_argument("--compile", action="store_true", help="torch.compile encoder and heads")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: small LSTMs gain little from more, and shared "
                        "machines lose a lot to oversubscription); 0 leaves torch's default")
    parser.add_argument("--sb3-envs", type=int, default=8)
    parser.add_argument("--sb3-steps", type=int, default=4096)
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--asset-steps", type=int, default=65_536,
                        help="env steps of the training-asset vs bare-trainer comparison (0 skips it)")
    args = parser.parse_args(argv)
    # The preset a run of this device gets (small_budget on every device until gpu_long is measured to learn).
    args.preset = args.preset or preset_for_budget(args.asset_steps or 1, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = args.market if args.market != "auto" else ("market" if embedded_market_available() else "numpy")
    market = synthetic_market_tensors(days=args.days, alpha=0.1, seed=0, source=source, device=args.device)
    result: dict[str, Any] = {
        "benchmark": "train_throughput",
        "env": "IntradayTrading on the " + ("embedded SyntheticMarket" if source == "market" else "numpy synthetic market"),
        "market": source,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
        or platform.machine(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "num_envs": args.num_envs,
        "obs_shape": list(IntradayTradingEnv(market, num_envs=1, config=DEFAULT_INTRADAY).obs_shape),
        "clstm_ppo": clstm_ppo_throughput(args, market),
    }
    result["sb3_ppo"] = {"skipped": "--skip-sb3"} if args.skip_sb3 else sb3_throughput(args, market)
    sb3 = result["sb3_ppo"].get("env_steps_per_s")
    result["ratio_clstm_over_sb3"] = result["clstm_ppo"]["env_steps_per_s"] / sb3 if sb3 else None
    sb3_cpu = result["sb3_ppo"].get("env_steps_per_cpu_s")
    result["ratio_clstm_over_sb3_cpu"] = result["clstm_ppo"]["env_steps_per_cpu_s"] / sb3_cpu if sb3_cpu else None
    result["training_asset"] = asset_throughput(args) if args.asset_steps else {"skipped": "--asset-steps 0"}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
