"""GAE against a plain Python reference loop, including terminal vs truncation bootstrapping."""

from __future__ import annotations

import torch

from pipeline.agents.gae import compute_gae


def reference_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    steps, envs = len(rewards), len(rewards[0])
    adv = [[0.0] * envs for _ in range(steps)]
    for e in range(envs):
        running = 0.0
        for t in reversed(range(steps)):
            bootstrap = 0.0 if terminated[t][e] else next_values[t][e]
            delta = rewards[t][e] + gamma * bootstrap - values[t][e]
            if terminated[t][e] or truncated[t][e]:
                running = 0.0
            running = delta + gamma * lam * running
            adv[t][e] = running
    return adv


def test_gae_matches_reference_loop_with_terminals_and_truncations() -> None:
    gen = torch.Generator().manual_seed(3)
    steps, envs = 23, 5
    rewards = torch.randn(steps, envs, generator=gen, dtype=torch.float64)
    values = torch.randn(steps, envs, generator=gen, dtype=torch.float64)
    next_values = torch.randn(steps, envs, generator=gen, dtype=torch.float64)
    terminated = torch.rand(steps, envs, generator=gen) < 0.1
    truncated = (torch.rand(steps, envs, generator=gen) < 0.1) & ~terminated
    assert terminated.any() and truncated.any()
    adv, ret = compute_gae(rewards, values, next_values, terminated, truncated, 0.97, 0.9)
    expected = torch.tensor(
        reference_gae(rewards.tolist(), values.tolist(), next_values.tolist(), terminated.tolist(),
                      truncated.tolist(), 0.97, 0.9),
        dtype=torch.float64,
    )
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


def test_truncation_bootstraps_and_termination_does_not() -> None:
    rewards = torch.tensor([[1.0], [1.0]])
    values = torch.zeros(2, 1)
    next_values = torch.tensor([[0.0], [10.0]])
    for flag, expected_last in (("truncated", 1.0 + 0.5 * 10.0), ("terminated", 1.0)):
        done = torch.tensor([[False], [True]])
        none = torch.zeros_like(done)
        term, trunc = (done, none) if flag == "terminated" else (none, done)
        adv, _ = compute_gae(rewards, values, next_values, term, trunc, gamma=0.5, gae_lambda=1.0)
        assert adv[1, 0].item() == expected_last
        assert adv[0, 0].item() == 1.0 + 0.5 * expected_last


def test_lambda_one_gives_discounted_monte_carlo_returns() -> None:
    rewards = torch.ones(4, 1)
    values = torch.randn(4, 1)
    next_values = torch.cat([values[1:], torch.zeros(1, 1)])
    terminated = torch.tensor([[False], [False], [False], [True]])
    _, ret = compute_gae(rewards, values, next_values, terminated, torch.zeros_like(terminated), 0.9, 1.0)
    expected = torch.tensor([[1 + 0.9 + 0.81 + 0.729], [1 + 0.9 + 0.81], [1.9], [1.0]])
    torch.testing.assert_close(ret, expected)
