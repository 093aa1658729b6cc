"""The training dataset of a day D on a real DuckDB warehouse filled by the real feature code: the time split
into train, embargo, selection and gate days (disjoint, in time order), nothing read after D, normalization from
the train days only, a data version that follows the rows and nothing else, an exact save/load, and the envs the
trainer builds from the saved folder (never on the gate's days)."""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from test_env_loader import _scramble, copy_of

from pipeline.contract.calendar import trading_days
from pipeline.envs.frames import synthetic_market_frames
from pipeline.envs.warehouse_loader import MarketLoaderConfig
from pipeline.lake import Warehouse
from pipeline.training.dataset import (
    DatasetConfig,
    TrainingDataset,
    build_dataset,
    load_dataset,
    save_dataset,
    window_split,
)
from pipeline.training.env_factories import intraday_env, portfolio_env

SYMBOLS = ("QQQ", "SPY")
# The warehouse holds 2024-07-01 .. 2024-07-11 (7/3 closes early, 7/4 is a holiday); D is the day before the last.
DAYS = tuple(trading_days(date(2024, 7, 1), date(2024, 7, 11)))
D, AFTER_D = date(2024, 7, 10), date(2024, 7, 11)
CONFIG = DatasetConfig(window_days=7, embargo_days=1, selection_days=1, gate_days=2)
TRAIN = (date(2024, 7, 1), date(2024, 7, 2), date(2024, 7, 3))
EMBARGO, SELECTION, GATE = (date(2024, 7, 5),), (date(2024, 7, 8),), (date(2024, 7, 9), date(2024, 7, 10))
PARTS = {"train": TRAIN, "embargo": EMBARGO, "selection": SELECTION, "gate": GATE}
TENSORS = ("bid", "ask", "features", "turbulence", "session_minutes", "tradable", "quoted")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """features.bars_1m and features.market of DAYS: the synthetic source's ticks through pipeline.features."""
    bars, features = synthetic_market_frames(len(DAYS), 0.1, 0, SYMBOLS, str(DAYS[0]))
    store = Warehouse(tmp_path_factory.mktemp("training") / "warehouse.duckdb")
    store.write_partition("features.bars_1m", DAYS, bars)
    store.write_partition("features.market", DAYS, features)
    return store.path


@pytest.fixture(scope="module")
def dataset(lake: Path) -> TrainingDataset:
    return build_dataset(Warehouse(lake), D, CONFIG)


def _where(*days: date) -> str:
    return "trading_day IN (" + ", ".join(f"DATE '{d}'" for d in days) + ")"


def _assert_same_market(a, b, part: str) -> None:
    for name in TENSORS:
        assert torch.equal(getattr(a, name), getattr(b, name)), f"{part}.{name}"
    assert (a.feature_names, a.symbols, a.trading_days) == (b.feature_names, b.symbols, b.trading_days), part


def test_the_default_window_is_train_embargo_selection_gate_ending_at_d() -> None:
    split = window_split(D, DatasetConfig())
    assert list(split.window) == trading_days(split.window[0], D) and len(split.window) == 41
    assert date(2024, 7, 4) not in split.window  # a holiday is no session
    assert split.train == split.window[:20] and split.embargo == split.window[20:21]
    assert split.selection == split.window[21:26] and split.gate == split.window[26:] and split.gate[-1] == D
    with pytest.raises(ValueError, match="2024-07-04 is not an XNYS session"):
        window_split(date(2024, 7, 4), DatasetConfig())
    with pytest.raises(ValueError, match="leaves no train day.*raise window_days"):
        DatasetConfig(window_days=8, embargo_days=1, selection_days=3, gate_days=4)
    with pytest.raises(ValueError, match="gate_days >= 1"):
        DatasetConfig(gate_days=0)


@pytest.mark.parametrize("config", [CONFIG, DatasetConfig(), DatasetConfig(window_days=50, embargo_days=3,
                                                                            selection_days=8, gate_days=15)])
def test_train_selection_and_gate_days_are_disjoint_and_in_time_order(config: DatasetConfig) -> None:
    days = window_split(D, config).manifest_days()
    parts = [[date.fromisoformat(d) for d in days[f"{p}_days"]] for p in ("train", "embargo", "selection", "gate")]
    flat = [d for part in parts for d in part]
    assert flat == sorted(flat) and len(set(flat)) == len(flat) == config.window_days
    assert [len(p) for p in parts[1:]] == [config.embargo_days, config.selection_days, config.gate_days]
    assert max(parts[0]) < min(parts[2]) and max(parts[2]) < min(parts[3]) and parts[3][-1] == D


def test_the_dataset_holds_its_parts_with_train_only_statistics(dataset: TrainingDataset) -> None:
    manifest = dataset.manifest
    assert manifest["end_day"] == str(D) and manifest["window"] == [str(TRAIN[0]), str(D)]
    for part, days in PARTS.items():
        assert manifest[f"{part}_days"] == [str(d) for d in days], part
    for part in ("train", "selection", "gate"):
        assert dataset.part(part).trading_days == tuple(manifest[f"{part}_days"]), part
        assert list(dataset.part(part).symbols) == manifest["symbols"] == list(SYMBOLS)
        assert list(dataset.part(part).feature_names) == manifest["feature_names"]
    assert manifest["config"]["window_days"] == 7 and len(manifest["data_version"]) == 64
    # 2024-07-03 closes at 13:00: 210 bars, padded to 390 and left out of the statistics.
    assert dataset.train.session_minutes.tolist() == [390, 390, 210]
    rows = np.concatenate([dataset.train.features[d, :m].reshape(-1, dataset.train.num_features).double().numpy()
                           for d, m in enumerate(dataset.train.session_minutes.tolist())])
    norm = dataset.normalization
    assert float(norm["count"]) == rows.shape[0] == (390 + 210 + 390) * len(SYMBOLS)
    np.testing.assert_allclose(norm["mean"].numpy(), rows.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(norm["var"].numpy(), rows.var(axis=0), rtol=1e-9, atol=1e-12)


def test_a_window_before_the_warehouse_names_the_missing_days_and_the_knob(lake: Path) -> None:
    with pytest.raises(ValueError, match=r"no rows for \['2024-06-27', '2024-06-28'\].*DatasetConfig.window_days"):
        build_dataset(Warehouse(lake), D, DatasetConfig(window_days=9, embargo_days=0, selection_days=1,
                                                        gate_days=1))


def test_a_chosen_feature_null_on_every_row_is_refused_with_its_name(lake: Path, tmp_path: Path) -> None:
    # What a minute window is on daily bars: null on every row of every symbol.
    store = copy_of(lake, tmp_path)
    store.execute("UPDATE features.market SET log_return_5m = NULL")
    config = dataclasses.replace(CONFIG, loader=MarketLoaderConfig(features=("log_return_1m", "log_return_5m")))
    with pytest.raises(ValueError, match=r"\['log_return_5m'\] are null on every features.market row of "
                       r"\['QQQ', 'SPY'\] on 2024-07-01..2024-07-10.*'log_return_1m'"):
        build_dataset(store, D, config)


def test_the_manifest_reports_a_constant_feature_as_constant_not_filled(
    lake: Path, dataset: TrainingDataset, tmp_path: Path
) -> None:
    assert dataset.manifest["feature_fill"] == dict.fromkeys(dataset.manifest["config"]["loader"]["features"],
                                                             "filled")
    # session_return as on daily bars, where a session is one bar: 0.0 on every row.
    store = copy_of(lake, tmp_path)
    store.execute("UPDATE features.market SET session_return = 0.0")
    config = dataclasses.replace(CONFIG, loader=MarketLoaderConfig(features=("log_return_1m", "session_return")))
    assert build_dataset(store, D, config).manifest["feature_fill"] == {"log_return_1m": "filled",
                                                                        "session_return": "constant"}


def test_later_parts_and_later_days_change_nothing_of_the_earlier_parts(
    lake: Path, dataset: TrainingDataset, tmp_path: Path
) -> None:
    store = copy_of(lake, tmp_path)
    _scramble(store, _where(*GATE, AFTER_D))
    moved = build_dataset(store, D, CONFIG)
    for part in ("train", "selection"):
        _assert_same_market(dataset.part(part), moved.part(part), part)
    for name, tensor in dataset.normalization.items():
        assert torch.equal(tensor, moved.normalization[name]), name
    assert not torch.equal(dataset.part("gate").features, moved.part("gate").features), "the scramble did nothing"
    assert moved.data_version != dataset.data_version


def test_the_day_after_d_changes_nothing_at_all(lake: Path, dataset: TrainingDataset, tmp_path: Path) -> None:
    store = copy_of(lake, tmp_path)
    _scramble(store, _where(AFTER_D))
    assert store.row_count("features.market", [AFTER_D]) < 390 * len(SYMBOLS)  # the scramble reached D+1
    moved = build_dataset(store, D, CONFIG)
    for part in ("train", "selection", "gate"):
        _assert_same_market(dataset.part(part), moved.part(part), part)
    assert moved.normalization.keys() == dataset.normalization.keys()
    assert all(torch.equal(v, moved.normalization[k]) for k, v in dataset.normalization.items())
    assert moved.manifest == dataset.manifest


def test_a_changed_train_row_changes_the_data_version(lake: Path, dataset: TrainingDataset, tmp_path: Path) -> None:
    store = copy_of(lake, tmp_path)
    store.execute(f"UPDATE features.bars_1m SET ask = ask + 0.01 WHERE {_where(TRAIN[1])} AND symbol = 'SPY' "
                  "AND minute(ts) = 0 AND hour(ts) = 15")
    moved = build_dataset(store, D, CONFIG)
    assert moved.data_version != dataset.data_version
    assert not torch.equal(moved.train.ask, dataset.train.ask)


def test_the_data_version_follows_the_rows_not_their_order_or_the_build(
    lake: Path, dataset: TrainingDataset, tmp_path: Path
) -> None:
    assert build_dataset(Warehouse(lake), D, CONFIG).data_version == dataset.data_version
    store = copy_of(lake, tmp_path)
    # The same rows inserted in reverse order: a different physical table, the same data.
    for table in ("features.market", "features.bars_1m"):
        rows = store.read_partition(table, DAYS)
        store.write_partition(table, DAYS, rows.reverse())
    assert build_dataset(store, D, CONFIG).data_version == dataset.data_version


def test_save_and_load_round_trip_exactly_as_safetensors_and_json(dataset: TrainingDataset, tmp_path: Path) -> None:
    folder = save_dataset(dataset, tmp_path / "datasets" / str(D))
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "market.safetensors",
                                                        "normalization.safetensors"]
    with safe_open(str(folder / "market.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == sorted(f"{p}.{n}" for p in ("train", "selection", "gate") for n in TENSORS)
    assert json.loads((folder / "manifest.json").read_text()) == dataset.manifest
    loaded = load_dataset(folder)
    for part in ("train", "selection", "gate"):
        _assert_same_market(dataset.part(part), loaded.part(part), part)
    choosing = load_dataset(folder, parts=("train", "selection"))
    with pytest.raises(ValueError, match="'gate' was left out"):
        choosing.part("gate")
    assert loaded.normalization.keys() == dataset.normalization.keys()
    assert all(torch.equal(v, loaded.normalization[k]) for k, v in dataset.normalization.items())
    assert loaded.manifest == dataset.manifest and loaded.data_version == dataset.data_version


def _rollout(env, steps: int, discrete: bool) -> set[int]:
    """Random actions for up to `steps` steps (or to the end of an evaluation walk); the episode ids seen."""
    obs, _ = env.reset(seed=0)
    assert obs.shape == (env.num_envs, *env.obs_shape)
    generator = torch.Generator().manual_seed(0)
    seen: set[int] = set()
    for _ in range(steps):
        if discrete:
            actions = torch.randint(0, env.action_dim, (env.num_envs,), generator=generator)
        else:
            actions = torch.rand((env.num_envs, env.action_dim), generator=generator) * 2 - 1
        obs, reward, _, _, info = env.step(actions)
        assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
        seen.update(i for i in info["episode_id"].tolist() if i >= 0)
        if bool(env.eval_finished):
            break
    return seen


def test_env_factories_build_training_and_selection_envs_and_never_a_gate_env(
    dataset: TrainingDataset, tmp_path: Path
) -> None:
    folder = str(save_dataset(dataset, tmp_path / "dataset"))
    train = intraday_env(folder, "train", num_envs=4, window=8)
    assert not train.config.evaluation and train.market.trading_days == dataset.train.trading_days
    assert train.obs_shape == (8, dataset.train.num_features + 4)
    _rollout(train, 50, discrete=True)
    # Selection walks each (day, symbol) once: 1 day x 2 symbols.
    selection = intraday_env(folder, "selection", num_envs=3, window=8)
    assert selection.config.evaluation and selection.market.trading_days == dataset.part("selection").trading_days
    assert _rollout(selection, 2000, discrete=True) == {0, 1} and bool(selection.eval_finished)

    portfolio = portfolio_env(folder, "train", num_envs=2, window=4)
    assert portfolio.action_dim == len(SYMBOLS) + 1
    _rollout(portfolio, 30, discrete=False)
    walk = portfolio_env(folder, "selection", num_envs=2, window=4)
    assert _rollout(walk, 1000, discrete=False) == {0} and bool(walk.eval_finished)
    with pytest.raises(ValueError, match="part must be one of"):
        intraday_env(folder, "test")
    with pytest.raises(ValueError, match="read by the promotion gate alone"):
        intraday_env(folder, "gate")
    with pytest.raises(ValueError, match="evaluation follows the part"):
        intraday_env(folder, "train", evaluation=True)
