"""README claims about the CLSTM-PPO agent, its trainer CLI and the SB3 baselines that no other test proves:
min_episodes_for_best, the divergence threshold, the LR/entropy schedules the optimizer really used, SIGTERM
without a checkpoint dir, the CLI's normal finish with a factory env, and the baselines' refusal of pickles."""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import torch
from conftest import REPO_ROOT
from test_checkpoints import ROLLOUT, TINY, CountingEnv

import pipeline.agents.clstm_ppo as clstm_ppo
from pipeline.agents import checkpoints as ckpt
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.ppo_update import TrainingDivergedError
from pipeline.agents.sb3 import MODEL_FILE, BaselineConfig, load_baseline, train_baseline
from pipeline.training.run import DatasetData, GymData, SyntheticData, TrainingRun

NUM_ENVS = 4  # CountingEnv's default: every update sees 4 episodes of ROLLOUT steps end
STEPS_PER_UPDATE = ROLLOUT * NUM_ENVS


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_min_episodes_for_best_gates_best_checkpoints(tmp_path: Path) -> None:
    # Each update finishes exactly 4 episodes: 5 required means no best ever, 4 means a best on the first update.
    strict = CLSTMPPO(CountingEnv(), checkpoint_dir=str(tmp_path / "five"), min_episodes_for_best=5, **TINY)
    strict.learn(3 * STEPS_PER_UPDATE)
    assert strict.num_updates == 2
    assert all(h["episodes/episodes"] == NUM_ENVS for h in strict.history)
    assert strict.best == {} and strict.updates_since_best == 2
    assert list(_files(tmp_path / "five")) == ["latest.safetensors"]

    lenient = CLSTMPPO(CountingEnv(), checkpoint_dir=str(tmp_path / "four"), min_episodes_for_best=4, **TINY)
    lenient.learn(3 * STEPS_PER_UPDATE)
    assert set(lenient.best) == {"composite", "sharpe", "win_rate", "profit_rate"}
    assert sorted(_files(tmp_path / "four")) == sorted(f"{n}.safetensors" for n in ckpt.CHECKPOINT_NAMES)


def test_a_finite_loss_above_divergence_threshold_stops_and_leaves_checkpoints_untouched(tmp_path: Path) -> None:
    agent = CLSTMPPO(CountingEnv(), checkpoint_dir=str(tmp_path), **TINY)
    agent.learn(3 * STEPS_PER_UPDATE)
    before = _files(tmp_path)
    # The same run, resumed with a threshold every real loss exceeds: finite values, not NaN, must stop it too.
    resumed = CLSTMPPO.load(tmp_path, env=CountingEnv(), divergence_threshold=1e-9)
    with pytest.raises(TrainingDivergedError, match="above divergence_threshold=1e-09"):
        resumed.learn(3 * STEPS_PER_UPDATE, reset_num_timesteps=False)
    assert resumed.num_updates == agent.num_updates == 2
    assert _files(tmp_path) == before


def test_lr_and_entropy_schedules_are_the_ones_the_optimizers_used(monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[dict[str, float]] = []
    real_ppo_epochs = clstm_ppo.ppo_epochs

    def recording(policy, optimizers, buf, advantages, returns, cfg, ent_coef, generator):
        # What the update really ran with: the optimizers' param_groups and the entropy coefficient passed in.
        used.append({"actor": optimizers.actor.param_groups[0]["lr"],
                     "critic": optimizers.critic.param_groups[0]["lr"], "ent": ent_coef})
        return real_ppo_epochs(policy, optimizers, buf, advantages, returns, cfg, ent_coef, generator)

    monkeypatch.setattr(clstm_ppo, "ppo_epochs", recording)
    total = 6 * STEPS_PER_UPDATE  # a critic warm-up rollout, then five updates
    agent = CLSTMPPO(CountingEnv(), actor_lr=2e-3, critic_lr=5e-3, ent_coef_start=0.04, ent_coef_end=0.01, **TINY)
    agent.learn(total)
    steps = np.array([h["global_step"] for h in agent.history], dtype=float)
    np.testing.assert_array_equal(steps, STEPS_PER_UPDATE * np.arange(2, 7))
    progress = steps / total
    # Linear to 0 over total_timesteps; the last update (progress 1) keeps 1e-3 of the rate so it still learns.
    scale = np.where(progress < 1, 1 - progress, 1e-3)
    np.testing.assert_allclose([u["actor"] for u in used], 2e-3 * scale, rtol=1e-12)
    np.testing.assert_allclose([u["critic"] for u in used], 5e-3 * scale, rtol=1e-12)
    np.testing.assert_allclose([u["ent"] for u in used], 0.04 + (0.01 - 0.04) * progress, rtol=1e-12)
    np.testing.assert_allclose([h["charts/ent_coef"] for h in agent.history], [u["ent"] for u in used])

    used.clear()
    CLSTMPPO(CountingEnv(), actor_lr=2e-3, anneal_lr=False, **TINY).learn(3 * STEPS_PER_UPDATE)
    assert [u["actor"] for u in used] == [2e-3, 2e-3]


def test_sigterm_without_a_checkpoint_dir_saves_under_the_working_directory(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
        from test_checkpoints import ROLLOUT, TINY, CountingEnv
        from pipeline.agents.clstm_ppo import CLSTMPPO

        # SIGTERM in the 4th rollout: the saved state is the one after update 2.
        CLSTMPPO(CountingEnv(sigterm_at=3 * ROLLOUT + 2), **TINY).learn(50 * 4 * ROLLOUT)
        print("learn returned")
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "SIGTERM: saved checkpoints/latest.safetensors at update 2" in done.stdout
    assert "learn returned" not in done.stdout
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.safetensors"]
    assert CLSTMPPO.load(tmp_path / "checkpoints").num_updates == 2


def test_trainer_cli_normal_finish_on_a_synthetic_run(tmp_path: Path) -> None:
    run = TrainingRun.build(
        SyntheticData(days=2, minutes=40, seed=1), total_timesteps=3 * 2 * 8,  # a warm-up rollout, then two updates
        preset="gpu_long", num_envs=2, agent={"num_steps": 8, "hidden": 8, "torch_threads": 1,
                                              "critic_warmup_epochs": 1, "num_minibatches": 2},
    ).replace(output_dir=str(tmp_path))
    path = run.save(tmp_path / "training_run.json")
    done = subprocess.run([sys.executable, "-m", "pipeline.training.trainer", str(path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    (result_line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(result_line.removeprefix("RESULT "))
    assert result == json.loads((tmp_path / "model.json").read_text())
    assert (result["num_timesteps"], result["num_updates"], result["rank"], result["world_size"]) == (48, 2, 0, 1)
    assert result["output"] == str(tmp_path / "model.safetensors")
    assert result["last"]["update"] == 2 and result["last"]["global_step"] == 48
    model = CLSTMPPO.load(tmp_path / "model.safetensors")
    assert (model.num_updates, model.num_timesteps, model.config.num_envs) == (2, 48, 2)
    assert model.discrete  # the intraday env's discrete actions, built from the run's synthetic data


def test_a_run_names_its_data_by_kind_and_refuses_anything_else() -> None:
    run = TrainingRun.build(GymData("CartPole-v1"), total_timesteps=64, num_envs=3)
    assert run.train_env() == "CartPole-v1" and run.agent_config().num_envs == 3 and run.selection_env() is None
    values = run.to_dict()
    with pytest.raises(pydantic.ValidationError, match="union_tag_invalid|does not match any of the expected tags"):
        TrainingRun.from_dict(values | {"data": {"kind": "factory", "factory": "os:system"}})
    with pytest.raises(pydantic.ValidationError, match="data.gym.env_id"):
        TrainingRun.from_dict(values | {"data": {"kind": "gym"}})


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(os.environ["AGENT_CLAIMS_MARKER"]),))


def test_load_baseline_refuses_a_planted_pickled_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("AGENT_CLAIMS_MARKER", str(marker))
    folder = tmp_path / "baseline"
    hparams = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}}
    train_baseline("CartPole-v1", folder, BaselineConfig(algo="ppo", total_timesteps=32, hparams=hparams))
    assert load_baseline(folder).discrete  # the untouched folder loads

    # SB3 stores cloudpickled objects in the zip's "data" JSON as {":serialized:": base64}; plant one it can't know.
    model_zip = folder / MODEL_FILE
    with zipfile.ZipFile(model_zip) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(members["data"])
    data["planted"] = {":type:": "<class 'object'>",
                       ":serialized:": base64.b64encode(pickle.dumps(_Exploit())).decode()}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(model_zip, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(ValueError, match=r"pickled entries \['planted'\]"):
        load_baseline(folder)
    assert not marker.exists()

    meta = json.loads((folder / "baseline.json").read_text())
    del meta["spaces"]  # an old folder: its spaces exist only as pickles in model.zip
    (folder / "baseline.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no 'spaces' entry"):
        load_baseline(folder)
    assert not marker.exists()


def test_loading_a_model_leaves_the_process_thread_count_alone(tmp_path: Path) -> None:
    """torch_threads is a training setting: learn() applies it, loading a model to predict does not."""
    before = torch.get_num_threads()
    agent = CLSTMPPO("CartPole-v1", num_envs=2, num_steps=8, hidden=8, window=2, torch_threads=before + 1)
    assert torch.get_num_threads() == before
    path = agent.save(tmp_path / "model")
    CLSTMPPO.load(path)
    assert torch.get_num_threads() == before
    try:
        agent.learn(16)
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)


def test_a_synthetic_run_trains_on_the_market_it_names() -> None:
    from pipeline.envs.tensors import synthetic_market_tensors

    data = SyntheticData(days=2, alpha=0.25, seed=1, last_day=1, source="market")
    env = TrainingRun.build(data, total_timesteps=64, num_envs=2).train_env()
    expected = synthetic_market_tensors(days=2, alpha=0.25, seed=1, source="market").subset(days=range(1))
    assert torch.equal(env.market.bid, expected.bid) and torch.equal(env.market.features, expected.features)


@pytest.mark.parametrize(("level", "where"), [("run", "extra_key"), ("data", "data.dataset.oops"),
                                              ("agent", "agent.actor_lrr"), ("env", "env.windw")])
def test_a_saved_run_refuses_an_unknown_key_at_every_level(level: str, where: str) -> None:
    values = TrainingRun.build(DatasetData("/nowhere"), total_timesteps=64).to_dict()
    bad = {"run": {"extra_key": 1}, "data": {"data": values["data"] | {"oops": 1}},
           "agent": {"agent": values["agent"] | {"actor_lrr": 1}}, "env": {"env": values["env"] | {"windw": 1}}}
    with pytest.raises(pydantic.ValidationError, match=where.replace(".", r"\.")):
        TrainingRun.from_dict(values | bad[level])
