"""The PPO update as written for speed against the plain one it replaced: a run that computes the critic's shared
features once per critic phase and steps with fused Adam learns what the reference (shared features recomputed
for every critic minibatch, per-tensor Adam) learns: the same actions, weights and losses up to float rounding."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import pipeline.agents.clstm_ppo as clstm_ppo
import pipeline.agents.ppo_update as ppo_update
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.ppo_config import PPOConfig
from pipeline.agents.ppo_update import Optimizers, check_finite, minibatches
from pipeline.envs.intraday import IntradayTradingEnv
from pipeline.envs.tensors import synthetic_market_tensors
from pipeline.training.run import DEFAULT_INTRADAY


def reference_critic_epochs(policy, optimizer, windows, targets, cfg, epochs, generator):
    """The critic epochs before the speed work: the shared features recomputed for every minibatch."""
    norms = []
    for _ in range(epochs):
        for mb in minibatches(targets.numel(), cfg.num_minibatches, generator):
            with torch.no_grad():
                seq = policy.shared(windows[mb])
            loss = 0.5 * (policy.critic_out(seq) - targets[mb]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(policy.critic_parameters(), cfg.max_grad_norm)
            check_finite(torch.stack([loss, norm]), cfg.divergence_threshold, "critic loss/grad norm")
            optimizer.step()
            norms.append(norm)
    return norms


def _agent() -> CLSTMPPO:
    market = synthetic_market_tensors(days=2, alpha=0.3, seed=0, minutes=60, source="numpy")
    env = IntradayTradingEnv(market, num_envs=16, config=DEFAULT_INTRADAY)
    config = PPOConfig.preset("small_budget", seed=3, num_steps=16, hidden=16, critic_warmup_epochs=3,
                              torch_threads=1)
    return CLSTMPPO(env, config)


def _reference_agent(monkeypatch: pytest.MonkeyPatch) -> CLSTMPPO:
    agent = _agent()
    # The plain per-tensor Adam of before, on the same parameters.
    policy, cfg = agent.policy, agent.config
    agent.optimizers = Optimizers(
        torch.optim.Adam(policy.actor_parameters(), lr=cfg.actor_lr, eps=1e-5, foreach=False),
        torch.optim.Adam(policy.critic_parameters(), lr=cfg.critic_lr, eps=1e-5, foreach=False),
    )
    # The critic epochs (warm-up and after the policy epochs) read windows and recompute their shared features.
    for module in (clstm_ppo, ppo_update):
        monkeypatch.setattr(module, "critic_epochs", reference_critic_epochs)
        monkeypatch.setattr(module, "shared_features", lambda policy, windows, chunk: windows)
    return agent


def _learned(agent: CLSTMPPO) -> tuple[list[torch.Tensor], list[dict[str, Any]], torch.Tensor]:
    agent.learn(4 * 16 * 16)  # a critic warm-up rollout, then three PPO updates
    obs = agent.rollout_state.obs
    return [p.detach().clone() for p in agent.policy.parameters()], agent.history, obs


def test_the_fast_update_learns_what_the_reference_update_learns(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_params, fast_history, fast_obs = _learned(_agent())
    assert isinstance(_agent().optimizers.actor, torch.optim.Adam)
    assert _agent().optimizers.actor.defaults["fused"] is True
    with monkeypatch.context() as patched:
        ref_params, ref_history, ref_obs = _learned(_reference_agent(patched))
    assert len(fast_history) == len(ref_history) == 3
    # Same rollouts (the actions drawn from the policy agree, so the envs went the same way) ...
    torch.testing.assert_close(fast_obs, ref_obs, rtol=0, atol=0)
    # ... and the same weights and diagnostics up to float rounding.
    start = [p.detach() for p in _agent().policy.parameters()]
    moved = sum(float((p - q).abs().max()) for p, q in zip(fast_params, start, strict=True))
    assert moved > 1e-3, "the updates should have moved the weights"
    for p, q in zip(fast_params, ref_params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    for fast, ref in zip(fast_history, ref_history, strict=True):
        for key in ("losses/policy_loss", "losses/value_loss", "losses/approx_kl", "losses/entropy"):
            assert fast[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-6), key
