"""Figures drawn off-screen and written atomically, marked so that a figure we may replace can be told from a
user's file."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .io import atomic_write_bytes

FIGURE_SOFTWARE = "tinypretrain"  # in every PNG we write, so a figure we may replace can be told from a user's file


def new_axes(ncols: int = 1) -> tuple[Any, Any]:
    """A figure and ``ncols`` axes side by side, drawn off-screen (no display needed), for ``save_figure``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(ncols=ncols, figsize=(7 * ncols, 4))


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as a PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100, metadata={"Software": FIGURE_SOFTWARE})
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


def is_our_figure(path: Path) -> bool:
    """Whether ``path`` is a PNG that ``save_figure`` wrote (so it may be replaced): the PNG signature and our
    Software text chunk, not merely the word "tinypretrain" (a model card holds that too)."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    return head.startswith(b"\x89PNG\r\n\x1a\n") and b"Software\x00" + FIGURE_SOFTWARE.encode() in head
