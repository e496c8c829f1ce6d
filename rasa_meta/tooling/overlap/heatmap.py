"""The prototype-similarity heatmap of an overlap report, similar intents side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from rasa_meta.tooling.overlap.analysis import OverlapReport
from rasa_meta.tooling.overlap.text import clip


def similarity_order(sim: np.ndarray) -> List[int]:
    """Order of the items that puts similar ones next to each other.

    Average-linkage agglomerative clustering on the similarity matrix; each merge joins the
    two clusters' ends that are most alike, so blocks of related intents form on the diagonal.
    """
    sim = np.asarray(sim, dtype=float)
    n = sim.shape[0]
    if n <= 2:
        return list(range(n))
    link = sim.copy()
    np.fill_diagonal(link, -np.inf)
    sizes = np.ones(n)
    active = np.ones(n, dtype=bool)
    clusters: Dict[int, List[int]] = {i: [i] for i in range(n)}
    for _ in range(n - 1):
        masked = np.where(active[:, None] & active[None, :], link, -np.inf)
        a, b = (int(x) for x in np.unravel_index(np.argmax(masked), masked.shape))
        left, right = clusters[a], clusters.pop(b)
        options = [(x, y) for x in (left, left[::-1]) for y in (right, right[::-1])]
        left, right = max(options, key=lambda xy: sim[xy[0][-1], xy[1][0]])
        clusters[a] = left + right
        merged = (link[a] * sizes[a] + link[b] * sizes[b]) / (sizes[a] + sizes[b])
        link[a, :] = merged
        link[:, a] = merged
        link[a, a] = -np.inf
        sizes[a] += sizes[b]
        active[b] = False
    return next(iter(clusters.values()))


def save_heatmap(
    report: OverlapReport,
    path: Union[str, Path],
    title: Optional[str] = None,
    max_label_chars: int = 40,
) -> Path:
    """Write the prototype-similarity heatmap as a PNG; intents ordered so that similar ones
    sit together. Sized for up to about 150 intents (labels shrink as the count grows)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sim = np.asarray(report.prototype_similarity, dtype=float)
    n = sim.shape[0]
    order = similarity_order(sim)
    sim = sim[np.ix_(order, order)] if n else sim
    names = [
        f"{clip(report.intents[i], max_label_chars)} ({report.counts.get(report.intents[i], 0)})"
        for i in order
    ]
    shown = sim.copy()
    if n:
        np.fill_diagonal(shown, np.nan)  # always 1: drawn grey, kept out of the colour scale
    off = shown[~np.isnan(shown)] if n > 1 else np.zeros(0)
    vmin = float(min(off.min(), report.similarity_threshold - 0.1)) if off.size else 0.0

    annotate = n <= 25  # small enough to print each similarity in its cell
    side = min(max(6.0, (0.45 if annotate else 0.14) * n + 3.5), 26.0)
    font = 9.0 if n <= 30 else 7.0 if n <= 60 else 5.5 if n <= 100 else 4.5
    # The object-oriented Agg API: no pyplot, so a caller's backend and figures are untouched.
    fig = Figure(figsize=(side + 1.5, side), dpi=150 if n > 60 else 110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    try:
        cmap = matplotlib.colormaps["viridis"].copy()
    except AttributeError:  # matplotlib < 3.5
        cmap = matplotlib.cm.get_cmap("viridis").copy()
    cmap.set_bad("#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=vmin, vmax=1.0,
                      interpolation="nearest")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=font)
    ax.set_yticklabels(names, fontsize=font)
    ax.set_xlabel("intent (examples)")
    ax.set_ylabel("intent (examples)")
    for i in range(n):  # outline the flagged pairs
        for j in range(n):
            if i != j and sim[i, j] >= report.similarity_threshold:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                           edgecolor="red", linewidth=1.2))
            if annotate and i != j:
                ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                        color="white" if sim[i, j] < (vmin + 1.0) / 2 else "black")
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("cosine similarity of intent prototypes")
    ax.set_title(
        title
        or f"Intent prototype similarity ({n} intents; red: >= {report.similarity_threshold:.2f})",
        fontsize=12 if n <= 60 else 16,
    )
    fig.tight_layout()
    fig.savefig(path)
    return path
