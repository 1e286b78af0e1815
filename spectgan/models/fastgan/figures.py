"""PNG figures of the GAN: image grids in counts (radiological display) and loss curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from spectgan.figures import pyplot, save_figure


def save_image_grid(rows: Sequence[tuple[str, np.ndarray]], path: Path, count_scale: float, title: str = "") -> None:
    """One row per (label, counts [k, H, W]) on one shared count scale [0, count_scale], written atomically.

    Arrays are shown as stored: the patient's right on the viewer's left (radiological display), marked R / L.
    The slices are tiled into one mosaic (one axes: fast even for many conditions).
    """
    import matplotlib

    plt = pyplot()
    height, width = rows[0][1].shape[-2:]
    columns, gap = max(images.shape[0] for _, images in rows), max(1, width // 16)
    mosaic = np.full((len(rows) * (height + gap) - gap, columns * (width + gap) - gap), np.nan, dtype=np.float32)
    for row, (_, images) in enumerate(rows):
        for column, image in enumerate(images):
            top, left = row * (height + gap), column * (width + gap)
            mosaic[top:top + height, left:left + width] = image
    figure, axis = plt.subplots(figsize=(1.4 * columns + 1.6, 1.4 * len(rows) + 0.5))
    colours = matplotlib.colormaps["inferno"].with_extremes(bad="white")
    shown = axis.imshow(mosaic, cmap=colours, vmin=0.0, vmax=count_scale, interpolation="nearest")
    axis.set_yticks([row * (height + gap) + height / 2 for row in range(len(rows))], [label for label, _ in rows],
                    fontsize=8)
    axis.set_xticks([0, width - 1], ["R", "L"], fontsize=8)
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    figure.colorbar(shown, ax=axis, fraction=0.03, label="counts")
    if title:
        axis.set_title(title, fontsize=9)
    save_figure(figure, path)


def save_loss_curves(history: Sequence[dict], path: Path) -> None:
    """Loss curves from the training history (dicts with ``step`` and one value per logged loss), written
    atomically."""
    figure, axis = pyplot().subplots(figsize=(7, 3.5))
    names = list(dict.fromkeys(key for entry in history for key in entry if key != "step"))
    for name in names:  # a loss a fine-tuning run added starts where it was added
        logged = [entry for entry in history if name in entry]
        axis.plot([entry["step"] for entry in logged], [entry[name] for entry in logged], label=name, linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)
