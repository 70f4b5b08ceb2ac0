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


def plot_hypervolume_curves(records: list[dict], budget: int, path: str) -> str:
    """Hypervolume against evaluations: one panel per (family, cost), one line per method (mean over seeds, band
    of +-1 std), from runs of ``budget`` evaluations whose "curve" holds the hypervolume every budget // 50."""
    runs = [r for r in records if r["budget"] == budget]
    panels = sorted({(r["family"], r["cost"]) for r in runs})
    methods = list(dict.fromkeys(r["method"] for r in runs))
    colours = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, (family, cost) in zip(axes.flat, panels):
        for i, method in enumerate(methods):
            curves = [r["curve"] for r in runs if (r["family"], r["cost"], r["method"]) == (family, cost, method)]
            if not curves:
                continue
            n = min(map(len, curves))
            values = np.array([c[:n] for c in curves])
            x = np.arange(1, n + 1) * max(budget // 50, 1)
            mean, std = values.mean(0), values.std(0)
            ax.plot(x, mean, color=colours(i), lw=1.4, label=method)
            ax.fill_between(x, mean - std, mean + std, color=colours(i), alpha=0.15, lw=0)
        ax.set(title=f"{family}, {cost}", xlabel="oracle evaluations", ylabel="hypervolume (fraction of the box)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(3, len(labels)), fontsize=8,
               frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
