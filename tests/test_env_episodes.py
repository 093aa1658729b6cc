"""Episode semantics shared by the three trading envs: the close is terminated, the evaluation walk, multi-day
episodes (daily bars included), exact resume from state_dict, and orders that cannot fill (untradable bars,
unquoted contracts)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.envs.base import ResumableEnv
from pipeline.envs.episodes import EpisodeSchedule
from pipeline.envs.intraday import FLAT, HOLD, LONG, IntradayConfig, IntradayTradingEnv
from pipeline.envs.options import OptionsTradingConfig, OptionsTradingEnv
from pipeline.envs.options_actions import action_index
from pipeline.envs.options_chain import black_scholes_chain
from pipeline.envs.portfolio import PortfolioAllocationEnv, PortfolioConfig
from pipeline.envs.tensors import MarketTensors, synthetic_market_tensors

NO_STOPS = IntradayConfig(loss_cut=None, profit_lock=None, window=3)


def small_market(days: int = 3, symbols: int = 2, minutes: int = 6) -> MarketTensors:
    return synthetic_market_tensors(days=days, minutes=minutes, symbols=tuple(f"S{i}" for i in range(symbols)),
                                    alpha=0.1, seed=4)


def make_env(name: str, num_envs: int, **config: Any) -> Any:
    if name == "intraday":
        return IntradayTradingEnv(small_market(), num_envs, IntradayConfig(loss_cut=None, profit_lock=None,
                                                                           window=3, **config))
    if name == "portfolio":
        return PortfolioAllocationEnv(small_market(), num_envs, PortfolioConfig(window=3, **config))
    return OptionsTradingEnv(black_scholes_chain(days=3, snapshots=5, seed=2), num_envs,
                             OptionsTradingConfig(window=3, **config))


def actions_for(env: Any, steps: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if env.discrete:
        return [torch.randint(env.action_dim, (env.num_envs,), generator=gen) for _ in range(steps)]
    return [torch.rand(env.num_envs, env.action_dim, generator=gen) * 2 - 1 for _ in range(steps)]


def episode_key(env: Any, info: dict[str, Any], i: int) -> tuple[int, ...]:
    """(day, symbol) of env i's step (day only where the env has no symbol axis)."""
    symbol = info.get("symbol")
    return (int(info["day"][i]),) if symbol is None else (int(info["day"][i]), int(symbol[i]))


ENVS = ["intraday", "portfolio", "options"]


@pytest.mark.parametrize("name", ENVS)
def test_the_close_terminates_and_nothing_truncates(name: str) -> None:
    env = make_env(name, num_envs=3)
    env.reset(seed=0)
    steps = [env.step(a) for a in actions_for(env, 5)]  # one whole 6-bar (5-snapshot: 4-step) session and more
    first_done = min(t for t, s in enumerate(steps) if bool(s[2].any()))
    terminated = torch.stack([s[2] for s in steps])
    assert first_done == (3 if name == "options" else 4)
    assert terminated[first_done].all() and not terminated[:first_done].any()
    assert not any(bool(s[3].any()) for s in steps)


@pytest.mark.parametrize("name", ENVS)
def test_evaluation_walks_every_episode_once_in_time_order(name: str) -> None:
    def walk() -> tuple[list[tuple[int, ...]], list[torch.Tensor]]:
        env = make_env(name, num_envs=4, evaluation=True)
        _, reset_info = env.reset(seed=0)
        assert reset_info["episode_id"].tolist() == [0, 1, 2, 3][: env.episodes.num_episodes] + [-1] * max(
            0, 4 - env.episodes.num_episodes)
        seen: dict[int, tuple[int, ...]] = {}
        rewards = []
        for action in actions_for(env, 100):
            if bool(env.eval_finished):
                break
            _, reward, terminated, truncated, info = env.step(action)
            rewards.append(reward)
            assert not truncated.any()
            for i in torch.nonzero(terminated).flatten().tolist():
                episode = int(info["episode_id"][i])
                if episode < 0:
                    assert float(reward[i]) == 0.0  # an idle env stays done and earns nothing
                    continue
                assert episode not in seen
                seen[episode] = episode_key(env, info, i)
        assert bool(env.eval_finished) and (env.episodes.episode_id == -1).all()
        return [seen[e] for e in sorted(seen)], rewards

    order, rewards = walk()
    days = 3
    every = [(d,) for d in range(days)] if name != "intraday" else [(d, s) for d in range(days) for s in range(2)]
    assert order == every  # each (day, symbol) once, in time order
    again, rewards_again = walk()
    assert again == order and all(torch.equal(a, b) for a, b in zip(rewards, rewards_again, strict=True))


def test_evaluation_deals_episodes_to_envs_in_env_order() -> None:
    schedule = EpisodeSchedule(torch.tensor([5, 5, 5]), num_symbols=2, num_envs=4, evaluation=True)
    schedule.restart()
    assert schedule.episode_id.tolist() == [0, 1, 2, 3] and schedule.day.tolist() == [0, 0, 1, 1]
    schedule.start(torch.tensor([False, True, False, True]))
    assert schedule.episode_id.tolist() == [0, 4, 2, 5] and schedule.day.tolist() == [0, 2, 1, 2]
    schedule.start(torch.tensor([True, False, True, False]))
    assert schedule.episode_id.tolist() == [-1, 4, -1, 5] and not bool(schedule.finished)
    schedule.start(torch.tensor([False, True, False, True]))
    assert bool(schedule.finished)


def test_training_draws_multi_day_episodes_that_fit_in_the_market() -> None:
    schedule = EpisodeSchedule(torch.tensor([3] * 6), num_symbols=1, num_envs=512, episode_days=4)
    schedule.restart(seed=0)
    assert set(schedule.day.tolist()) == {0, 1, 2} and torch.equal(schedule.end_day, schedule.day + 3)
    with pytest.raises(ValueError, match="episode_days=7 exceeds the 6 trading days"):
        EpisodeSchedule(torch.tensor([3] * 6), num_symbols=1, num_envs=1, episode_days=7)
    with pytest.raises(ValueError, match="episode_days >= 2"):
        EpisodeSchedule(torch.tensor([1] * 6), num_symbols=1, num_envs=1)
    # Evaluation blocks: a last block too short to step through joins the block before it.
    walk = EpisodeSchedule(torch.tensor([1] * 5), num_symbols=1, num_envs=2, episode_days=2, evaluation=True)
    walk.restart()
    assert walk.day.tolist() == [0, 2] and walk.end_day.tolist() == [1, 4]


def ragged_days() -> MarketTensors:
    """Three days of one symbol with 4, 3 and 5 bars (padded to 5): mid 100 + bar + 10 * day, 2-cent spread."""
    sessions = [4, 3, 5]
    mid = np.array([[100.0 + t + 10 * d for t in range(5)] for d in range(3)])[:, :, None]
    return MarketTensors.from_arrays(mid - 0.01, mid + 0.01, session_minutes=sessions)


@pytest.mark.parametrize("carry", [False, True])
def test_intraday_episode_runs_from_a_close_to_the_next_open(carry: bool) -> None:
    cfg = IntradayConfig(loss_cut=None, profit_lock=None, window=3, fee_per_share=0.0, slippage_bps=0.0,
                         trade_size=1.0, reward_scale=1.0, reward_clip=1e9, episode_days=2, evaluation=True,
                         carry_overnight=carry)
    env = IntradayTradingEnv(ragged_days(), num_envs=1, config=cfg)
    env.reset(seed=0)
    steps, total_reward = [], 0.0
    for _ in range(6):  # 4 + 3 bars: 6 steps
        _, reward, terminated, _, info = env.step(torch.tensor([LONG]))
        total_reward += float(reward[0])
        steps.append((int(info["day"][0]), int(info["minute"][0]), float(info["position"][0]), bool(terminated[0]),
                      float(info["pnl"][0])))
    assert [s[:2] for s in steps] == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]
    assert [s[3] for s in steps] == [False] * 5 + [True]
    # Bought at bar 1's ask 101.01, marked at mid: +1 a bar; the close flattens at 102.99 unless carried.
    if carry:
        assert [s[2] for s in steps] == [1.0] * 5 + [0.0]
        assert steps[3][4] == pytest.approx(110.0 - 101.01, abs=1e-4)  # the overnight gap is earned
    else:
        assert [s[2] for s in steps] == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
        assert steps[2][4] == pytest.approx(102.99 - 101.01, abs=1e-4)
        assert steps[3][4] == pytest.approx(102.99 - 101.01 - 0.01, abs=1e-4)  # rebought at the open's ask
    assert total_reward == pytest.approx(steps[-1][4], abs=1e-4)  # one episode PnL across the night


def test_portfolio_rebalances_daily_on_daily_bars() -> None:
    days = 12
    mid = 100.0 * np.cumprod(1 + 0.01 * np.sin(np.arange(days * 2)).reshape(days, 1, 2), axis=0)
    market = MarketTensors.from_arrays(mid, mid, session_minutes=[1] * days)  # one bar a day, no spread
    cfg = PortfolioConfig(window=4, weight_map="simplex", fee_per_share=0.0, slippage_bps=0.0, episode_days=6,
                          evaluation=True)
    env = PortfolioAllocationEnv(market, num_envs=1, config=cfg)
    env.reset(seed=0)
    values, done = [], []
    for _ in range(5):
        _, _, terminated, _, info = env.step(torch.tensor([[1.0, -1.0, -1.0]]))  # all in the first symbol
        values.append(float(info["value"][0]))
        done.append(bool(terminated[0]))
    assert done == [False] * 4 + [True]
    # Into the first symbol at day 1's close, then carried through day 5's close.
    assert values[-1] == pytest.approx(mid[5, 0, 0] / mid[1, 0, 0], rel=1e-5)
    with pytest.raises(ValueError, match="episode_days >= 2"):
        PortfolioAllocationEnv(market, num_envs=1, config=PortfolioConfig())


@pytest.mark.parametrize("name", ENVS)
def test_state_dict_resumes_mid_episode_exactly(name: str) -> None:
    env = make_env(name, num_envs=5)
    env.reset(seed=3)
    assert isinstance(env, ResumableEnv)
    actions = actions_for(env, 20, seed=1)
    for action in actions[:7]:
        env.step(action)
    state = env.state_dict()
    assert state["episodes.generator"].dtype == torch.uint8

    def rest(e: Any) -> list[tuple[torch.Tensor, ...]]:
        out = []
        for action in actions[7:]:  # crosses episode ends: the restored generator draws the next episodes
            obs, reward, terminated, truncated, info = e.step(action)
            out.append((obs.clone(), reward, terminated, info["day"]))
        return out

    straight = rest(env)
    resumed = make_env(name, num_envs=5)
    resumed.reset(seed=99)
    resumed.load_state_dict(state)
    again = rest(resumed)
    assert any(bool(s[2].any()) for s in straight)
    for a, b in zip(straight, again, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_intraday_order_on_an_untradable_bar_does_not_fill() -> None:
    mid = np.array([100.0, 101.0, 102.0, 103.0, 104.0])[None, :, None]
    tradable = np.array([False, False, True, True, True])[None, :, None]
    market = MarketTensors.from_arrays(mid - 0.01, mid + 0.01, tradable=tradable)
    env = IntradayTradingEnv(market, num_envs=1, config=NO_STOPS)
    env.reset(seed=0)
    positions = [float(env.step(torch.tensor([a]))[4]["position"][0]) for a in (LONG, LONG, HOLD, FLAT)]
    assert positions == [0.0, 100.0, 100.0, 0.0]  # the first order would fill at bar 1: no quote yet


def test_a_position_carried_overnight_is_marked_at_its_last_quote_until_the_symbol_trades() -> None:
    mid = np.array([[100.0, 101.0, 102.0], [110.0, 111.0, 112.0]])[:, :, None]
    tradable = np.array([[True, True, True], [False, True, True]])[:, :, None]  # no quote at day 1's open yet
    market = MarketTensors.from_arrays(mid - 0.01, mid + 0.01, tradable=tradable)
    cfg = IntradayConfig(loss_cut=None, profit_lock=None, fee_per_share=0.0, slippage_bps=0.0, trade_size=1.0,
                         episode_days=2, carry_overnight=True, evaluation=True)
    env = IntradayTradingEnv(market, num_envs=1, config=cfg)
    env.reset(seed=0)
    pnl = [float(env.step(torch.tensor([LONG]))[4]["pnl"][0]) for _ in range(4)]
    # Bought at 101.01; day 1's open has no quote: still marked at day 0's close mid 102, then at 111.
    assert pnl == pytest.approx([-0.01, 0.99, 0.99, 9.99], abs=1e-4)


def test_portfolio_weight_on_an_untradable_symbol_goes_to_cash() -> None:
    mid = np.array([[100.0, 50.0], [101.0, 51.0], [102.0, 52.0], [103.0, 53.0]])[None]
    tradable = np.array([[True, False], [True, False], [True, True], [True, True]])[None]
    market = MarketTensors.from_arrays(mid - 0.01, mid + 0.01, tradable=tradable)
    env = PortfolioAllocationEnv(market, num_envs=1, config=PortfolioConfig(weight_map="simplex"))
    env.reset(seed=0)
    half = torch.tensor([[0.5, 0.5, 0.0]])
    first = env.step(half)[4]["weights"][0].tolist()
    second = env.step(half)[4]["weights"][0].tolist()
    assert first == pytest.approx([0.5, 0.0, 0.5]) and second == pytest.approx([0.5, 0.5, 0.0], abs=0.01)


def test_options_strategy_with_an_unquoted_leg_does_not_open() -> None:
    chain = black_scholes_chain(days=1, snapshots=4, seed=0)
    quoted = torch.ones(chain.bid.shape, dtype=torch.bool)
    quoted[:, :2, 0, :, 0] = False  # front-expiry calls have no quote before snapshot 2
    unquoted = replace(chain, quoted=quoted)
    env = OptionsTradingEnv(unquoted, num_envs=2, config=OptionsTradingConfig(action_set=91, window=2))
    env.reset(seed=0)
    straddle, put = action_index("long_straddle_e0"), action_index("long_put_k+0_e0")
    env.step(torch.tensor([straddle, put]))
    assert (env.qty[0] == 0).all() and float(env.cash[0]) == 0.0  # the call leg has no quote: nothing fills
    assert int((env.qty[1] != 0).sum()) == 1
    env.step(torch.tensor([straddle, put]))
    assert int((env.qty[0] != 0).sum()) == 2
