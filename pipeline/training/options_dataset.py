"""The options agent's dataset of one trading day D: one underlying's option chains over the window ending at D,
split by time like the intraday dataset (`pipeline.training.dataset.window_split`: train | embargo | selection |
gate), saved to disk as safetensors and a JSON manifest.

Each part is read from the warehouse through the one options bridge (`warehouse_loader.load_option_chain`) on its
own days only; nothing after D is read. A session shorter than a regular one (an early close) has fewer snapshots
than the others and cannot share their tensors: it is left out of its part and named in the manifest
(`short_sessions`). Training processes load `CHOOSING_PARTS` only (`load_options_part`), never the gate's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pipeline.contract.calendar import REGULAR_SESSION_MINUTES, trading_session
from pipeline.envs.options_chain import OptionChainTensors
from pipeline.envs.warehouse_loader import OptionLoaderConfig, load_option_chain
from pipeline.lake import Warehouse
from pipeline.training.dataset import MANIFEST_FILE, PARTS, DatasetConfig, window_split

CHAIN_FILE = "chain.safetensors"
_TENSORS = tuple(f.name for f in fields(OptionChainTensors) if f.name != "feature_names")


@dataclass(frozen=True)
class OptionsDatasetConfig:
    """Which days and which underlying make the options dataset of a day D."""

    underlying: str = "SYMA"
    """The underlying whose chain the agent trades."""
    window: DatasetConfig = DatasetConfig()
    """The window and its split (window_days, embargo_days, selection_days, gate_days; its symbols and loader
    are not read)."""
    loader: OptionLoaderConfig = OptionLoaderConfig()
    """Expiries and strikes of the grid, features.options columns observed, snapshot slots."""


def _regular(days: tuple[date, ...]) -> tuple[list[date], list[date]]:
    """(regular sessions, shorter ones) of `days`."""
    regular = [d for d in days if trading_session(d).minutes == REGULAR_SESSION_MINUTES]
    return regular, [d for d in days if d not in regular]


def _chain_version(chains: dict[str, OptionChainTensors]) -> str:
    """sha256 of every tensor of every part (the bytes of what the agent sees and trades)."""
    digest = hashlib.sha256()
    for part, chain in chains.items():
        for name in _TENSORS:
            digest.update(f"{part}.{name}\0".encode())
            digest.update(getattr(chain, name).cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_options_dataset(store: Warehouse, end_day: date, config: OptionsDatasetConfig | None = None,
                          directory: str | Path | None = None) -> dict[str, Any]:
    """Load the parts of D's window from the warehouse; with `directory`, save them there. Returns the manifest."""
    cfg = config or OptionsDatasetConfig()
    split = window_split(end_day, cfg.window)
    chains: dict[str, OptionChainTensors] = {}
    short: list[str] = []
    days: dict[str, list[str]] = {}
    for part in PARTS:
        regular, shorter = _regular(getattr(split, part))
        if not regular:
            raise ValueError(f"the {part} part of the window ending {end_day} has no regular session; widen it")
        chains[part] = load_option_chain(store, regular, cfg.underlying, cfg.loader)
        short += [d.isoformat() for d in shorter]
        days[f"{part}_days"] = [d.isoformat() for d in regular]
    manifest = json.loads(json.dumps({
        "data_version": _chain_version(chains),
        "data_version_covers": "sha256 of every option-chain tensor of the train, selection and gate parts",
        "end_day": end_day.isoformat(),
        "window": [split.window[0].isoformat(), split.window[-1].isoformat()],
        **days,
        "embargo_days": [d.isoformat() for d in split.embargo],
        "short_sessions": short,
        "underlying": cfg.underlying,
        "feature_names": list(chains["train"].feature_names),
        "config": asdict(cfg),
    }, default=str))
    if directory is not None:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file({f"{part}.{name}": getattr(chain, name).detach().cpu().contiguous()
                   for part, chain in chains.items() for name in _TENSORS}, str(out / CHAIN_FILE))
        (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def load_options_manifest(directory: str | Path) -> dict[str, Any]:
    folder = Path(directory)
    if not (folder / CHAIN_FILE).is_file():
        raise ValueError(f"{folder} holds no {CHAIN_FILE}: pass a folder written by build_options_dataset")
    return json.loads((folder / MANIFEST_FILE).read_text())


def load_options_part(directory: str | Path, part: str, device: torch.device | str = "cpu") -> OptionChainTensors:
    """The chain tensors of one part (safetensors only, no pickle)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}; got {part!r}")
    manifest = load_options_manifest(directory)
    with safe_open(str(Path(directory) / CHAIN_FILE), framework="pt", device=str(device)) as stored:
        tensors = {name: stored.get_tensor(f"{part}.{name}") for name in _TENSORS}
    return OptionChainTensors(**tensors, feature_names=tuple(manifest["feature_names"]))

