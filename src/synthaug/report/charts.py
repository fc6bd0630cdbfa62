"""Small inline SVG charts (matplotlib, Agg backend)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence


def _svg(figure: object) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(figure)  # type: ignore[arg-type]
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def bars(labels: Sequence[str], values: Sequence[float], title: str) -> str:
    """A horizontal bar chart as an SVG string."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 0.35 * max(3, len(labels)) + 0.8))
    axis.barh(list(labels)[::-1], list(values)[::-1], color="#4c72b0")
    axis.set_title(title)
    for index, value in enumerate(list(values)[::-1]):
        axis.text(value, index, f" {value:g}", va="center", fontsize=8)
    return _svg(figure)


def histogram(counts: Sequence[int], edges: Sequence[float], title: str) -> str:
    """A histogram from precomputed counts and bin edges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 2.6))
    widths = [b - a for a, b in itertools.pairwise(edges)]
    axis.bar(list(edges[:-1]), list(counts), width=widths, align="edge", color="#55a868",
             edgecolor="white")
    axis.set_title(title)
    return _svg(figure)
