"""CLSTM-PPO presets: each builds a valid config, overrides apply on top, the budget picker's choice, a clear error
for an unknown name, and small_budget stays the recipe the trading controls measured."""

from __future__ import annotations

import dataclasses

import pytest
from trading_controls import CONTROL_CONFIG

from pipeline.agents.ppo_config import PRESETS, SMALL_BUDGET_MAX_STEPS, PPOConfig, preset_for_budget


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_builds_a_config_with_its_values(name: str) -> None:
    cfg = PPOConfig.preset(name)
    assert {key: getattr(cfg, key) for key in PRESETS[name]} == PRESETS[name]
    # Fields a preset does not name keep the defaults.
    untouched = {f.name for f in dataclasses.fields(PPOConfig)} - set(PRESETS[name])
    assert {k: getattr(cfg, k) for k in untouched} == {k: getattr(PPOConfig(), k) for k in untouched}


def test_presets_name_the_same_fields_and_differ() -> None:
    assert PRESETS["small_budget"].keys() == PRESETS["gpu_long"].keys()
    assert PPOConfig.preset("small_budget") != PPOConfig.preset("gpu_long")


def test_gpu_long_is_the_design_recipe_the_defaults_hold() -> None:
    assert PPOConfig.preset("gpu_long") == PPOConfig()


def test_overrides_apply_on_top_of_the_preset_and_are_checked() -> None:
    cfg = PPOConfig.preset("small_budget", seed=3, actor_lr=1e-3)
    assert (cfg.seed, cfg.actor_lr, cfg.critic_lr) == (3, 1e-3, PRESETS["small_budget"]["critic_lr"])
    with pytest.raises(TypeError, match="unknown CLSTM-PPO hyperparameter"):
        PPOConfig.preset("small_budget", learning_rate=1e-3)
    with pytest.raises(ValueError, match="out of range"):
        PPOConfig.preset("small_budget", num_steps=0)


def test_unknown_preset_names_the_presets() -> None:
    with pytest.raises(ValueError, match=r"unknown CLSTM-PPO preset 'tiny'.*\['gpu_long', 'small_budget'\]"):
        PPOConfig.preset("tiny")


def test_budget_picker_small_on_cpu_or_small_budgets_long_on_big_gpu_runs() -> None:
    big = 100 * SMALL_BUDGET_MAX_STEPS
    assert preset_for_budget(big, "cpu") == "small_budget"
    assert preset_for_budget(SMALL_BUDGET_MAX_STEPS - 1, "cuda") == "small_budget"
    assert preset_for_budget(SMALL_BUDGET_MAX_STEPS, "cuda") == "gpu_long"
    assert preset_for_budget(big, "cuda:1") == "gpu_long"
    with pytest.raises(ValueError, match="total_timesteps"):
        preset_for_budget(0, "cuda")


def test_small_budget_is_the_trading_controls_recipe() -> None:
    # The learning controls train with the preset by name (plus a seed and one CPU thread), so what they measure
    # is what the preset does.
    assert CONTROL_CONFIG == PPOConfig.preset("small_budget", seed=0, torch_threads=1)
