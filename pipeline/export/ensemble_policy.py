"""An ensemble as ONE deployment graph: every member's graph (CLSTM-PPO with its normalizer, SB3 PPO with its
VecNormalize statistics) and the ensemble's weights inside, raw observations in.

`DeployedEnsemble` computes what `PolicyEnsemble.action_probs` / `predict(deterministic=True)` compute: the
weighted mean, in float64, of the members' action probabilities, and its argmax. Members read the same raw
observation; each normalizes it with its own statistics inside the graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.agents.clstm_agent import CLSTMAgent
from pipeline.agents.ensemble import PolicyEnsemble
from pipeline.agents.sb3 import BaselinePolicy
from pipeline.export.onnx_policy import DeployedPolicy
from pipeline.export.sb3_policy import DeployedSB3Policy


def deployed_member(policy: Any) -> DeployedPolicy | DeployedSB3Policy:
    """The graph of one loaded member: a CLSTM-PPO agent or an SB3 baseline."""
    if isinstance(policy, CLSTMAgent):
        return DeployedPolicy(policy)
    if isinstance(policy, BaselinePolicy):
        return DeployedSB3Policy(policy)
    raise ValueError(f"an ensemble member of type {type(policy).__name__} has no deployment graph; members are "
                     "CLSTM-PPO agents or SB3 baselines")


class DeployedEnsemble(nn.Module):
    """Raw observations [batch, *obs_shape] -> (mixed action probabilities [batch, n_actions], argmax [batch])."""

    algo = "ensemble"

    def __init__(self, ensemble: PolicyEnsemble) -> None:
        if not ensemble.discrete:
            raise ValueError("the deployment export covers discrete-action ensembles (action probabilities)")
        super().__init__()
        self.members = nn.ModuleList(deployed_member(p) for p in ensemble.policies)
        shapes = {m.obs_shape for m in self.members}
        actions = {m.n_actions for m in self.members}
        if len(shapes) != 1 or len(actions) != 1:
            raise ValueError(f"ensemble members disagree on observations {sorted(shapes)} or actions "
                             f"{sorted(actions)}: one graph needs one input and one action set")
        self.obs_shape, self.n_actions = shapes.pop(), actions.pop()
        self.register_buffer("weights", torch.as_tensor(ensemble.weights, dtype=torch.float64))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mixed = torch.zeros((obs.shape[0], self.n_actions), dtype=torch.float64)
        for i, member in enumerate(self.members):
            probs, _ = member(obs)
            mixed = mixed + self.weights[i] * probs.to(torch.float64)
        return mixed.to(torch.float32), mixed.argmax(dim=-1)

    def normalizer_state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Every member's statistics under `member<i>.`, and its settings in the metadata under the same prefix."""
        tensors: dict[str, torch.Tensor] = {}
        settings = {"members": str(len(self.members))}
        for i, member in enumerate(self.members):
            member_tensors, member_settings = member.normalizer_state()
            tensors |= {f"member{i}.{k}": v for k, v in member_tensors.items()}
            settings |= {f"member{i}.{k}": v for k, v in member_settings.items()} | {f"member{i}.algo": member.algo}
        return tensors, settings

    def normalization(self) -> dict[str, Any]:
        """How the graph normalizes: each member with its own statistics (config.json's description)."""
        return {"inside_graph": True, "per_member": [m.normalization() | {"algo": m.algo, "prefix": f"member{i}."}
                                                     for i, m in enumerate(self.members)]}
