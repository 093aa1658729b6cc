"""Training curves as a small self-contained SVG chart, embedded in markdown metadata as a data URI.

The Dagster UI renders markdown metadata, images included, so the plot needs no plotting library and no file
server: one polyline per series over a shared x axis (env steps), each series scaled to its own range (the legend
gives the range), since returns, entropy and KL live on different scales. `shared_y=True` puts every series on
one y scale instead (labelled on the axis), for series that must be compared, like equity curves.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT, PAD = 640, 300, 40
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _finite(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]


def svg_line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]], title: str, x_label: str, *, shared_y: bool = False
) -> str:
    """An SVG chart of each named series of (x, y) points (non-finite points are left out); each series on its
    own y scale, or all on one when `shared_y`."""
    clean = {name: _finite(points) for name, points in series.items()}
    clean = {name: points for name, points in clean.items() if points}
    xs = [x for points in clean.values() for x, _ in points] or [0.0, 1.0]
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or 1.0
    all_ys = [y for points in clean.values() for _, y in points] or [0.0, 1.0]
    plot_w, plot_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
        f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>',
        f'<rect x="{PAD}" y="{PAD}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)} '
        f"({x_lo:,.0f} to {x_hi:,.0f})</text>",
    ]
    if shared_y:
        parts.append(f'<text x="{PAD - 4}" y="{PAD + 4}" text-anchor="end">{max(all_ys):.4g}</text>'
                     f'<text x="{PAD - 4}" y="{PAD + plot_h}" text-anchor="end">{min(all_ys):.4g}</text>')
    for i, (name, points) in enumerate(clean.items()):
        ys = [y for _, y in points]
        y_lo, y_hi = (min(all_ys), max(all_ys)) if shared_y else (min(ys), max(ys))
        y_span = (y_hi - y_lo) or 1.0
        coords = " ".join(
            f"{PAD + (x - x_lo) / x_span * plot_w:.1f},{PAD + plot_h - (y - y_lo) / y_span * plot_h:.1f}"
            for x, y in points
        )
        color = COLORS[i % len(COLORS)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
        parts.append(f'<text x="{PAD + 6}" y="{PAD + 14 + 14 * i}" fill="{color}">{escape(name)} '
                     f"[{min(ys):.4g}, {max(ys):.4g}]</text>")
    parts.append("</svg>")
    return "".join(parts)


def markdown_image(svg: str, alt: str) -> str:
    """Markdown that shows `svg` inline (a base64 data URI)."""
    data = base64.b64encode(svg.encode()).decode()
    return f"![{escape(alt)}](data:image/svg+xml;base64,{data})"


def training_curve_markdown(history: Sequence[Mapping[str, float]], keys: Sequence[str]) -> str:
    """The per-update `keys` of a training history against env steps (`global_step` of each row)."""
    series = {key: [(row["global_step"], row[key]) for row in history if key in row and "global_step" in row]
              for key in keys}
    return markdown_image(svg_line_chart(series, "CLSTM-PPO training", "env steps"), "training curve")
