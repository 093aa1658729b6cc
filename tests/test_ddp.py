"""DDP on CPU: torchrun --standalone --nproc_per_node 2 with gloo; parameters equal across ranks after a step
and equal to the average-gradient result computed in one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def test_two_cpu_ranks_average_gradients_and_stay_identical(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]

    # The hand-made net: same start, different data, averaged gradients -> identical, correct step.
    assert not torch.equal(ranks[0]["x"], ranks[1]["x"])
    net = torch.nn.Linear(3, 2)
    net.load_state_dict({k[5:]: v for k, v in ranks[0].items() if k.startswith("init.")})
    grads = []
    for r in ranks:
        net.zero_grad()
        ((net(r["x"]) - r["y"]) ** 2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
    for name, param in net.named_parameters():
        expected = param.detach() - 0.1 * (grads[0][name] + grads[1][name]) / 2
        torch.testing.assert_close(ranks[0][f"step.{name}"], expected)
        torch.testing.assert_close(ranks[1][f"step.{name}"], expected)
        torch.testing.assert_close(ranks[0][f"init.{name}"], ranks[1][f"init.{name}"], rtol=0, atol=0)

    # CLSTM-PPO itself under torchrun: ranks saw different envs but hold the same weights and stats.
    agent_keys = [k for k in ranks[0] if k.startswith("agent.")]
    assert ranks[0]["agent.num_updates"].item() == 2
    assert ranks[0]["agent.num_timesteps"].item() == 3 * 2 * 16 * 2
    for key in agent_keys:
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=1e-7)
