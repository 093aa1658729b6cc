"""Validation-based checkpoint selection and early stopping of CLSTM-PPO: the validation metrics are those of an
independent walk over the held-out days, best_composite holds the model of the best validation run, early stopping
counts validation runs, and validating changes nothing of the training run (weights, normalizer, RNG)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_checkpoints import TINY, CountingEnv

from pipeline.agents import checkpoints as ckpt
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.diagnostics import episode_metrics
from pipeline.agents.policy_eval import evaluate_policy
from pipeline.envs.intraday import IntradayConfig, IntradayTradingEnv
from pipeline.envs.tensors import MarketTensors, synthetic_market_tensors

MINUTES, NUM_ENVS, STEPS = 20, 8, 20
TRAIN = IntradayConfig(window=4, loss_cut=None, profit_lock=None)
HPARAMS = dict(num_steps=STEPS, hidden=8, torch_threads=1, critic_warmup_epochs=1, num_minibatches=2,
               policy_epochs=2, ent_coef_start=0.03, ent_coef_end=0.03, actor_lr=3e-3, seed=0)
PER_UPDATE = STEPS * NUM_ENVS


@pytest.fixture(scope="module")
def market() -> MarketTensors:
    """Six short days of the planted-signal market: days 0-3 to train on, 4-5 held out."""
    return synthetic_market_tensors(days=6, alpha=0.15, seed=0, minutes=MINUTES)


def _train_env(market: MarketTensors) -> IntradayTradingEnv:
    return IntradayTradingEnv(market.subset(days=range(4)), num_envs=NUM_ENVS, config=TRAIN)


def _validation_env(market: MarketTensors, num_envs: int = 4) -> IntradayTradingEnv:
    return IntradayTradingEnv(market.subset(days=[4, 5]), num_envs=num_envs, config=replace(TRAIN, evaluation=True))


def _agent(market: MarketTensors, **overrides) -> CLSTMPPO:
    """An agent whose deterministic policy trades from the start: a uniform start (not the env's mostly-HOLD one)
    and the actor's last layer at gain 1 instead of 0.01, so the held-out PnL (and the validation scores) move as
    training moves the weights."""
    agent = CLSTMPPO(_train_env(market), **{"initial_action_probs": "uniform", **HPARAMS, **overrides})
    torch.nn.init.orthogonal_(agent.policy.actor.head[-1].weight, gain=1.0)
    return agent


def _walk_pnl(agent: CLSTMPPO, market: MarketTensors) -> list[float]:
    """The held-out PnL of every (day, symbol), walked one env at a time: independent of evaluate_policy."""
    env = _validation_env(market, num_envs=1)
    obs, _ = env.reset(seed=7)
    pnl: dict[int, float] = {}
    while not bool(env.eval_finished):
        action, _ = agent.predict(obs.clone(), deterministic=True)
        obs, _, term, _, info = env.step(torch.as_tensor(action))
        if bool(term[0]) and int(info["episode_id"][0]) >= 0:
            pnl[int(info["episode_id"][0])] = float(info["pnl"][0])
    assert sorted(pnl) == list(range(2 * market.num_symbols))
    return [pnl[k] for k in sorted(pnl)]


def _val_rows(agent: CLSTMPPO) -> list[dict]:
    return [row for row in agent.history if "val_composite" in row]


def test_validation_metrics_are_an_independent_walks_and_best_composite_is_the_best_validated_model(
    market: MarketTensors, tmp_path: Path,
) -> None:
    agent = _agent(market, validation_env=_validation_env(market), validate_every=2, checkpoint_dir=str(tmp_path))
    agent.learn(8 * PER_UPDATE)  # one critic warm-up rollout, then 7 updates
    rows = _val_rows(agent)
    assert len({row["val_composite"] for row in rows}) > 1 and rows[-1]["val_mean_pnl"] != 0  # the policy trades
    assert [row["update"] for row in rows] == [2, 4, 6, 7]  # every 2 updates, and after the last one
    assert all("val_composite" not in row for row in agent.history if row["update"] % 2 and row["update"] != 7)

    # The last validation run scored the final weights: an independent walk gives the same figures.
    expected = episode_metrics(_walk_pnl(agent, market))
    assert {k: rows[-1][f"val_{k}"] for k in expected} == pytest.approx(expected)
    assert rows[-1]["val_episodes"] == 2 * market.num_symbols

    # best_composite is the model of the first validation run with the highest composite.
    best_row = max(rows, key=lambda row: row["val_composite"])  # max keeps the first of equal ones
    assert best_row["update"] < agent.num_updates  # in this run the best is not simply the final model
    assert agent.best["composite"] == best_row["val_composite"]
    assert agent.best_source == "validation"
    _, meta = ckpt.read_checkpoint(tmp_path / "best_composite.safetensors")
    assert meta["num_updates"] == best_row["update"] and meta["best_source"] == "validation"
    assert meta["metrics"]["composite"] == best_row["val_composite"]
    best = CLSTMPPO.load(tmp_path / "best_composite.safetensors")
    assert best.best_source == "validation"
    again = evaluate_policy(best, _validation_env(market))
    assert again == pytest.approx({k.removeprefix("val_"): v for k, v in best_row.items() if k.startswith("val_")})


def test_validation_does_not_change_training(market: MarketTensors) -> None:
    plain = _agent(market).learn(5 * PER_UPDATE)
    validated = _agent(market, validation_env=_validation_env(market), validate_every=1).learn(5 * PER_UPDATE)
    assert len(_val_rows(validated)) == validated.num_updates == plain.num_updates == 4
    for a, b in zip(plain.policy.state_dict().values(), validated.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(plain.normalizer.state_dict().values(), validated.normalizer.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(plain.generator.get_state(), validated.generator.get_state())
    assert [row["losses/approx_kl"] for row in plain.history] == [row["losses/approx_kl"] for row in
                                                                 validated.history]


def test_evaluate_policy_leaves_normalizer_and_rngs_as_they_were(market: MarketTensors) -> None:
    agent = _agent(market).learn(2 * PER_UPDATE)
    normalizer = {k: v.clone() for k, v in agent.normalizer.state_dict().items()}
    generator, global_rng = agent.generator.get_state(), torch.get_rng_state()
    metrics = evaluate_policy(agent, _validation_env(market))
    assert metrics["episodes"] == 2 * market.num_symbols
    assert metrics["mean_pnl"] == pytest.approx(metrics["mean_return"])
    for key, value in agent.normalizer.state_dict().items():
        assert torch.equal(value, normalizer[key]), key
    assert torch.equal(agent.generator.get_state(), generator)
    assert torch.equal(torch.get_rng_state(), global_rng)


class FixedOutcomeEnv:
    """Evaluation-mode env with CountingEnv's spaces: PNL[i] is episode i's PnL whatever the policy does, so
    every validation run scores the same. Two envs walk the episodes of EPISODE_STEPS steps, then go idle."""

    PNL = (1.0, -0.5, 2.0, 0.5, -1.0)
    EPISODE_STEPS = 3
    discrete, action_dim, num_envs, obs_shape = True, 2, 2, (3, 2)
    device = torch.device("cpu")
    config = SimpleNamespace(evaluation=True)

    def __init__(self) -> None:
        self.reset()

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict]:
        self.t, self.ids, self.dealt = torch.zeros(2), torch.arange(2), 2
        return torch.zeros(2, 3, 2), {"episode_id": self.ids}

    @property
    def eval_finished(self) -> torch.Tensor:
        return (self.ids < 0).all()

    def step(self, actions: torch.Tensor):
        self.t += 1
        idle = self.ids < 0
        done = (self.t >= self.EPISODE_STEPS) | idle
        pnl = torch.tensor([self.PNL[i] if i >= 0 else 0.0 for i in self.ids.tolist()])
        info = {"episode_id": self.ids.clone(), "pnl": pnl}
        for env in torch.nonzero(done & ~idle).flatten().tolist():
            self.ids[env] = self.dealt if self.dealt < len(self.PNL) else -1
            self.dealt += 1
            self.t[env] = 0
        return torch.zeros(2, 3, 2), torch.zeros(2), done, torch.zeros_like(done), info


def test_early_stopping_counts_validation_runs_without_improvement() -> None:
    agent = CLSTMPPO(CountingEnv(), validation_env=FixedOutcomeEnv(), validate_every=3, early_stop_patience=2,
                     **TINY)
    agent.learn(10_000 * TINY["num_steps"] * 4)
    # Validation at updates 3 (the best), 6 and 9 (no improvement): patience 2 stops after the third run.
    assert [row["update"] for row in _val_rows(agent)] == [3, 6, 9]
    assert agent.num_updates == 9 and agent.updates_since_best == 2
    assert agent.best["composite"] == episode_metrics(list(FixedOutcomeEnv.PNL))["composite"]


def test_a_validation_env_must_walk_held_out_episodes_and_fit_the_agent(market: MarketTensors) -> None:
    with pytest.raises(ValueError, match="not in evaluation mode.*evaluation=True"):
        CLSTMPPO(_train_env(market), validation_env=_train_env(market), **HPARAMS)
    narrow = IntradayTradingEnv(market.subset(days=[4, 5]), num_envs=2,
                                config=replace(TRAIN, window=3, evaluation=True))
    with pytest.raises(ValueError, match="differ from the training env"):
        CLSTMPPO(_train_env(market), validation_env=narrow, **HPARAMS)
