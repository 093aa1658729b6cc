"""Deployment export: ONNX Runtime and the torch.export program agree with the agent on raw observations, the
normalization is inside the graph, and the folder is complete, atomic, reproducible and free of pickles."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from safetensors import safe_open

from pipeline.agents import checkpoints as ckpt
from pipeline.agents.checkpoints import UnsafeCheckpointError
from pipeline.agents.clstm_agent import CLSTMAgent
from pipeline.agents.normalize import RunningNormalizer
from pipeline.envs.costs import EQUITY_COSTS
from pipeline.envs.intraday import AGENT_FEATURES, IntradayTradingEnv
from pipeline.envs.tensors import synthetic_market_tensors
from pipeline.export import package
from pipeline.export.model_card import BaselineRow, MetricRow, ModelCard
from pipeline.export.onnx_policy import load_onnx_session, load_program, run_exported, run_onnx
from pipeline.registry import file_sha256

MARKET = synthetic_market_tensors(days=2, minutes=30, seed=3, symbols=("A", "B"))
LINEAGE = {"code_version": "abc123", "config_hash": "cfg", "data_version": "data",
           "window": ["2024-07-01", "2024-07-02"], "upstream_partitions": {"training_dataset": "2024-07-02"}}
CARD = ModelCard(
    model_id="clstm_ppo-0-2024-07-02-test", symbols=("A", "B"), data_version="data",
    train_days=("2024-07-01",), selection_days=("2024-07-02",), gate_days=("2024-07-03",), trade_size=100.0,
    costs=EQUITY_COSTS,
    metrics=(MetricRow("sharpe", 0.5, 0.1, 0.9), MetricRow("total_return", 0.01),
             MetricRow("annualized_return", None, note="1 trading day: annualizing needs 20")),
    oracle_share="95% over 15 gate days (90% CI 80% to 110%)",
    baselines=(BaselineRow("buy_and_hold", [("sharpe", 0.2, -0.1, 0.4), ("total_return", 0.0, None, None)]),
               BaselineRow("random", [MetricRow("sharpe", -0.3, -0.6, 0.0)])),
    intended_use=("paper trading on the listed symbols",), limitations=("synthetic market only",),
)


def _agent() -> CLSTMAgent:
    agent = CLSTMAgent(IntradayTradingEnv(MARKET, num_envs=2), hidden=8, num_steps=8, torch_threads=1,
                       initial_action_probs="uniform")
    # Far-from-identity statistics, so a graph that skipped or garbled the normalization would not agree.
    gen = torch.Generator().manual_seed(0)
    features = agent.obs_shape[-1]
    agent.normalizer.obs_rms.mean = torch.randn(features, generator=gen, dtype=torch.float64) * 2
    agent.normalizer.obs_rms.var = torch.rand(features, generator=gen, dtype=torch.float64) * 4 + 0.05
    agent.normalizer.obs_rms.count = torch.tensor(1000.0, dtype=torch.float64)
    with torch.no_grad():  # a policy that reads its input (the init's output layer is near zero)
        agent.policy.actor.head[-1].weight.mul_(300)
    return agent


def _obs(batch: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(batch, *shape)) * 3).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[CLSTMAgent, Path, package.DeploymentArtifact]:
    root = tmp_path_factory.mktemp("export")
    model = _agent().save(root / "model")
    artifact = package.export_deployment(model, root / "deploy" / "m1", feature_names=MARKET.feature_names,
                                         lineage=LINEAGE, card=CARD)
    return CLSTMAgent.load(model), model, artifact


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_and_exported_program_agree_with_the_agent_on_raw_observations(exported, batch: int) -> None:
    agent, _, artifact = exported
    obs = _obs(batch, agent.obs_shape, seed=batch)
    expected, _ = agent.action_probs(obs)
    assert expected.shape == (batch, 4) and expected.std() > 1e-3
    np.testing.assert_allclose(run_onnx(artifact.path, obs), expected, atol=1e-4)
    np.testing.assert_allclose(run_exported(artifact.path, obs), expected, atol=1e-4)
    _, actions = load_onnx_session(artifact.path).run(None, {"obs": obs})
    np.testing.assert_array_equal(actions, agent.predict(obs, deterministic=True)[0])


def test_the_normalization_is_inside_the_graph(exported, tmp_path) -> None:
    agent, model, first = exported
    other = CLSTMAgent.load(model)
    other.normalizer.obs_rms.mean = other.normalizer.obs_rms.mean + 1.5
    other.normalizer.obs_rms.var = other.normalizer.obs_rms.var * 3
    second = package.export_deployment(other.save(tmp_path / "model"), tmp_path / "deploy",
                                       feature_names=MARKET.feature_names, lineage=LINEAGE, card=CARD)
    obs = _obs(5, agent.obs_shape, seed=11)
    first_probs, second_probs = run_onnx(first.path, obs), run_onnx(second.path, obs)
    assert np.abs(first_probs - second_probs).max() > 1e-2  # same weights, other stats: other outputs
    np.testing.assert_allclose(first_probs, agent.action_probs(obs)[0], atol=1e-4)
    np.testing.assert_allclose(second_probs, other.action_probs(obs)[0], atol=1e-4)
    saved = RunningNormalizer.load(second.path / package.NORMALIZER_FILE)
    torch.testing.assert_close(saved.obs_rms.mean, other.normalizer.obs_rms.mean)
    torch.testing.assert_close(saved.obs_rms.var, other.normalizer.obs_rms.var)


def test_config_lineage_and_card_describe_the_model(exported) -> None:
    agent, model, artifact = exported
    config = json.loads((artifact.path / package.CONFIG_FILE).read_text())
    assert config["observation"]["features"] == [*MARKET.feature_names, *AGENT_FEATURES]
    assert len(config["observation"]["features"]) == agent.obs_shape[-1]
    assert config["observation"]["shape"] == ["batch", *agent.obs_shape]
    assert config["action_space"]["meanings"] == ["hold", "long", "short", "flat"]
    assert config["state"]["shapes"] == {}
    assert config["hyperparameters"] == agent.config.to_dict()
    assert config["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    graph = onnx.load(artifact.path / package.ONNX_FILE)
    assert [i.name for i in graph.graph.input] == ["obs"]
    assert [o.name for o in graph.graph.output] == ["action_probs", "action"]
    assert graph.opset_import[0].version == config["onnx_opset"]

    lineage = json.loads((artifact.path / package.LINEAGE_FILE).read_text())
    assert lineage == LINEAGE | {"model_file": model.name, "model_sha256": file_sha256(model)}

    card = (artifact.path / package.CARD_FILE).read_text()
    assert "| sharpe | 0.5 | 0.1 | 0.9 |  |" in card
    assert "costs: fee_per_unit 0.005, slippage_bps 1, multiplier 1 (fills cross the spread)" in card
    assert "| annualized_return |  |  |  | 1 trading day: annualizing needs 20 |" in card
    assert "Share of the cost-aware oracle: 95% over 15 gate days (90% CI 80% to 110%)" in card
    assert "Gate days (judged on, never chosen on): 2024-07-03 to 2024-07-03 (1 trading day)" in card
    assert "| buy_and_hold | 0.2 [-0.1, 0.4] | 0 |" in card
    assert "| random | -0.3 [-0.6, 0] | n/a |" in card
    assert "2024-07-01 to 2024-07-03" in card and "paper trading on the listed symbols" in card


def test_the_artifact_sha_covers_every_file(exported, tmp_path) -> None:
    _, _, artifact = exported
    assert set(artifact.files) == set(package.ARTIFACT_FILES)
    assert package.read_artifact(artifact.path) == artifact
    seen = {artifact.sha256}
    for name in package.ARTIFACT_FILES:
        copy = tmp_path / name.replace(".", "_")
        shutil.copytree(artifact.path, copy)
        with open(copy / name, "ab") as handle:
            handle.write(b"\n")
        changed = package.read_artifact(copy)
        assert changed.files[name] != artifact.files[name]
        seen.add(changed.sha256)
    assert len(seen) == len(package.ARTIFACT_FILES) + 1


def test_re_export_replaces_the_folder_atomically_with_the_same_files(exported, monkeypatch) -> None:
    _, model, artifact = exported
    (artifact.path / "stray.txt").write_text("left by hand")
    again = package.export_deployment(model, artifact.path, feature_names=MARKET.feature_names, lineage=LINEAGE,
                                      card=CARD)
    assert again.files == artifact.files and again.sha256 == artifact.sha256
    versions = f".{artifact.path.name}.versions"
    assert sorted(p.name for p in artifact.path.parent.iterdir()) == [versions, artifact.path.name]  # no temp folders
    assert len(list((artifact.path.parent / versions).iterdir())) == 2  # the new version, and the one before it

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(package, "render_model_card", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        package.export_deployment(model, artifact.path, feature_names=MARKET.feature_names, lineage=LINEAGE,
                                  card=CARD)
    assert package.read_artifact(artifact.path) == artifact  # the previous artifact, whole
    assert sorted(p.name for p in artifact.path.parent.iterdir()) == [versions, artifact.path.name]
    assert [p.resolve() for p in (artifact.path.parent / versions).iterdir()] == [artifact.path.resolve()]


def test_a_re_export_never_leaves_the_folder_missing_and_removes_a_crashs_leftovers(tmp_path, monkeypatch) -> None:
    model = _agent().save(tmp_path / "model")
    out = tmp_path / "deploy" / "m1"
    old = package.export_deployment(model, out, feature_names=MARKET.feature_names, lineage=LINEAGE, card=CARD)
    # What an export killed midway left: its staging folder, and the folder a replace had moved aside.
    for leftover in (".m1.k3j2h1g0.tmp", f".m1.{'0' * 32}.old"):
        (out.parent / leftover).mkdir()
        (out.parent / leftover / package.ONNX_FILE).write_bytes(b"half a graph")
    seen = []  # the folder's content after each rename the export makes

    def checked(move):
        def moved(*args, **kwargs):
            move(*args, **kwargs)
            seen.append(package.read_artifact(out).sha256)  # raises if the folder is missing or half-written
        return moved

    monkeypatch.setattr(os, "replace", checked(os.replace))
    monkeypatch.setattr(os, "rename", checked(os.rename))
    new = package.export_deployment(model, out, feature_names=MARKET.feature_names, card=CARD,
                                    lineage={**LINEAGE, "code_version": "def456"})
    monkeypatch.undo()
    assert new.sha256 != old.sha256
    # The old content until the new one is in place, then the new one: never none, never a mix.
    assert seen[0] == old.sha256 and seen[-1] == new.sha256 and seen == sorted(seen, key=[old.sha256, new.sha256].index)
    assert sorted(p.name for p in out.parent.iterdir()) == [".m1.versions", "m1"]


def test_nothing_in_the_folder_is_a_pickle(exported, tmp_path) -> None:
    agent, _, artifact = exported
    program = load_program(artifact.path)  # checks the archive for pickled members first
    assert program.example_inputs is None
    for name in (package.CONFIG_FILE, package.LINEAGE_FILE):
        json.loads((artifact.path / name).read_text())
    with safe_open(str(artifact.path / package.NORMALIZER_FILE), framework="pt") as handle:
        assert {"obs_mean", "obs_var", "obs_count", "epsilon", "clip_obs"} <= set(handle.keys())
        assert handle.metadata() == {"normalize_obs": "true"}
    onnx.checker.check_model(onnx.load(artifact.path / package.ONNX_FILE))

    # torch.export.save keeps example inputs as a torch.save pickle unless told not to: such a file is refused.
    pickled = tmp_path / "policy.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(2, 1), (torch.zeros(1, 2),)), pickled)
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        load_program(pickled)


def test_feature_names_that_do_not_match_the_model_are_refused(exported, tmp_path) -> None:
    _, model, _ = exported
    with pytest.raises(ValueError, match="without the agent features"):
        package.export_deployment(model, tmp_path / "deploy", feature_names=[*MARKET.feature_names,
                                  *AGENT_FEATURES], lineage=LINEAGE, card=CARD)
    assert not (tmp_path / "deploy").exists()


def test_a_model_trained_on_cuda_with_compile_exports_on_cpu_in_float32(exported, tmp_path) -> None:
    agent, model, artifact = exported
    tensors, meta = ckpt.read_checkpoint(model)
    cuda_config = meta["config"] | {"device": "cuda", "amp": True, "compile": True}
    cuda_model = ckpt.write_checkpoint(tmp_path / "cuda_model", tensors, meta | {"config": cuda_config})
    moved = package.export_deployment(cuda_model, tmp_path / "deploy", feature_names=MARKET.feature_names,
                                      lineage=LINEAGE, card=CARD)
    config = json.loads((moved.path / package.CONFIG_FILE).read_text())
    assert config["hyperparameters"] == cuda_config  # what it was trained with, not how it was exported
    obs = _obs(3, agent.obs_shape, seed=5)
    np.testing.assert_allclose(run_onnx(moved.path, obs), agent.action_probs(obs)[0], atol=1e-4)
    assert moved.files[package.ONNX_FILE] == artifact.files[package.ONNX_FILE]
