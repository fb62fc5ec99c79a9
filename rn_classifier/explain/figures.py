"""PNG overlays of an attention map: axial, coronal and sagittal slices through the lesion.

Arrays are in RAS voxel order (axis 0 → patient's Right, 1 → Anterior, 2 → Superior). Slices
are shown in neurological convention (patient's right on the viewer's right, anterior / superior
up), with the pixel aspect set from the voxel spacing and the lesion mask's contour drawn.
Figures are built on a bare matplotlib ``Figure`` (Agg canvas, no pyplot state).
"""

from __future__ import annotations

import io

import numpy as np


def _window(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def overlay_png(image: np.ndarray, attention: np.ndarray, lesion: np.ndarray, spacing,
                center_voxel, title: str = "", dpi: int = 90) -> bytes:
    """Three panels (axial, coronal, sagittal) through ``center_voxel``; returns PNG bytes.

    image, attention, lesion: ``(X, Y, Z)`` on one grid; spacing: mm per axis.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image = np.asarray(image, dtype=np.float32)
    attention = np.asarray(attention, dtype=np.float32)
    lesion = np.asarray(lesion) > 0.5
    sx, sy, sz = (float(s) for s in spacing)
    c = [int(np.clip(round(float(v)), 0, n - 1)) for v, n in zip(center_voxel, image.shape)]
    vmin, vmax = _window(image)
    # colour scale over the map's own range where it is non-zero, so a nearly uniform map still
    # shows its structure (the absolute values are in the NIfTI and the focus numbers)
    positive = attention[attention > 0]
    amin = float(positive.min()) if positive.size else 0.0
    amax = float(positive.max()) if positive.size else 1.0
    amax = amax if amax > amin else amin + 1e-12
    views = [  # (name, slicer, row-axis spacing / column-axis spacing, labels left/right/top)
        ("axial", lambda a: a[:, :, c[2]].T, sy / sx, ("L", "R", "A")),
        ("coronal", lambda a: a[:, c[1], :].T, sz / sx, ("L", "R", "S")),
        ("sagittal", lambda a: a[c[0], :, :].T, sz / sy, ("P", "A", "S")),
    ]
    fig = Figure(figsize=(9.6, 3.6), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, (name, cut, aspect, (left, right, top)) in zip(axes, views):
        ax.imshow(cut(image), cmap="gray", vmin=vmin, vmax=vmax, origin="lower", aspect=aspect,
                  interpolation="nearest")
        heat = np.ma.masked_less_equal(cut(attention), 0.0)
        shown = ax.imshow(heat, cmap="inferno", vmin=amin, vmax=amax, alpha=0.4, origin="lower",
                          aspect=aspect, interpolation="bilinear")
        outline = cut(lesion.astype(np.float32))
        if outline.any():
            ax.contour(outline, levels=[0.5], colors="cyan", linewidths=1.0, origin="lower")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.01, 0.5, left, transform=ax.transAxes, color="w", fontsize=8, va="center")
        ax.text(0.97, 0.5, right, transform=ax.transAxes, color="w", fontsize=8, va="center")
        ax.text(0.5, 0.95, top, transform=ax.transAxes, color="w", fontsize=8, ha="center")
    fig.colorbar(shown, ax=list(axes), fraction=0.02, pad=0.01, label="attention")
    if title:
        fig.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
