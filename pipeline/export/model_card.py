"""The model card of a deployment artifact: what the model trades, on what data, how well, against what, and for
what use, rendered as plain markdown (`MODEL_CARD.md`).

`ModelCard` holds what only the caller knows (evaluation results, costs, status); what the artifact itself fixes
(observation columns, action meanings, input and output names) comes from its `config.json`, so the two can't
disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from pipeline.envs.costs import CostModel


class MetricRow(NamedTuple):
    """One metric with its confidence interval (None where there is none) and why a figure is missing."""

    name: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class BaselineRow:
    """A baseline strategy judged on the same days, with the same metrics as the model."""

    strategy: str
    metrics: Sequence[MetricRow]


@dataclass(frozen=True)
class ModelCard:
    """What MODEL_CARD.md says beyond the artifact's config. Metric rows may be MetricRows or plain
    (name, value, ci_low, ci_high) tuples."""

    model_id: str
    trading_day: str | None = None
    """The partition day D the model was trained for (ISO date)."""
    env: str = "pipeline/IntradayTrading-v0"
    symbols: Sequence[str] = ()
    """Instruments the model was trained and evaluated on."""
    trade_size: float | None = None
    """Shares held when long or short."""
    costs: CostModel | None = None
    """The cost model its env fills with (the card prints its fields); fills also cross the spread."""
    data_version: str | None = None
    """The training dataset's data version (sha256 of its warehouse rows)."""
    train_days: Sequence[str] = ()
    """Trading days of the training part, oldest first (ISO dates)."""
    selection_days: Sequence[str] = ()
    """Trading days the checkpoint and the model were chosen on, oldest first (ISO dates)."""
    gate_days: Sequence[str] = ()
    """Trading days the promotion gate judged it on (nothing chose on them), oldest first (ISO dates)."""
    metrics: Sequence[MetricRow] = ()
    """The model's metrics on the gate days."""
    oracle_share: str = ""
    """Its mean daily net return as a share of the cost-aware oracle's, with the interval and days, or why it is
    not reported (the synthetic market only)."""
    baselines: Sequence[BaselineRow] = ()
    """Baseline strategies with their metrics on the same days (rows named as the model's)."""
    intended_use: Sequence[str] = ()
    limitations: Sequence[str] = ()
    status: str = "candidate"
    """Registry status: candidate, production or rejected."""


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _with_interval(row: MetricRow | None) -> str:
    if row is None or row.value is None:
        return "n/a"
    if row.ci_low is None or row.ci_high is None:
        return _number(row.value)
    return f"{_number(row.value)} [{_number(row.ci_low)}, {_number(row.ci_high)}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    cells = [list(header), ["---"] * len(header), *[list(r) for r in rows]]
    return ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]


def _bullets(items: Sequence[str], empty: str) -> list[str]:
    return [f"- {item}" for item in items] or [f"- {empty}"]


def _days(days: Sequence[str]) -> str:
    if not days:
        return "none"
    return f"{days[0]} to {days[-1]} ({len(days)} trading day{'s' if len(days) > 1 else ''})"


def _shape(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def _rows(rows: Sequence[Sequence[Any]]) -> list[MetricRow]:
    return [MetricRow(*row) for row in rows]


def render_model_card(card: ModelCard, config: Mapping[str, Any]) -> str:
    """MODEL_CARD.md for `card`, with the observation and action facts of the artifact's `config`."""
    obs = config["observation"]
    costs = (", ".join(f"{name} {_number(value)}" for name, value in asdict(card.costs).items())
             if card.costs is not None else "none given")
    days = [*card.train_days, *card.selection_days, *card.gate_days]
    outputs = ", ".join(f"`{output['name']}` {_shape(output['shape'])}" for output in config["outputs"])
    metrics = _rows(card.metrics)
    lines = [
        f"# Model card: {card.model_id}",
        "",
        f"Status: **{card.status}**" + (f"; trained for {card.trading_day}" if card.trading_day else ""),
        "",
        "## What it trades",
        "",
        f"- Environment: `{card.env}`; symbols: {', '.join(card.symbols) or 'not given'}",
        f"- Actions: {', '.join(f'{i} = {name}' for i, name in enumerate(config['action_space']['meanings']))}",
        f"- Trade size: {_number(card.trade_size) or 'not given'} shares; costs: {costs} (fills cross the spread)",
        f"- Input `{obs['name']}`: float32 {_shape(obs['shape'])} raw observations, normalized inside the graph; "
        f"columns: {', '.join(obs['features'])}",
        f"- Outputs: {outputs}",
        f"- Recurrent state: {config['state']['description']}",
        "",
        "## Data",
        "",
        f"- Window: {days[0]} to {days[-1]}" if days else "- Window: not given",
        f"- Training days: {_days(card.train_days)}",
        f"- Selection days (checkpoint and model chosen): {_days(card.selection_days)}",
        f"- Gate days (judged on, never chosen on): {_days(card.gate_days)}",
        f"- Data version: `{card.data_version or 'not given'}`",
        "",
        "## Metrics on the gate days",
        "",
        *_table(("metric", "value", "CI low", "CI high", "note"),
                [(m.name, _number(m.value), _number(m.ci_low), _number(m.ci_high), m.note or "") for m in metrics]),
        "",
        *([f"Share of the cost-aware oracle: {card.oracle_share}", ""] if card.oracle_share else []),
        "## Baselines",
        "",
    ]
    names = [m.name for m in metrics]
    table = [[f"this model ({card.model_id})", *[_with_interval(m) for m in metrics]]]
    for baseline in card.baselines:
        by_name = {m.name: m for m in _rows(baseline.metrics)}
        table.append([baseline.strategy, *[_with_interval(by_name.get(name)) for name in names]])
    lines += _table(("strategy", *names), table) if card.baselines else ["- none given"]
    lines += ["", "Values are shown as value [CI low, CI high] where an interval exists.", "",
              "## Intended use", "", *_bullets(card.intended_use, "not stated"), "",
              "## Limitations", "", *_bullets(card.limitations, "not stated"), ""]
    return "\n".join(lines)
