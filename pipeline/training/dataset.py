"""The training dataset of one trading day D: a window of trading days ending at D, split by time, saved to disk.

The window is the `window_days` XNYS sessions ending at D, cut into three disjoint parts in time order, so that
what chooses a model never sees the days that judge it:

- `train_days`: gradient updates and the normalization statistics;
- an embargo of `embargo_days` dropped after them, so that no feature window or episode straddles training and
  choosing;
- `selection_days`: everything that chooses (checkpoint choice and early stopping, the choice among seeds and
  model kinds, ensemble weights, the hyperparameter search's score);
- `gate_days`: the window's last sessions, read by the promotion gate alone.

A chosen feature that is null on every row of the window's days and symbols (a minute window on daily bars) is
refused with its name; the manifest's `feature_fill` says of each chosen feature whether it is filled, constant
(one value per symbol: it tells the agent nothing) or empty (`pipeline.features.quality.column_fill`).

The manifest records the four lists (ISO dates). Everything is read through the one bridge
(`pipeline.envs.warehouse_loader.load_market_tensors`), each part on its own days only, and nothing after D is
read. The normalization statistics are those of the train part alone, in `RunningMeanStd`'s layout so that a
`RunningNormalizer` can start from them. Training processes load only `CHOOSING_PARTS` (`load_dataset(...,
parts=CHOOSING_PARTS)`): the gate's tensors are never in their memory.

`data_version` is the sha256 of the warehouse rows the dataset is made of (`UPSTREAM_TABLES`, every column, the
train, selection and gate days, the dataset's symbols), sorted and encoded canonically (`_table_digest`), so the
same rows give the same version whatever their insertion order, and any changed row gives another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pipeline.agents.normalize import RunningMeanStd
from pipeline.contract.calendar import earlier_trading_days, is_trading_day
from pipeline.envs.tensors import MarketTensors
from pipeline.envs.warehouse_loader import MarketLoaderConfig, load_market_tensors
from pipeline.features.catalog import BARS, MARKET, market_feature_names
from pipeline.features.quality import EMPTY, FILLED, column_fill
from pipeline.lake import Warehouse

PARTS = ("train", "selection", "gate")
CHOOSING_PARTS = ("train", "selection")
"""What training, checkpoint choice, early stopping, seed choice and the hyperparameter search may read."""
UPSTREAM_TABLES = (MARKET, BARS, "raw.bars")
"""What `data_version` covers: the features, the quotes (features.bars_1m) and the bars that price bar-only symbols."""
MARKET_FILE, NORMALIZATION_FILE, MANIFEST_FILE = "market.safetensors", "normalization.safetensors", "manifest.json"
_TENSORS = ("bid", "ask", "features", "turbulence", "session_minutes", "tradable", "quoted")


@dataclass(frozen=True)
class DatasetConfig:
    """Which days and symbols make the dataset of a day D, and what the agent sees of them."""

    window_days: int = 41
    """XNYS sessions in the window, D included: train + embargo + selection + gate (default 20 + 1 + 5 + 15)."""
    embargo_days: int = 1
    """Sessions dropped between the train and selection parts, so nothing of one leaks into the other."""
    selection_days: int = 5
    """Sessions after the embargo on which checkpoints, seeds, model kinds and ensemble weights are chosen."""
    gate_days: int = 15
    """The window's last sessions, read by the promotion gate alone. Ten is the fewest that give an interval
    (`pipeline.backtest.metrics.MIN_INTERVAL_DAYS`) and fifteen the fewest a share of the oracle is reported over;
    measured by benchmarks/gate_calibration.py (README), 15 gate days promoted 0 of 40 no-signal markets and 37 of
    40 at alpha 0.15, 10 gate days 34 of 40 at alpha 0.15."""
    symbols: tuple[str, ...] | None = None
    """Symbols to load; None: every symbol features.market holds on the train days."""
    loader: MarketLoaderConfig = MarketLoaderConfig()
    """Features, imputed half-spread and turbulence column (see `MarketLoaderConfig`)."""

    def __post_init__(self) -> None:
        if self.selection_days < 1 or self.gate_days < 1 or self.embargo_days < 0:
            raise ValueError(
                f"need selection_days >= 1, gate_days >= 1 and embargo_days >= 0; got {self.selection_days}, "
                f"{self.gate_days}, {self.embargo_days}"
            )
        if self.window_days < self.held_out_days + self.embargo_days + 1:
            raise ValueError(
                f"window_days={self.window_days} leaves no train day after {self.embargo_days} embargo, "
                f"{self.selection_days} selection and {self.gate_days} gate days; raise window_days or lower the others"
            )
        if self.symbols is not None:
            object.__setattr__(self, "symbols", tuple(self.symbols))
            if not self.symbols or len(set(self.symbols)) != len(self.symbols):
                raise ValueError(f"symbols must name each symbol once (or be None for all); got {self.symbols}")

    @property
    def held_out_days(self) -> int:
        """Selection and gate days: the window's sessions after the embargo."""
        return self.selection_days + self.gate_days


@dataclass(frozen=True)
class DaySplit:
    """The window's sessions, oldest first, and the part each belongs to (disjoint, in this order)."""

    window: tuple[date, ...]
    train: tuple[date, ...]
    embargo: tuple[date, ...]
    selection: tuple[date, ...]
    gate: tuple[date, ...]

    def manifest_days(self) -> dict[str, list[str]]:
        """The manifest's lists of ISO dates: train_days, embargo_days, selection_days, gate_days."""
        return {f"{part}_days": [d.isoformat() for d in getattr(self, part)]
                for part in ("train", "embargo", "selection", "gate")}


def window_split(end_day: date, config: DatasetConfig) -> DaySplit:
    """The `config.window_days` XNYS sessions ending at `end_day` (inclusive), split
    train | embargo | selection | gate."""
    if not is_trading_day(end_day):
        raise ValueError(f"{end_day} is not an XNYS session: a dataset ends on a trading day (the partition D)")
    window = (*earlier_trading_days(end_day, config.window_days - 1), end_day)
    if len(window) < config.window_days:
        raise ValueError(f"the calendar holds only {len(window)} sessions up to {end_day}; lower window_days")
    n_train = config.window_days - config.embargo_days - config.held_out_days
    first_selection = n_train + config.embargo_days
    first_gate = first_selection + config.selection_days
    return DaySplit(window, window[:n_train], window[n_train:first_selection], window[first_selection:first_gate],
                    window[first_gate:])


@dataclass(frozen=True)
class TrainingDataset:
    """Market tensors of the parts of one D (train, selection, gate; a loaded dataset may hold fewer), the train
    part's normalization, and the manifest."""

    parts: dict[str, MarketTensors]
    normalization: dict[str, torch.Tensor]
    """float64 `mean` [F], `var` [F] (population) and `count` [] of the train part's session bars, per column of
    the features (RunningMeanStd's mean/var/count)."""
    manifest: dict[str, Any]
    """JSON-ready: data_version, data_version_covers, end_day, window [first, last], train_days, embargo_days,
    selection_days, gate_days (ISO dates), symbols, feature_names, feature_fill, config."""

    @property
    def data_version(self) -> str:
        return self.manifest["data_version"]

    @property
    def train(self) -> MarketTensors:
        return self.part("train")

    def part(self, name: str) -> MarketTensors:
        """The tensors of one part, by name."""
        if name not in PARTS:
            raise ValueError(f"part must be one of {PARTS}; got {name!r}")
        if name not in self.parts:
            raise ValueError(f"this dataset was loaded with parts {sorted(self.parts)}; {name!r} was left out "
                             "(load_dataset(..., parts=...) names the parts to read)")
        return self.parts[name]


def _require_days(store: Warehouse, days: Sequence[date], end_day: date, config: DatasetConfig) -> None:
    if not store.table_exists(MARKET):
        raise ValueError(f"{MARKET} does not exist in {store.path}: materialize the features group first")
    present = set(store.query(
        f"SELECT DISTINCT trading_day FROM {MARKET} WHERE list_contains(?::DATE[], trading_day)", [list(days)]
    )["trading_day"].to_list())
    missing = [str(d) for d in days if d not in present]
    if missing:
        first = store.query(f"SELECT min(trading_day) AS first FROM {MARKET}")["first"][0]
        raise ValueError(
            f"{MARKET} has no rows for {missing}, needed by the {config.window_days}-day window ending {end_day} "
            f"(the warehouse's first day is {first}): materialize those partitions, or shorten the window "
            "with DatasetConfig.window_days"
        )


def _train_symbols(store: Warehouse, train_days: Sequence[date]) -> tuple[str, ...]:
    rows = store.query(
        f"SELECT DISTINCT symbol FROM {MARKET} WHERE list_contains(?::DATE[], trading_day) ORDER BY symbol",
        [list(train_days)],
    )
    return tuple(rows["symbol"].to_list())


def _feature_fill(store: Warehouse, days: Sequence[date], symbols: Sequence[str],
                  features: Sequence[str]) -> dict[str, str]:
    """`column_fill` of `features` over the features.market rows of `days` and `symbols`."""
    columns = ", ".join(f'"{c}"' for c in features)
    rows = store.query(
        f"SELECT symbol, {columns} FROM {MARKET} WHERE list_contains(?::DATE[], trading_day) "
        "AND list_contains(?::VARCHAR[], symbol)", [list(days), list(symbols)],
    )
    return column_fill(rows, features)


def _refuse_empty_features(store: Warehouse, days: Sequence[date], symbols: Sequence[str],
                           fill: dict[str, str]) -> None:
    empty = [name for name, state in fill.items() if state == EMPTY]
    if not empty:
        return
    # What to choose instead: every catalog feature the table holds that changes here.
    held = set(store.query(f"SELECT * FROM {MARKET} LIMIT 0").columns)
    every = _feature_fill(store, days, symbols, [c for c in market_feature_names() if c in held])
    filled = [name for name, state in every.items() if state == FILLED]
    raise ValueError(
        f"the chosen feature(s) {empty} are null on every {MARKET} row of {list(symbols)} on {days[0]}..{days[-1]}: "
        "their windows do not fit these bars (e.g. minute windows on daily bars) or the source lacks their "
        f"inputs (ticks, quotes). Choose features that carry data here, by name in the dataset's `features`: "
        f"{filled}"
    )


def _column_bytes(series: pl.Series) -> tuple[str, bytes]:
    """A type label and a byte encoding of one column that does not depend on the library's versions."""
    dtype = series.dtype
    nulls = series.is_null().to_numpy().astype(np.uint8).tobytes()
    if dtype == pl.String:
        values = [v.encode() for v in series.fill_null("").to_list()]
        return "str", nulls + b"".join(len(v).to_bytes(8, "little") + v for v in values)
    if isinstance(dtype, pl.Datetime):
        label, physical = "ts_us_utc", series.dt.convert_time_zone("UTC").dt.cast_time_unit("us").to_physical()
    elif dtype == pl.Date:
        label, physical = "date", series.to_physical()
    elif dtype == pl.Boolean:
        label, physical = "bool", series.cast(pl.UInt8)
    elif dtype.is_integer():
        label, physical = "i64", series
    elif dtype.is_float():
        values = series.cast(pl.Float64).fill_null(0.0).to_numpy().astype("<f8")
        values[np.isnan(values)] = np.nan  # one NaN bit pattern
        return "f64", nulls + values.tobytes()
    else:
        raise ValueError(f"data_version cannot encode a column of type {dtype}; add it to _column_bytes")
    return label, nulls + physical.cast(pl.Int64).fill_null(0).to_numpy().astype("<i8").tobytes()


def _table_digest(digest: Any, table: str, rows: pl.DataFrame) -> None:
    """Feed `rows` into `digest`: sorted by every column (insertion order is not data), columns by name."""
    columns = sorted(rows.columns)
    rows = rows.select(columns).sort(columns, nulls_last=True)
    digest.update(f"{table}\0{rows.height}\0".encode())
    for name in columns:
        label, payload = _column_bytes(rows[name])
        digest.update(f"{name}\0{label}\0{len(payload)}\0".encode())
        digest.update(payload)


def data_version(store: Warehouse, days: Sequence[date], symbols: Sequence[str]) -> str:
    """sha256 hex of every column of the `UPSTREAM_TABLES` rows of `days` and `symbols` (absent tables: none)."""
    digest = hashlib.sha256()
    for table in UPSTREAM_TABLES:
        if store.table_exists(table):
            rows = store.read_partition(table, days).filter(pl.col("symbol").is_in(list(symbols)))
        else:
            rows = pl.DataFrame()
        _table_digest(digest, table, rows)
    return digest.hexdigest()


def session_normalization(market: MarketTensors) -> dict[str, torch.Tensor]:
    """Mean, variance and count of each feature column over the session bars of every day and symbol."""
    in_session = torch.arange(market.num_minutes) < market.session_minutes.cpu()[:, None]
    rows = market.features.cpu()[in_session].reshape(-1, market.num_features)
    stats = RunningMeanStd((market.num_features,), "cpu", torch.float64)
    stats.update(rows)
    return {"mean": stats.mean, "var": stats.var, "count": stats.count}


def build_dataset(store: Warehouse, end_day: date, config: DatasetConfig | None = None) -> TrainingDataset:
    """The dataset of trading day `end_day` (D) from the warehouse; reads no row after D."""
    cfg = config or DatasetConfig()
    split = window_split(end_day, cfg)
    read_days = [*split.train, *split.selection, *split.gate]
    _require_days(store, read_days, end_day, cfg)
    symbols = cfg.symbols if cfg.symbols is not None else _train_symbols(store, split.train)
    fill = _feature_fill(store, read_days, symbols, cfg.loader.features)
    _refuse_empty_features(store, read_days, symbols, fill)
    parts = {part: load_market_tensors(store, getattr(split, part), symbols, cfg.loader) for part in PARTS}
    train = parts["train"]
    manifest = {
        "data_version": data_version(store, read_days, symbols),
        "data_version_covers": (
            f"sha256 of every column of {list(UPSTREAM_TABLES)} on the train, selection and gate days for the "
            "symbols, rows sorted by every column"
        ),
        "end_day": str(end_day),
        "window": [str(split.window[0]), str(split.window[-1])],
        **split.manifest_days(),
        "symbols": list(train.symbols),
        "feature_names": list(train.feature_names),
        "feature_fill": fill,
        "config": dataclasses.asdict(cfg),
    }
    # Through JSON once, so the manifest in memory is the one `load_dataset` reads back (lists, not tuples).
    manifest = json.loads(json.dumps(manifest))
    return TrainingDataset(parts, session_normalization(train), manifest)


def save_dataset(dataset: TrainingDataset, directory: str | Path) -> Path:
    """Write market.safetensors (train.*, selection.*, gate.*), normalization.safetensors and manifest.json."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    market = {
        f"{part}.{name}": getattr(dataset.part(part), name).detach().cpu().contiguous()
        for part in PARTS for name in _TENSORS
    }
    save_file(market, str(out / MARKET_FILE))
    save_file({k: v.detach().cpu().contiguous() for k, v in dataset.normalization.items()},
              str(out / NORMALIZATION_FILE))
    (out / MANIFEST_FILE).write_text(json.dumps(dataset.manifest, indent=2, sort_keys=True) + "\n")
    return out


def load_manifest(directory: str | Path) -> dict:
    """The manifest of a saved dataset alone (its data version, days, symbols), without reading the tensors."""
    folder = Path(directory)
    if not (folder / MANIFEST_FILE).is_file():
        raise ValueError(f"{folder} holds no {MANIFEST_FILE}: pass a folder written by save_dataset")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    if "gate_days" not in manifest:
        raise ValueError(f"the dataset in {folder} predates the train | selection | gate split (it has no gate_days): "
                         "re-materialize its training_dataset partition")
    return manifest


def load_dataset(directory: str | Path, device: torch.device | str = "cpu",
                 parts: Sequence[str] = PARTS) -> TrainingDataset:
    """A dataset written by `save_dataset`, the market tensors of `parts` on `device` (safetensors and JSON only:
    no pickle). Whatever trains or chooses loads `CHOOSING_PARTS`, never the gate's."""
    folder = Path(directory)
    manifest = load_manifest(folder)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown dataset parts {unknown}; choose from {PARTS}")
    with safe_open(str(folder / MARKET_FILE), framework="pt", device=str(device)) as market:
        loaded = {
            part: MarketTensors(
                **{name: market.get_tensor(f"{part}.{name}") for name in _TENSORS},
                feature_names=tuple(manifest["feature_names"]),
                symbols=tuple(manifest["symbols"]),
                trading_days=tuple(manifest[f"{part}_days"]),
            )
            for part in parts
        }
    return TrainingDataset(loaded, normalization=load_file(str(folder / NORMALIZATION_FILE)), manifest=manifest)
