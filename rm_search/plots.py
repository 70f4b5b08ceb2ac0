"""Figures of Pareto searches: one search's evaluated networks and front, and hypervolume against evaluations."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_search(points: list[tuple[float, float]], iteration: list[int], front: list[int], metrics: tuple[str, str],
                path: str) -> str:
    """Every evaluated network (cost vs accuracy) coloured by the iteration that found it, the front drawn."""
    pts = np.array(points)
    fig, ax = plt.subplots(figsize=(7, 5))
    sc = ax.scatter(pts[:, 1], pts[:, 0], c=iteration, cmap="viridis", s=14, alpha=0.8)
    fig.colorbar(sc, ax=ax, label="iteration (0 = initial population)", ticks=range(max(iteration) + 1))
    f = pts[sorted(front, key=lambda i: pts[i, 1])]
    ax.step(f[:, 1], f[:, 0], where="post", color="red", lw=1.5, label="Pareto front")
    ax.scatter(f[:, 1], f[:, 0], facecolors="none", edgecolors="red", s=40)
    ax.set(xlabel=metrics[1], ylabel=metrics[0], title="random-mutation Pareto search")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
