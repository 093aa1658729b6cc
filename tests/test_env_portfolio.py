"""PortfolioAllocation: hand-computed next-bar rebalancing with spread and bps costs, weight maps, reward terms,
autoreset, batched == independent single-env runs, and no host sync inside step."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from env_checks import assert_step_never_syncs

from pipeline.envs.portfolio import PortfolioAllocationEnv, PortfolioConfig, project_to_simplex
from pipeline.envs.tensors import MarketTensors, synthetic_market_tensors

PLAIN = PortfolioConfig(
    window=3,
    weight_map="simplex",
    fee_per_share=0.0,
    slippage_bps=10.0,
    return_scale=1.0,
    sharpe_weight=0.0,
    turnover_penalty=0.0,
    reward_clip=1e6,
)


def two_assets() -> MarketTensors:
    """One day, bars 0..3: A jumps +10% into bar 1 (which the agent has not seen at bar 0), then +10% again."""
    mid = np.array([[100.0, 50.0], [110.0, 50.0], [121.0, 45.0], [121.0, 45.0]])[None]
    return MarketTensors.from_arrays(mid - 0.05, mid + 0.05)


def test_hand_computed_rebalancing_at_next_bar_with_costs() -> None:
    # Tolerances: float32 quotes resolve a 10-cent spread on $110 to about 1e-4 of itself.
    env = PortfolioAllocationEnv(two_assets(), num_envs=1, config=PLAIN)
    env.reset(seed=0)
    all_a, all_b = torch.tensor([[1.0, -1.0, -1.0]]), torch.tensor([[-1.0, 1.0, -1.0]])
    _, r0, _, trunc0, info0 = env.step(all_a)
    # From cash into A at bar 1 (mid 110): half spread 0.05/110 + 10 bps on 100% traded; bar 0->1 is not earned.
    cost0 = 0.05 / 110 + 0.001
    assert float(r0[0]) == pytest.approx(-cost0, rel=1e-4)
    _, r1, _, trunc1, info1 = env.step(all_b)
    # A earns 110 -> 121, then all of it moves to B at bar 2: sell A (0.05/121) and buy B (0.05/45) + 2 x 10 bps.
    cost1 = 0.05 / 121 + 0.05 / 45 + 0.002
    net1 = 1.1 * (1 - cost1) - 1
    assert float(r1[0]) == pytest.approx(net1, rel=1e-4)
    assert float(info1["turnover"][0]) == pytest.approx(2.0, rel=1e-6)
    value = (1 - cost0) * (1 + net1)
    assert float(info1["value"][0]) == pytest.approx(value, rel=1e-6)
    assert float(info1["costs"][0]) == pytest.approx(cost0 + (1 - cost0) * 1.1 * cost1, rel=1e-4)
    _, r2, term2, trunc2, info2 = env.step(all_b)
    assert float(r2[0]) == pytest.approx(0.0, abs=1e-7)  # B flat from bar 2 to 3, no trade
    # The session close ends the episode for good: terminated, never truncated.
    assert [bool(trunc0[0]), bool(trunc1[0]), bool(trunc2[0]), bool(term2[0])] == [False, False, False, True]
    assert float(info2["value"][0]) == pytest.approx(value, rel=1e-6)


def test_the_fee_is_per_share_at_the_mid_as_in_an_intraday_fill() -> None:
    env = PortfolioAllocationEnv(two_assets(), num_envs=1, config=replace(PLAIN, fee_per_share=0.01, slippage_bps=0.0))
    env.reset(seed=0)
    _, r0, *_ = env.step(torch.tensor([[1.0, -1.0, -1.0]]))
    # Each dollar into A at mid 110 buys 1/110 of a share: a $0.01 fee of 0.01/110, beside half the $0.10 spread.
    assert float(r0[0]) == pytest.approx(-(0.05 + 0.01) / 110, rel=1e-4)


def test_weight_maps_give_simplex_weights() -> None:
    env = PortfolioAllocationEnv(two_assets(), num_envs=1, config=PortfolioConfig())
    assert torch.allclose(env.target_weights(torch.zeros(1, 3)), torch.full((1, 3), 1 / 3))
    v = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)) * 2
    w = project_to_simplex(v)
    assert torch.allclose(w.sum(-1), torch.ones(64)) and (w >= 0).all()
    assert torch.allclose(project_to_simplex(w), w, atol=1e-6)  # points on the simplex stay put
    # The projection is the closest simplex point: no random simplex point is closer.
    others = torch.distributions.Dirichlet(torch.ones(5)).sample((64, 200))
    assert ((others - v[:, None]).norm(dim=-1) >= (w - v).norm(dim=-1, keepdim=True) - 1e-5).all()


def test_reward_adds_sharpe_term_and_turnover_penalty() -> None:
    cfg = PortfolioConfig(
        window=3,
        weight_map="simplex",
        fee_per_share=0.0,
        slippage_bps=10.0,
        return_scale=100.0,
        sharpe_weight=0.5,
        std_floor=1e-3,
        turnover_penalty=0.2,
    )
    env = PortfolioAllocationEnv(two_assets(), num_envs=1, config=cfg)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(torch.tensor([[1.0, -1.0, -1.0]]))
    net, turnover = float(info["portfolio_return"][0]), float(info["turnover"][0])
    # One return so far: its std is 0, floored at 1e-3.
    assert float(reward[0]) == pytest.approx(100 * net + 0.5 * net / 1e-3 - 0.2 * turnover, rel=1e-5)


def test_turbulence_risk_off_moves_to_cash() -> None:
    mid = two_assets().mid.numpy()
    turbulence = np.array([[0.0, 9.0, 0.0, 0.0]])
    market = MarketTensors.from_arrays(mid - 0.05, mid + 0.05, turbulence=turbulence)
    env = PortfolioAllocationEnv(market, num_envs=1, config=PortfolioConfig(turbulence_threshold=1.0))
    env.reset(seed=0)
    weights = [env.step(torch.tensor([[1.0, -1.0, -1.0]]))[4]["weights"][0].tolist() for _ in range(2)]
    assert weights[0][0] > 0.9 and weights[1] == [0.0, 0.0, 1.0]  # bar 1 is turbulent: all cash


def test_observation_holds_all_assets_weights_and_time() -> None:
    market = two_assets()
    env = PortfolioAllocationEnv(market, num_envs=1, config=PLAIN)
    obs, _ = env.reset(seed=0)
    n_feat = market.num_features
    assert obs.shape == (1, 3, 2 * n_feat + 3 + 1)
    assert torch.equal(obs[0, -1, :n_feat], market.features[0, 0, 0])
    assert torch.equal(obs[0, -1, n_feat : 2 * n_feat], market.features[0, 0, 1])
    assert obs[0, :, -4:].tolist() == [[0.0, 0.0, 1.0, 0.0]] * 3  # all in cash at the open


def test_autoreset_restarts_in_cash_and_keeps_final_obs() -> None:
    env = PortfolioAllocationEnv(two_assets(), num_envs=2, config=PLAIN)
    env.reset(seed=0)
    action = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]])
    for _ in range(3):
        obs, _, terminated, _, info = env.step(action)
    assert terminated.all()
    assert torch.equal(info["final_obs"][:, -1, -4:-1], env.target_weights(action))
    assert info["final_obs"][:, -1, -1].tolist() == [1.0, 1.0]
    assert obs[:, -1, -4:].tolist() == [[0.0, 0.0, 1.0, 0.0]] * 2


def test_batched_run_equals_independent_single_env_runs() -> None:
    market = synthetic_market_tensors(days=3, alpha=0.2, seed=5, symbols=("A", "B", "C"), minutes=30)
    cfg = PortfolioConfig(window=4)
    n = 6
    batched = PortfolioAllocationEnv(market, num_envs=n, config=cfg)
    obs, _ = batched.reset(seed=11)
    first_obs, days = obs.clone(), batched.day.tolist()  # the obs is a view the next step overwrites
    actions = torch.rand(29, n, 4, generator=torch.Generator().manual_seed(2)) * 2 - 1
    results = []
    for a in actions:
        obs, reward, terminated, _, info = batched.step(a)
        results.append((obs.clone(), reward, terminated, info["value"], info["final_obs"].clone()))
    assert results[-1][2].all()
    for i, day in enumerate(days):
        single = PortfolioAllocationEnv(market.subset([day]), num_envs=1, config=cfg)
        obs_i, _ = single.reset(seed=0)
        assert torch.equal(obs_i[0], first_obs[i])
        for t, (obs, reward, terminated, value, final_obs) in enumerate(results):
            o, r, te, _, inf = single.step(actions[t, i : i + 1])
            assert torch.allclose(r[0], reward[i], rtol=1e-5, atol=1e-6) and bool(te[0]) == bool(terminated[i])
            assert torch.allclose(inf["value"][0], value[i], rtol=1e-6)
            seen = inf["final_obs"] if bool(te[0]) else o
            assert torch.allclose(seen[0], final_obs[i] if bool(te[0]) else obs[i], rtol=1e-5, atol=1e-6)


def test_step_never_syncs_with_the_host() -> None:
    env = PortfolioAllocationEnv(synthetic_market_tensors(days=2, minutes=20), num_envs=8, device="cpu")
    assert_step_never_syncs(env, lambda gen: torch.rand(8, 4, generator=gen) * 2 - 1, steps=30)
