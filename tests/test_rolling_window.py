"""RollingWindow: the last T rows per env, oldest first, restarts and final windows; the padded (accelerator)
restart path gives the same windows as the exact (CPU) one."""

from __future__ import annotations

import torch

from pipeline.envs.rolling_window import RollingWindow


def history(padded: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(obs, final_obs) copies after each step of 3 envs, window 4; env e restarts at the steps in its list."""
    window = RollingWindow(3, 4, 2, "cpu", padded=padded)
    starts = {1: [5], 2: [2, 6]}
    window.restart(torch.ones(3, dtype=torch.bool), lambda env: [env.float().unsqueeze(1) * 100, -torch.ones(
        len(env), 1)])
    out = []
    for t in range(1, 9):
        window.push([torch.full((3, 1), float(t)), torch.arange(3.0).unsqueeze(1)])
        mask = torch.tensor([t in starts.get(e, []) for e in range(3)])
        window.restart(mask, lambda env, t=t: [env.float().unsqueeze(1) * 100 + t, -torch.ones(len(env), 1)],
                       keep_final=mask)
        out.append((window.obs.clone(), window.final_obs.clone()))
    return out


def test_window_rolls_restarts_and_keeps_final_windows() -> None:
    steps = history(padded=False)
    obs, _ = steps[3]  # after step 4: env 0 never restarted, its rows are steps 1..4
    assert obs[0, :, 0].tolist() == [1.0, 2.0, 3.0, 4.0] and obs[0, :, 1].tolist() == [0.0] * 4
    # Env 2 restarted at step 2 (row 202 repeated) then got steps 3 and 4.
    assert obs[2, :, 0].tolist() == [202.0, 202.0, 3.0, 4.0]
    obs, final = steps[5]  # step 6: env 2 restarts again; its final window ends with step 6's row
    assert final[2, :, 0].tolist() == [3.0, 4.0, 5.0, 6.0] and obs[2, :, 0].tolist() == [206.0] * 4
    assert steps[7][0][0, :, 0].tolist() == [5.0, 6.0, 7.0, 8.0]


def test_padded_restarts_equal_exact_ones() -> None:
    for (obs_a, final_a), (obs_b, final_b) in zip(history(False), history(True), strict=True):
        assert torch.equal(obs_a, obs_b) and torch.equal(final_a, final_b)


def test_state_dict_restores_the_windows_at_any_ring_position() -> None:
    window = RollingWindow(2, 3, 1, "cpu")
    window.restart(torch.ones(2, dtype=torch.bool), lambda env: [torch.zeros(len(env), 1)])
    for t in range(1, 5):
        window.push([torch.full((2, 1), float(t))])
    restored = RollingWindow(2, 3, 1, "cpu")
    restored.load_state_dict(window.state_dict())
    window.push([torch.full((2, 1), 5.0)])
    restored.push([torch.full((2, 1), 5.0)])
    assert torch.equal(restored.obs, window.obs) and window.obs[0, :, 0].tolist() == [3.0, 4.0, 5.0]
