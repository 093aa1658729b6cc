"""Deployment export of the model kinds besides CLSTM-PPO that can win a day: SB3 PPO (its VecNormalize statistics
inside the graph) and an ensemble of a CLSTM-PPO and an SB3 PPO member (one graph, weights inside). ONNX Runtime
and the torch.export program reproduce the Python policy's action probabilities to 1e-4 and its greedy action,
on raw observations, and nothing in the folder or on the way to it is a pickle."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from test_export import CARD

from pipeline.agents.clstm_agent import CLSTMAgent
from pipeline.agents.ensemble import PolicyEnsemble
from pipeline.agents.sb3 import MODEL_FILE, BaselineConfig, load_baseline, train_baseline
from pipeline.envs.gym_adapter import default_market
from pipeline.envs.intraday import IntradayTradingEnv
from pipeline.export import package
from pipeline.export.model_card import ModelCard
from pipeline.export.onnx_policy import load_onnx_session, run_exported, run_onnx

DISCRETE_ID = "pipeline/IntradayTrading-v0"  # on gymnasium's default market, which the CLSTM member shares
TINY_PPO = {"n_steps": 64, "batch_size": 32, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}}
LINEAGE = {"code_version": "abc123", "config_hash": "cfg", "data_version": "data"}


def _card(model_id: str) -> ModelCard:
    return dataclasses.replace(CARD, model_id=model_id)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A saved SB3 PPO baseline folder and a saved CLSTM-PPO checkpoint, both reading their inputs."""
    root = tmp_path_factory.mktemp("zoo")
    trained = train_baseline(DISCRETE_ID, root / "sb3", BaselineConfig(algo="ppo", total_timesteps=64, seed=1,
                                                                       hparams=TINY_PPO))
    with torch.no_grad():  # a policy that reads its input (the init's action head is near zero)
        trained.model.policy.action_net.weight.mul_(200)
    trained.model.save(root / "sb3" / MODEL_FILE)
    agent = CLSTMAgent(IntradayTradingEnv(default_market(), num_envs=2), hidden=8, num_steps=8, torch_threads=1,
                       initial_action_probs="uniform")
    with torch.no_grad():
        agent.policy.actor.head[-1].weight.mul_(300)
    return root / "sb3", agent.save(root / "clstm")


def _obs(batch: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(batch, *shape)) * 3).astype(np.float32)


def _export(model: Path, out: Path, algo: str) -> package.DeploymentArtifact:
    return package.export_deployment(model, out, feature_names=default_market().feature_names, lineage=LINEAGE,
                                     card=_card(f"{algo}-test"), algo=algo)


def _assert_parity(artifact: package.DeploymentArtifact, policy, obs: np.ndarray) -> None:
    expected = policy.action_probs(obs)
    expected = expected[0] if isinstance(expected, tuple) else expected
    assert expected.shape == (obs.shape[0], 4) and expected.std() > 1e-3  # the policy reads its input
    np.testing.assert_allclose(run_onnx(artifact.path, obs), expected, atol=1e-4)
    np.testing.assert_allclose(run_exported(artifact.path, obs), expected, atol=1e-4)
    _, actions = load_onnx_session(artifact.path).run(None, {"obs": obs})
    np.testing.assert_array_equal(actions, policy.predict(obs, deterministic=True)[0])


@pytest.mark.parametrize("batch", [1, 9])
def test_sb3_ppo_graph_matches_the_baseline_with_vecnormalize_inside(members, tmp_path: Path, batch: int) -> None:
    sb3_dir, _ = members
    policy = load_baseline(sb3_dir)
    artifact = _export(sb3_dir / MODEL_FILE, tmp_path / "deploy", "sb3_ppo")
    _assert_parity(artifact, policy, _obs(batch, policy.observation_space.shape, seed=batch))
    config = json.loads((artifact.path / "config.json").read_text())
    assert config["algo"] == "sb3_ppo" and config["observation"]["normalization"]["inside_graph"]
    assert config["hyperparameters"]["algo"] == "ppo"
    with safe_open(str(artifact.path / "normalizer.safetensors"), "np") as stats:
        np.testing.assert_array_equal(stats.get_tensor("obs_rms.mean"), policy.vec_normalize.obs_rms.mean)
        assert stats.metadata()["clip_obs"] == repr(float(policy.vec_normalize.clip_obs))
    # VecNormalize's statistics are far from the identity: the same graph without them would disagree.
    assert np.abs(policy.vec_normalize.obs_rms.mean).max() > 0.1


def test_ensemble_is_one_graph_with_every_member_and_the_weights(members, tmp_path: Path) -> None:
    sb3_dir, clstm = members
    ensemble = PolicyEnsemble.from_members([("clstm_ppo", clstm), ("sb3", sb3_dir)], scores=[0.4, -0.2])
    ensemble.save(tmp_path / "ensemble")
    artifact = _export(tmp_path / "ensemble" / "ensemble.json", tmp_path / "deploy", "ensemble")
    loaded = PolicyEnsemble.load(tmp_path / "ensemble")
    assert 0.1 < loaded.weights[1] < loaded.weights[0]  # both members count
    _assert_parity(artifact, loaded, _obs(16, loaded.obs_shape, seed=5))
    # One input, two outputs: the members and the weights are inside the graph, not beside it.
    session = load_onnx_session(artifact.path)
    assert [i.name for i in session.get_inputs()] == ["obs"]
    assert [o.name for o in session.get_outputs()] == ["action_probs", "action"]
    config = json.loads((artifact.path / "config.json").read_text())
    assert config["algo"] == "ensemble"
    assert [m["algo"] for m in config["observation"]["normalization"]["per_member"]] == ["clstm_ppo", "sb3_ppo"]
    assert [m["weight"] for m in config["hyperparameters"]["members"]] == pytest.approx(loaded.weights.tolist())
    with safe_open(str(artifact.path / "normalizer.safetensors"), "np") as stats:
        assert {"member0.obs_mean", "member1.obs_rms.mean"} <= set(stats.keys())
        assert stats.metadata()["member1.algo"] == "sb3_ppo"
    lineage = json.loads((artifact.path / "lineage.json").read_text())
    assert lineage["model_file"] == "ensemble.json"


def test_an_unknown_algo_is_refused_with_the_deployable_ones(members, tmp_path: Path) -> None:
    sb3_dir, _ = members
    with pytest.raises(ValueError, match="deployable algorithms"):
        _export(sb3_dir / MODEL_FILE, tmp_path / "deploy", "sb3_sac")
