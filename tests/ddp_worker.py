"""Worker for tests/test_ddp.py, run under torchrun with 2 CPU ranks (gloo): one averaged-gradient step of a
small net, then a short CLSTM-PPO run; each rank writes what it ended with to OUT/rank{r}.safetensors."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.distributed import average_gradients, broadcast_parameters, init_distributed


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rank, world = init_distributed(torch.device("cpu"))
    torch.manual_seed(100 + rank)  # different init per rank: the broadcast must make them equal
    net = torch.nn.Linear(3, 2)
    broadcast_parameters(net.parameters())
    result = {f"init.{k}": v.clone() for k, v in net.state_dict().items()}
    gen = torch.Generator().manual_seed(rank)
    x, y = torch.randn(5, 3, generator=gen), torch.randn(5, 2, generator=gen)
    ((net(x) - y) ** 2).mean().backward()
    average_gradients(net.parameters())
    with torch.no_grad():
        for p in net.parameters():
            p -= 0.1 * p.grad
    result |= {f"step.{k}": v.clone() for k, v in net.state_dict().items()} | {"x": x, "y": y}
    agent = CLSTMPPO("CartPole-v1", num_envs=2, num_steps=16, hidden=8, window=2, torch_threads=1,
                     critic_warmup_epochs=1, seed=0)
    agent.learn(3 * 2 * 16 * world)
    result |= {f"agent.{k}": v.clone() for k, v in agent.policy.state_dict().items()}
    result["agent.num_updates"] = torch.tensor(agent.num_updates)
    result["agent.num_timesteps"] = torch.tensor(agent.num_timesteps)
    result["agent.normalizer_count"] = agent.normalizer.state_dict()["obs_count"]
    save_file(result, str(out / f"rank{rank}.safetensors"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
