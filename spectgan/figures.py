"""The one way spectgan renders and writes PNG figures (matplotlib's Agg backend, no display needed)."""
from __future__ import annotations

import io
from pathlib import Path

from spectgan.files import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path, dpi: int = 100, tight: bool = True) -> Path:
    """Write ``figure`` as a PNG atomically (parent folders created) and close it; ``tight`` crops to the drawn
    area. Returns the path."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(figure)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
