"""IntradayTrading: a hand-computed episode to the cent, next-bar fills, loss-cut/profit-lock, risk-off, autoreset,
batched == independent single-env runs, and no host sync inside step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from env_checks import assert_step_never_syncs

from pipeline.envs.intraday import FLAT, HOLD, LONG, SHORT, IntradayConfig, IntradayTradingEnv
from pipeline.envs.tensors import MarketTensors, synthetic_market_tensors

EXACT = IntradayConfig(
    window=2,
    fee_per_share=0.01,
    slippage_bps=0.0,
    loss_cut=None,
    profit_lock=None,
    reward_scale=1.0,
    reward_clip=1e6,
)


def one_day(bid: list[float], ask: list[float], **kwargs) -> MarketTensors:
    """One trading day of one symbol with the given closing quotes per bar."""
    return MarketTensors.from_arrays(np.array(bid)[None, :, None], np.array(ask)[None, :, None], **kwargs)


def snapshot(step: tuple) -> tuple:
    """A step's results with the obs and final obs copied out of the env's buffers (the next step reuses them)."""
    obs, reward, terminated, truncated, info = step
    return obs.clone(), reward, terminated, truncated, {**info, "final_obs": info["final_obs"].clone()}


def run(env: IntradayTradingEnv, actions: list[int]) -> list[tuple]:
    env.reset(seed=0)
    return [snapshot(env.step(torch.tensor([a]))) for a in actions]


def test_hand_computed_episode_matches_to_the_cent() -> None:
    market = one_day([100.00, 100.10, 100.50, 100.30, 100.20], [100.02, 100.12, 100.52, 100.34, 100.24])
    env = IntradayTradingEnv(market, num_envs=1, config=EXACT)
    steps = run(env, [LONG, HOLD, SHORT, HOLD])
    # LONG on bar 0 buys 100 at bar 1's ask 100.12 + $1 fee; marked at mid 100.11.
    # SHORT on bar 2 sells 200 at bar 3's bid 100.30 - $2; the close buys 100 back at bar 4's ask 100.24 - $1.
    expected = {
        "reward": [-2.00, 40.00, -25.00, 7.00],
        "cash": [-10013.00, -10013.00, 10045.00, 20.00],
        "pnl": [-2.00, 38.00, 13.00, 20.00],
        "position": [100, 100, -100, 0],
        "fees": [1.00, 1.00, 3.00, 4.00],
        "costs": [1.00, 1.00, 3.00, 4.00],
        "spread_paid": [1.00, 1.00, 5.00, 7.00],
        "fills": [1, 1, 2, 3],
    }
    got = {k: [float(s[4][k][0]) for s in steps] for k in expected if k != "reward"}
    got["reward"] = [float(s[1][0]) for s in steps]
    for key, values in expected.items():
        np.testing.assert_allclose(got[key], values, atol=0.005, err_msg=key)
    # The session close ends the episode for good: terminated, never truncated (nothing follows a flat close).
    assert [bool(s[2][0]) for s in steps] == [False, False, False, True]
    assert not any(bool(s[3][0]) for s in steps)
    assert sum(got["reward"]) == pytest.approx(got["pnl"][-1], abs=0.005)


def test_observation_is_the_last_window_of_bars_plus_agent_state() -> None:
    market = one_day([100.00, 100.10, 100.50, 100.30, 100.20], [100.02, 100.12, 100.52, 100.34, 100.24])
    env = IntradayTradingEnv(market, num_envs=1, config=EXACT)
    obs, _ = env.reset(seed=0)
    feats = market.features[0, :, 0]
    assert obs.shape == (1, 2, market.num_features + 4)
    assert torch.equal(obs[0, :, : market.num_features], feats[[0, 0]])  # bar 0 repeated before the open
    assert obs[0, :, -4:].abs().sum() == 0.0  # flat at the open, on both rows
    obs, *_ = env.step(torch.tensor([LONG]))
    obs, *_ = env.step(torch.tensor([HOLD]))
    assert torch.equal(obs[0, :, : market.num_features], feats[[1, 2]])
    # Each row holds the agent's state at its bar: position +1 unit, unrealized 100 * (mid - 100.12) / 100,
    # episode PnL / 100, time of day (bar 1: mid 100.11, PnL -2; bar 2: mid 100.51, PnL 38).
    expected = [[1.0, -0.01, -0.02, 0.25], [1.0, 0.39, 0.38, 0.5]]
    np.testing.assert_allclose(obs[0, :, -4:].numpy(), expected, atol=1e-4)


def test_slippage_is_charged_in_bps_of_the_quote() -> None:
    market = one_day([100.00, 100.10, 100.50], [100.02, 100.12, 100.52])
    env = IntradayTradingEnv(market, num_envs=1, config=IntradayConfig(fee_per_share=0.0, slippage_bps=10.0))
    ((_, _, _, _, info),) = run(env, [LONG])
    # Quotes are stored as float32: exact to a thousandth of a cent on 100 shares.
    assert float(info["slippage"][0]) == pytest.approx(100 * 100.12 * 0.001, abs=1e-3)
    assert float(info["cash"][0]) == pytest.approx(-100 * 100.12 * 1.001, abs=1e-3)


def test_fills_use_the_next_bar_never_the_observed_one() -> None:
    market = one_day([100.0, 200.0, 300.0, 400.0], [100.01, 201.0, 302.0, 403.0])
    cfg = IntradayConfig(fee_per_share=0.0, slippage_bps=0.0, loss_cut=None, profit_lock=None)
    env = IntradayTradingEnv(market, num_envs=2, config=cfg)
    env.reset(seed=0)
    _, _, _, _, info = env.step(torch.tensor([LONG, SHORT]))
    # Decided on bar 0 (100 / 100.01): the buy pays bar 1's ask, the sell gets bar 1's bid.
    assert info["cash"].tolist() == pytest.approx([-100 * 201.0, 100 * 200.0])
    _, _, _, _, info = env.step(torch.tensor([FLAT, FLAT]))
    assert info["cash"].tolist() == pytest.approx([-100 * 201.0 + 100 * 300.0, 100 * 200.0 - 100 * 302.0])


@pytest.mark.parametrize(
    ("step_size", "done_at", "final_pnl"),
    [(-0.60, 2, -122.00), (1.00, 3, 298.00)],
    ids=["loss_cut", "profit_lock"],
)
def test_loss_cut_and_profit_lock_terminate_and_flatten(
    step_size: float, done_at: int, final_pnl: float
) -> None:
    bid = [100.0 + step_size * t for t in range(10)]
    market = one_day(bid, [b + 0.02 for b in bid])
    env = IntradayTradingEnv(market, num_envs=1, config=IntradayConfig(fee_per_share=0.0, slippage_bps=0.0))
    steps = run(env, [LONG] + [HOLD] * 5)
    terminated = [bool(s[2][0]) for s in steps]
    assert terminated.index(True) == done_at
    info = steps[done_at][4]
    assert float(info["pnl"][0]) == pytest.approx(final_pnl, abs=0.005)
    assert float(info["position"][0]) == 0.0 and not bool(steps[done_at][3][0])


def test_turbulence_risk_off_blocks_new_exposure_and_closes_reversals() -> None:
    bid = [100.0, 100.1, 100.2, 100.3, 100.4, 100.5]
    turbulence = np.array([[0.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    market = one_day(bid, [b + 0.02 for b in bid], turbulence=turbulence)
    env = IntradayTradingEnv(market, num_envs=1, config=IntradayConfig(turbulence_threshold=1.0))
    steps = run(env, [LONG, SHORT, LONG, SHORT])
    assert [float(s[4]["position"][0]) for s in steps] == [100.0, 0.0, 0.0, 0.0]


def test_autoreset_returns_new_episode_and_final_obs() -> None:
    market = one_day([100.0, 100.5, 101.0], [100.02, 100.52, 101.02])
    cfg = IntradayConfig(loss_cut=None, profit_lock=None, slippage_bps=0.0)
    env = IntradayTradingEnv(market, num_envs=1, config=cfg)
    steps = run(env, [LONG, HOLD])
    obs, _, terminated, truncated, info = steps[-1]
    assert bool(terminated[0]) and not bool(truncated[0])
    assert float(info["final_obs"][0, -1, -1]) == 1.0  # the final obs is at the close
    assert obs[0, :, -4:].abs().sum() == 0.0  # the new episode: flat, no PnL, at the open
    assert int(env.minute[0]) == 0 and float(env.cash[0]) == 0.0
    assert float(info["pnl"][0]) == pytest.approx(100 * (101.0 - 100.52) - 2 * 100 * 0.005, abs=1e-3)


def test_batched_run_equals_independent_single_env_runs() -> None:
    market = synthetic_market_tensors(days=3, alpha=0.2, seed=3, symbols=("A", "B"), minutes=40)
    cfg = IntradayConfig(
        loss_cut=-20.0, profit_lock=30.0, turbulence_threshold=float(market.turbulence.median())
    )
    n = 8
    batched = IntradayTradingEnv(market, num_envs=n, config=cfg)
    obs, _ = batched.reset(seed=7)
    actions = torch.randint(0, 4, (40, n), generator=torch.Generator().manual_seed(1))
    episodes = list(zip(batched.day.tolist(), batched.symbol.tolist(), strict=True))
    first_obs = obs.clone()  # the obs is a view the next step overwrites
    results = [snapshot(batched.step(a)) for a in actions]
    for i, (day, sym) in enumerate(episodes):
        single = IntradayTradingEnv(market.subset([day], [sym]), num_envs=1, config=cfg)
        obs_i, _ = single.reset(seed=0)
        assert torch.equal(obs_i[0], first_obs[i])
        for t, (obs, reward, terminated, truncated, info) in enumerate(results):
            o, r, te, tr, inf = single.step(actions[t, i : i + 1])
            assert torch.equal(r[0], reward[i]) and bool(te[0]) == bool(terminated[i])
            assert bool(tr[0]) == bool(truncated[i]) and torch.equal(inf["pnl"][0], info["pnl"][i])
            if bool(te[0] | tr[0]):
                assert torch.equal(inf["final_obs"][0], info["final_obs"][i])
                break
            assert torch.equal(o[0], obs[i])
        else:
            pytest.fail(f"env {i} never finished its episode in {len(results)} steps")


def test_step_never_syncs_with_the_host() -> None:
    env = IntradayTradingEnv(
        synthetic_market_tensors(days=2, minutes=30),
        num_envs=16,
        config=IntradayConfig(turbulence_threshold=2.0),
        device="cpu",
    )
    assert_step_never_syncs(env, lambda gen: torch.randint(0, 4, (16,), generator=gen), steps=40)
