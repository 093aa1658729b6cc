"""OptionsTrading: fills at the next snapshot's bid/ask, fees, mark-to-market at mid, expiry settlement."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import date

import gymnasium as gym
import polars as pl
import pytest
import torch
from env_checks import assert_step_never_syncs
from gymnasium.utils.env_checker import check_env

from pipeline.contract.calendar import trading_session
from pipeline.envs.options import FEATURE_NAMES, OptionsTradingConfig, OptionsTradingEnv
from pipeline.envs.options_actions import ACTION_TABLE, CALL, PUT, action_index, action_table
from pipeline.envs.options_chain import OptionChainTensors, black_scholes_chain, chain_tensors_from_snapshots
from pipeline.synthetic.source import SyntheticMarket, SyntheticMarketConfig

FEE = 0.65


def hand_chain() -> OptionChainTensors:
    """One day, 4 snapshots, 2 expiries (the front settles at snapshot 2), strikes 95/100/105.

    mid[s, e, k, r] = 1 + s + 2e + 0.5k + 0.25r; half-spread 0.05 * (s + 1), so every snapshot's
    quotes differ and a fill at the wrong snapshot shows up in the cash.
    """
    s, e, k, r = torch.meshgrid(torch.arange(4.0), torch.arange(2.0), torch.arange(3.0), torch.arange(2.0),
                                indexing="ij")
    mid = (1 + s + 2 * e + 0.5 * k + 0.25 * r)[None]
    half = (0.05 * (s + 1))[None]
    return OptionChainTensors(
        bid=mid - half, ask=mid + half, mid=mid, iv=torch.full_like(mid, 0.2),
        delta=torch.where(torch.arange(2) == 0, 0.5, -0.5).expand_as(mid).clone(),
        strike=torch.tensor([[[95.0, 100.0, 105.0], [95.0, 100.0, 105.0]]]),
        expiry_days=torch.tensor([[[0.5, 7.5], [0.25, 7.25], [0.0, 7.0], [0.0, 6.75]]]),
        underlying=torch.tensor([[100.0, 102.0, 104.0, 103.0]]),
    )


def make_env(action_set: int = 31) -> OptionsTradingEnv:
    cfg = OptionsTradingConfig(action_set=action_set, window=4, fee_per_contract=FEE, reward_scale=0.01)
    return OptionsTradingEnv(hand_chain(), num_envs=1, config=cfg)


def step(env: OptionsTradingEnv, name: str) -> tuple[float, bool, dict]:
    _, reward, terminated, _, info = env.step(torch.tensor([action_index(name)]))
    return float(reward[0]), bool(terminated[0]), info


def test_action_table_sizes_and_flat_first() -> None:
    assert len(action_table(31)) == 31 and len(action_table(91)) == 91
    assert ACTION_TABLE[0].legs == () and ACTION_TABLE[0].shares == 0
    assert all(len(s.legs) == 1 and s.legs[0].quantity == 1 for s in ACTION_TABLE[1:31])
    with pytest.raises(ValueError, match="action_set"):
        action_table(45)


def test_long_call_fills_at_next_ask_and_settles_intrinsic() -> None:
    env = make_env()
    env.reset(seed=0)
    # Observe snapshot 0, buy the front ATM call (K=100): fill at snapshot 1's ask 2.60 (mid 2.5 + 0.10),
    # not at the observed snapshot's ask 1.55.
    reward, done, info = step(env, "long_call_k+0_e0")
    assert env.cash.item() == pytest.approx(-260.0 - FEE, abs=1e-3)
    assert env.cash.item() != pytest.approx(-155.0 - FEE, abs=1e-3)
    # Marked at snapshot 1's mid 2.5: equity = -260.65 + 250.
    assert info["equity"].item() == pytest.approx(-10.65, abs=1e-3)
    assert reward == pytest.approx(-0.1065, abs=1e-5) and not done
    # Hold: at snapshot 2 the front expiry settles at intrinsic (104 - 100) * 100, not at its mid 3.5.
    reward, done, info = step(env, "long_call_k+0_e0")
    assert info["equity"].item() == pytest.approx(400.0 - 260.65, abs=1e-3)
    assert reward == pytest.approx(1.5, abs=1e-5) and not done
    assert env.qty.abs().sum().item() == 0 and env.action.item() == 0  # book empty -> flat


def test_long_put_expiring_out_of_the_money_settles_at_zero() -> None:
    env = make_env()
    env.reset(seed=0)
    step(env, "long_put_k+0_e0")  # put K=100 at snapshot 1's ask: mid 1 + 1 + 0.5 + 0.25 = 2.75, +0.10
    _, _, info = step(env, "long_put_k+0_e0")  # spot 104 at expiry: worthless
    assert info["equity"].item() == pytest.approx(-285.0 - FEE, abs=1e-3)


def test_mark_to_market_at_mid_then_liquidation_at_bid_with_fees() -> None:
    env = make_env()
    env.reset(seed=0)
    # Back-month ATM call: ask at s1 = 1 + 1 + 2 + 0.5 + 0.10 = 4.60.
    step(env, "long_call_k+0_e1")
    _, done, info = step(env, "long_call_k+0_e1")
    assert not done
    assert info["equity"].item() == pytest.approx(-460.0 - FEE + 550.0, abs=1e-3)  # mid at s2 = 5.5
    assert info["pnl"].item() == pytest.approx(550.0 - 450.0, abs=1e-3)  # mid 4.5 -> 5.5, one contract
    # Last snapshot: liquidated at s3's bid 6.5 - 0.20, one more fee; the episode terminates.
    _, done, info = step(env, "long_call_k+0_e1")
    assert done
    assert info["equity"].item() == pytest.approx(-460.0 + 630.0 - 2 * FEE, abs=1e-3)
    assert info["fees"].item() == pytest.approx(FEE, abs=1e-6)


def test_short_straddle_sells_at_bid_buys_back_at_ask_same_strike() -> None:
    env = make_env(action_set=91)
    env.reset(seed=0)
    step(env, "short_straddle_e1")
    legs = env.qty[0] != 0
    assert int(legs.sum()) == 2
    assert torch.equal(env.leg_strike[0, legs], torch.tensor([1, 1]))  # both legs at the ATM strike (100)
    assert sorted((env.contract[0, legs] % 2).tolist()) == [CALL, PUT]
    # Sold at s1 bids: call 4.5 - 0.10, put 4.75 - 0.10.
    assert env.cash.item() == pytest.approx(440.0 + 465.0 - 2 * FEE, abs=1e-3)
    step(env, "short_straddle_e1")
    _, done, info = step(env, "short_straddle_e1")
    # Bought back at s3 asks: call 6.5 + 0.20, put 6.75 + 0.20.
    assert done
    assert info["equity"].item() == pytest.approx(905.0 - 670.0 - 695.0 - 4 * FEE, abs=1e-3)


def test_straddles_are_one_strike_in_every_state() -> None:
    env = OptionsTradingEnv(black_scholes_chain(days=3, seed=3), num_envs=8,
                            config=OptionsTradingConfig(action_set=91))
    env.reset(seed=1)
    names = [s.name for s in ACTION_TABLE if "straddle" in s.name]
    for _ in range(10):
        actions = torch.tensor([action_index(names[i % len(names)]) for i in range(8)])
        env.step(actions)
        held = env.qty != 0
        for n in range(8):
            if int(held[n].sum()) == 2:
                assert env.leg_strike[n, held[n]].unique().numel() == 1


def test_position_greeks_in_the_observation_follow_the_position() -> None:
    env = OptionsTradingEnv(black_scholes_chain(days=1, seed=2), num_envs=3, config=OptionsTradingConfig(action_set=91))
    env.reset(seed=0)
    actions = [action_index("long_straddle_e1"), action_index("short_straddle_e1"), 0]
    obs, *_ = env.step(torch.tensor(actions))
    col = {name: FEATURE_NAMES.index(name) for name in ("net_gamma_1pct", "net_vega_1pt", "flat", "net_delta")}
    last = obs[:, -1]
    assert last[0, col["net_vega_1pt"]] > 0 > last[1, col["net_vega_1pt"]]
    assert last[0, col["net_gamma_1pct"]] > 0 > last[1, col["net_gamma_1pct"]]
    assert last[2, col["net_vega_1pt"]] == 0 and last[2, col["flat"]] == 1
    # Each row holds the state at its snapshot: the row before the trade filled is flat.
    assert (obs[:, -2, col["flat"]] == 1).all() and (obs[:, -2, col["net_delta"]] == 0).all()


def test_autoreset_returns_final_obs_and_new_episode() -> None:
    env = OptionsTradingEnv(black_scholes_chain(days=2, snapshots=5), num_envs=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 16, env.obs_shape[1]) and obs.dtype == torch.float32
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(torch.tensor([1, 2, 0]))
    assert terminated.all() and not truncated.any()
    assert not torch.equal(info["final_obs"], obs)
    assert (env.snap == 0).all() and (env.qty == 0).all() and (env.cash == 0).all()


@pytest.fixture(scope="module")
def synthetic_frame() -> pl.DataFrame:
    """One day of the synthetic market's option snapshots for one underlying."""
    return SyntheticMarket(SyntheticMarketConfig(seed=3)).fetch(
        "option_snapshots", trading_session(date(2024, 7, 2)), ["SYMA"])


def test_chain_tensors_from_synthetic_snapshots_match_the_rows(synthetic_frame: pl.DataFrame) -> None:
    frame = synthetic_frame
    chain = chain_tensors_from_snapshots(frame, expiries=2, strikes=5)
    times = sorted(frame["ts"].unique().to_list())
    exps = sorted(frame["expiry"].unique().to_list())[:2]
    assert chain.shape == (1, len(times), 2, 5)
    strike = float(chain.strike[0, 1, 2])
    row = frame.filter((pl.col("ts") == times[3]) & (pl.col("expiry") == exps[1]) & (pl.col("strike") == strike)
                       & (pl.col("right") == "P"))
    assert float(chain.bid[0, 3, 1, 2, PUT]) == pytest.approx(row["bid"][0], rel=1e-6)
    assert float(chain.ask[0, 3, 1, 2, PUT]) == pytest.approx(row["ask"][0], rel=1e-6)
    assert float(chain.underlying[0, 3]) == pytest.approx(row["underlying_price"][0], rel=1e-6)
    spot0 = float(chain.underlying[0, 0])
    assert float(chain.strike[0, 0].min()) < spot0 < float(chain.strike[0, 0].max())  # grid centred at the open
    assert (chain.ask >= chain.bid).all() and (chain.expiry_days[0, 1:] < chain.expiry_days[0, :-1]).all()
    env = OptionsTradingEnv(chain, num_envs=2, config=OptionsTradingConfig(action_set=91))
    env.reset(seed=0)
    _, reward, *_ = env.step(torch.tensor([action_index("long_straddle_e1"), 0]))
    assert torch.isfinite(reward).all() and reward[0] < 0 and reward[1] == 0  # crossing the spread costs


def test_chain_builder_errors_say_how_to_fix(synthetic_frame: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="lower `expiries`"):
        chain_tensors_from_snapshots(synthetic_frame, expiries=50)
    with pytest.raises(ValueError, match="lower `strikes`"):
        chain_tensors_from_snapshots(synthetic_frame, expiries=1, strikes=500)
    with pytest.raises(ValueError, match="no option_snapshots rows"):
        chain_tensors_from_snapshots(synthetic_frame.head(0))


def one_day_of(chain: OptionChainTensors, day: int) -> OptionChainTensors:
    """The chain restricted to one of its days."""
    return OptionChainTensors(**{f.name: getattr(chain, f.name)[day : day + 1] if torch.is_tensor(getattr(chain, f.name))
                                 else getattr(chain, f.name) for f in fields(chain)})


def test_same_seed_same_trajectory_and_batched_equals_single() -> None:
    chain = black_scholes_chain(days=3, seed=4)
    # Evaluation deals days 0, 1, 2 to envs 0, 1, 2 (env 3 stays idle), so each env has a known day.
    cfg = OptionsTradingConfig(action_set=91, evaluation=True)
    # One whole episode (14 snapshots -> 13 steps).
    actions = torch.randint(91, (13, 4), generator=torch.Generator().manual_seed(0))

    def run(env_chain: OptionChainTensors, columns: slice) -> tuple[torch.Tensor, torch.Tensor]:
        env = OptionsTradingEnv(env_chain, num_envs=columns.stop - columns.start, config=cfg)
        env.reset(seed=11)
        rewards, final_obs = [], None
        for a in actions[:, columns]:
            _, reward, terminated, _, info = env.step(a)
            rewards.append(reward)
            final_obs = info["final_obs"].clone()
        assert terminated.all() and bool(env.eval_finished)
        return torch.stack(rewards), final_obs

    batched, obs_b = run(chain, slice(0, 4))
    again, _ = run(chain, slice(0, 4))
    assert torch.equal(batched, again)
    assert (batched[:, 3] == 0).all()  # the idle env earns nothing
    for n in range(3):
        single, obs_s = run(one_day_of(chain, n), slice(n, n + 1))
        assert torch.allclose(single[:, 0], batched[:, n], atol=1e-5)
        assert torch.allclose(obs_s[0], obs_b[n], atol=1e-5)


def test_invalid_action_says_range() -> None:
    env = make_env()
    env.reset()
    with pytest.raises(ValueError, match=r"\[0, 31\)"):
        env.step(torch.tensor([31]))


@pytest.mark.parametrize("action_set", [31, 91])
def test_step_never_syncs_with_the_host(monkeypatch: pytest.MonkeyPatch, action_set: int) -> None:
    env = OptionsTradingEnv(black_scholes_chain(days=3, seed=1), num_envs=8,
                            config=OptionsTradingConfig(action_set=action_set))
    # On CPU the range check reads the actions on purpose (a ValueError, tested above); accelerators assert
    # asynchronously (tests/test_cuda.py). Everything else in step must stay on the device.
    monkeypatch.setattr(env, "_check_actions", lambda actions: None)
    assert_step_never_syncs(env, lambda gen: torch.randint(0, action_set, (8,), generator=gen), steps=30)


@pytest.mark.parametrize("action_set", [31, 91])
def test_gym_id_passes_check_env(action_set: int) -> None:
    import pipeline.envs  # noqa: F401 - registers the ids

    env = gym.make("pipeline/OptionsTrading-v0", action_set=action_set)
    assert env.action_space.n == action_set
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_gym_make_rejects_unknown_fields_and_markets() -> None:
    import pipeline.envs  # noqa: F401 - registers the ids

    with pytest.raises(TypeError, match="fee_per_contract"):
        gym.make("pipeline/OptionsTrading-v0", fee_per_contrct=1.0)
    with pytest.raises(ValueError, match="black_scholes"):
        gym.make("pipeline/OptionsTrading-v0", market="nasdaq")
    env = gym.make("pipeline/OptionsTrading-v0", action_set=91, fee_per_contract=0.0, window=4)
    assert env.observation_space.shape == (4, len(FEATURE_NAMES)) and env.action_space.n == 91


def test_chain_features_are_observed_between_the_summary_and_the_position_state() -> None:
    chain = black_scholes_chain(days=1, snapshots=4, seed=0)
    extra = torch.arange(8.0).reshape(1, 4, 2)
    env = OptionsTradingEnv(replace(chain, features=extra, feature_names=("atm_iv_rank", "put_call_ratio")),
                            num_envs=1, config=OptionsTradingConfig(window=2))
    assert env.feature_names[8:10] == ("atm_iv_rank", "put_call_ratio") and env.obs_shape == (2, len(FEATURE_NAMES) + 2)
    env.reset(seed=0)
    obs, *_ = env.step(torch.tensor([0]))
    assert obs[0, :, 8:10].tolist() == [[0.0, 1.0], [2.0, 3.0]]  # snapshots 0 and 1
