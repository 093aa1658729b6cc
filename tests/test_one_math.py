"""One implementation of each piece of math: no numpy/torch twins of the features, the synthetic market or
Black-Scholes are left in the source tree, and the one Black-Scholes prices the same on numpy and on torch."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.contract.black_scholes import bs_greeks, bs_price
from pipeline.envs.options_chain import black_scholes, black_scholes_gamma_vega

ROOT = Path(__file__).resolve().parents[1]
SOURCE = sorted(p for folder in ("pipeline", "assets", "resources") for p in (ROOT / folder).rglob("*.py"))


@cache
def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text(), filename=str(p)) for p in SOURCE}


def _defining(name: str) -> list[str]:
    """Modules that define a function or assign a module-level name `name`."""
    found = []
    for path, tree in _modules().items():
        for node in ast.walk(tree):
            defines = isinstance(node, ast.FunctionDef) and node.name == name
            assigns = isinstance(node, ast.Assign | ast.AnnAssign) and any(
                isinstance(t, ast.Name) and t.id == name
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
            if defines or assigns:
                found.append(path)
    return sorted(set(found))


def _calling(names: set[str]) -> list[str]:
    """Modules that call a function named one of `names` (as `f(...)` or `x.f(...)`)."""
    found = set()
    for path, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if called in names:
                    found.add(path)
    return sorted(found)


def test_the_twins_are_gone() -> None:
    assert not (ROOT / "pipeline/envs/numpy_features.py").exists()
    assert not (ROOT / "pipeline/envs/synthetic_walk.py").exists()


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("DEFAULT_FEATURES", "pipeline/features/catalog.py"),
        ("turbulence_index", "pipeline/features/turbulence.py"),
        ("mahalanobis", "pipeline/features/turbulence.py"),
        ("momentum_filter", "pipeline/synthetic/paths.py"),
        ("vol_profile", "pipeline/synthetic/paths.py"),
        ("intraday_vol_profile", None),
        ("random_walk_arrays", "pipeline/synthetic/arrays.py"),
        ("d1_d2", "pipeline/contract/black_scholes.py"),
        ("_d1", None),
    ],
)
def test_each_definition_has_one_home(name: str, home: str | None) -> None:
    assert _defining(name) == ([home] if home else [])


def test_the_normal_cdf_is_called_in_the_black_scholes_module_only() -> None:
    assert _calling({"ndtr", "erf", "erfc", "norm_cdf"}) == ["pipeline/contract/black_scholes.py"]


def test_the_device_prices_with_the_contracts_formulas() -> None:
    rng = np.random.default_rng(0)
    spot, strike = rng.uniform(50, 150, 64), rng.uniform(50, 150, 64)
    years, vol = rng.uniform(0.01, 2.0, 64), rng.uniform(0.05, 1.0, 64)
    tensors = [torch.from_numpy(a) for a in (spot, strike, years, vol)]
    call, put, call_delta, put_delta = black_scholes(*tensors, rate=0.03)
    gamma, vega = black_scholes_gamma_vega(*tensors, rate=0.03)
    np.testing.assert_allclose(call.numpy(), bs_price(spot, strike, years, 0.03, vol, True), rtol=1e-12)
    np.testing.assert_allclose(put.numpy(), bs_price(spot, strike, years, 0.03, vol, False), rtol=1e-12, atol=1e-12)
    calls, puts = bs_greeks(spot, strike, years, 0.03, vol, True), bs_greeks(spot, strike, years, 0.03, vol, False)
    np.testing.assert_allclose(call_delta.numpy(), calls["delta"], rtol=1e-12)
    np.testing.assert_allclose(put_delta.numpy(), puts["delta"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gamma.numpy(), calls["gamma"], rtol=1e-12)
    np.testing.assert_allclose(vega.numpy(), 100.0 * calls["vega"], rtol=1e-12)  # torch: per 1.0 of vol
