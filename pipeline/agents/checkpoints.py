"""Checkpoint files: one safetensors file per checkpoint, metadata as JSON in its header, written atomically.

Nothing here unpickles: tensors come from safetensors, everything else from JSON. A checkpoint folder that holds
pickle files (or a "checkpoint" that is a pickle) is refused, so a planted file can't run code on load.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

METADATA_KEY = "clstm_ppo"
SUFFIX = ".safetensors"
CHECKPOINT_NAMES = ("latest", "best_composite", "best_sharpe", "best_win_rate", "best_profit_rate")
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".zip", ".ckpt", ".joblib"}


class UnsafeCheckpointError(RuntimeError):
    """The checkpoint (or its folder) contains a pickle, which this project never loads."""


def checkpoint_path(path: str | os.PathLike) -> Path:
    """`path` as a checkpoint file: a folder means its `latest.safetensors`; a bare name gets the suffix."""
    p = Path(path)
    if p.is_dir():
        return p / f"latest{SUFFIX}"
    return p if p.suffix == SUFFIX else p.with_name(p.name + SUFFIX)


def write_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write tensors + JSON metadata to `path` atomically (temp file in the same folder, then os.replace)."""
    target = checkpoint_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file(plain, tmp, metadata={METADATA_KEY: json.dumps(metadata)})
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _refuse_pickles(target: Path) -> None:
    planted = sorted(p.name for p in target.parent.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
    if planted:
        raise UnsafeCheckpointError(
            f"checkpoint folder {target.parent} contains pickle-format file(s) {planted}; this project loads only "
            "safetensors + JSON, and refuses folders with pickles in them. Delete those files if you trust nothing "
            "in them, or load from a clean folder."
        )
    with open(target, "rb") as fh:
        head = fh.read(9)
    # A safetensors file is an 8-byte little-endian header length, then a JSON header starting with "{".
    header_len = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    if not (0 < header_len < target.stat().st_size and head[8:9] == b"{"):
        kind = "a pickle/torch.save archive" if head[:1] == b"\x80" or head[:2] == b"PK" else "not safetensors"
        raise UnsafeCheckpointError(
            f"{target} is {kind}, not a safetensors checkpoint; refusing to load it (this project never "
            "unpickles checkpoints)"
        )


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load (tensors on CPU, metadata) from a checkpoint written by `write_checkpoint`."""
    target = checkpoint_path(path)
    if not target.exists():
        raise FileNotFoundError(f"no checkpoint at {target}; pass a .safetensors file or a checkpoint folder")
    _refuse_pickles(target)
    with safe_open(str(target), framework="pt", device="cpu") as fh:
        meta = fh.metadata() or {}
        if METADATA_KEY not in meta:
            raise ValueError(f"{target} is a safetensors file but not a CLSTM-PPO checkpoint (no metadata)")
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    return tensors, json.loads(meta[METADATA_KEY])


def optimizer_to_flat(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and its JSON-able param_groups."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            tensors[f"{prefix}.{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": state["param_groups"]}


def optimizer_from_flat(
    prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    """Inverse of `optimizer_to_flat`: load the state back into `optimizer`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_to_flat() -> tuple[dict[str, torch.Tensor], dict]:
    """Capture torch (CPU + CUDA), numpy and python RNG states."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss = random.getstate()
    meta = {"numpy": [name, int(pos), int(has_gauss), float(cached)], "python": [version, list(internal), gauss]}
    return tensors, meta


def rng_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restore the RNG states captured by `rng_to_flat`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
