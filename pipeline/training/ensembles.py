"""The ensemble of a trading day D: the registered intraday models of D, weighted by their scores on D's selection
days (never its gate days).

Members are read from `models.registry`, not from folders: the rows of D whose algorithm acts on the intraday env
(CLSTM-PPO and SB3 PPO, any seed) and whose data version is that of D's dataset. Of the rows of one (algo,
member), the latest registered is taken, and only while its artifact still has the registered sha256 (a later
run with another config writes into the same folder). Every member must have been trained on the same env
settings (costs, window, stops): the ensemble is scored on that env's walk of the selection days.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.agents.ensemble import PolicyEnsemble
from pipeline.agents.sb3 import META_FILE
from pipeline.envs.intraday import IntradayConfig
from pipeline.lake import Warehouse
from pipeline.registry import file_sha256, get_model, read_registry
from pipeline.training.run import TrainingRun

INTRADAY_ALGOS = ("clstm_ppo", "sb3_ppo")
"""The registry's algorithms that act on the intraday env (Discrete actions): what an ensemble can mix."""
MEMBER_KINDS = {"clstm_ppo": "clstm_ppo", "sb3_ppo": "sb3"}
"""Registry algo -> `ensemble.load_member` kind."""


@dataclass(frozen=True)
class Member:
    """One registered model as an ensemble member."""

    model_id: str
    algo: str
    artifact_path: str
    score: float
    env_config: IntradayConfig

    @property
    def kind(self) -> str:
        return MEMBER_KINDS[self.algo]

    @property
    def path(self) -> Path:
        """What `load_member` loads: a CLSTM-PPO checkpoint file, or the folder of an SB3 baseline's model.zip."""
        artifact = Path(self.artifact_path)
        return artifact if self.kind == "clstm_ppo" else artifact.parent


def member_env_config(algo: str, artifact_path: str | Path) -> IntradayConfig:
    """The intraday env settings a registered model was trained with: its `TrainingRun`'s (CLSTM-PPO), or the
    IntradayConfig fields of the env kwargs an SB3 baseline recorded."""
    folder = Path(artifact_path).parent
    if algo == "clstm_ppo":
        return TrainingRun.load(folder).env
    kwargs = json.loads((folder / META_FILE).read_text())["env_kwargs"]
    return IntradayConfig(**{f.name: kwargs[f.name] for f in dataclasses.fields(IntradayConfig) if f.name in kwargs})


def current_registrations(store: Warehouse, trading_day: date, data_version: str,
                          algos: tuple[str, ...]) -> list[dict[str, Any]]:
    """The registry rows (metrics as JSON text) of `trading_day` on `data_version` for `algos`: of the rows of one
    (algo, member) the latest registered, and only while its artifact still has the registered sha256."""
    rows = read_registry(store, trading_day)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows.filter(rows["algo"].is_in(list(algos)) & (rows["data_version"] == data_version)).to_dicts():
        latest[(row["algo"], row["member"])] = row  # oldest first: the last one wins
    return [row for row in latest.values()  # a file overwritten or removed since it was registered is not the model
            if Path(row["artifact_path"]).is_file() and file_sha256(row["artifact_path"]) == row["sha256"]]


def registered_members(store: Warehouse, trading_day: date, data_version: str, score_metric: str = "sharpe",
                       algos: tuple[str, ...] = INTRADAY_ALGOS) -> list[Member]:
    """The current registered models of `trading_day` on `data_version` for `algos`, with their selection-day
    `score_metric` (see the module docstring for which rows count)."""
    unknown = sorted(set(algos) - set(MEMBER_KINDS))
    if unknown:
        raise ValueError(f"algorithms {unknown} cannot be ensembled here; use some of {sorted(MEMBER_KINDS)}")
    members = []
    for row in current_registrations(store, trading_day, data_version, algos):
        artifact = Path(row["artifact_path"])
        selection = json.loads(row["metrics"]).get("selection", {})
        if score_metric not in selection:
            raise ValueError(f"{row['model_id']} has no selection-day {score_metric!r} in models.registry "
                             f"(it has {sorted(selection)}); pick score_metric from those, or retrain it")
        members.append(Member(row["model_id"], row["algo"], str(artifact), float(selection[score_metric]),
                              member_env_config(row["algo"], artifact)))
    return sorted(members, key=lambda m: m.model_id)


def common_env_config(members: list[Member]) -> IntradayConfig:
    """The intraday settings every member was trained with; a clear error if they differ."""
    first = members[0].env_config
    differ = [m.model_id for m in members if m.env_config != first]
    if differ:
        raise ValueError(f"ensemble members were trained on different intraday env settings ({differ} differ from "
                         f"{members[0].model_id}); retrain them with the same env config, or ensemble fewer algos")
    return members[0].env_config


def members_convergence(store: Warehouse, members: list[Member]) -> dict[str, float]:
    """The ensemble's last-update diagnostics, which the gate's training check reads: its last approx KL is the
    largest of its members' (it converged when every member did); empty when a member recorded none."""
    kls = [get_model(store, m.model_id)["metrics"].get("last", {}).get("losses/approx_kl") for m in members]
    return {} if any(kl is None for kl in kls) else {"losses/approx_kl": max(kls)}


def build_ensemble(members: list[Member], directory: str | Path, weighting: str = "softmax",
                   temperature: float = 1.0) -> PolicyEnsemble:
    """Load `members`, weight them by their scores (`ensemble_weights`) and save `ensemble.json` in `directory`."""
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, found {len(members)} "
                         f"({[m.model_id for m in members]}): materialize clstm_ppo_policy and sb3_baselines "
                         "for this day first (or more seeds of them)")
    ensemble = PolicyEnsemble.from_members([(m.kind, m.path) for m in members], [m.score for m in members],
                                           weighting, temperature)
    ensemble.save(directory)
    return ensemble
