"""Figures of a trained predictor: training curve, test scatter, and a network drawn once per hop level."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from iterators.graphs import GraphBatch  # noqa: E402


def plot_training(history: list[float], y_true: np.ndarray, y_pred: np.ndarray, target: str, path: str) -> str:
    fig, (ax_loss, ax_fit) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(range(1, len(history) + 1), history)
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="training loss")
    ax_fit.scatter(y_true, y_pred, s=6, alpha=0.6)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax_fit.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax_fit.set(xlabel=f"measured {target}", ylabel=f"predicted {target}", title="test set")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def layered_layout(n: int, edges: list[tuple[int, int]], row_length: int = 40) -> np.ndarray:
    """Positions [n, 2] of a DAG's nodes: x = longest path from a source (its layer), y = slot within the layer.

    Layers beyond ``row_length`` wrap onto further rows below, so a 200-operator chain stays readable.
    """
    succ = [[] for _ in range(n)]
    indegree = [0] * n
    for a, b in edges:
        succ[a].append(b)
        indegree[b] += 1
    depth, ready = [0] * n, [v for v in range(n) if indegree[v] == 0]
    while ready:  # Kahn's order; a node's depth is final once all its predecessors are done
        v = ready.pop()
        for w in succ[v]:
            depth[w] = max(depth[w], depth[v] + 1)
            indegree[w] -= 1
            if indegree[w] == 0:
                ready.append(w)
    if any(indegree):
        raise ValueError("layered_layout needs a directed acyclic graph")
    slot, width = [0] * n, {}
    for v in range(n):
        slot[v] = width.get(depth[v], 0)
        width[depth[v]] = slot[v] + 1
    row_height = max(width.values()) + 1
    return np.array([(d % row_length, -(d // row_length) * row_height - s) for d, s in zip(depth, slot)], float)


def _edge_path(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A straight line, or an arc over the nodes it skips when both ends lie on one row (residuals, SE branches)."""
    span = b[0] - a[0]
    if span <= 1 or a[1] != b[1]:
        return np.array([a[0], b[0]]), np.array([a[1], b[1]])
    t = np.linspace(0, 1, 20)
    return a[0] + span * t, a[1] + 0.35 * np.sin(np.pi * t)


@torch.no_grad()
def draw_hop_graphs(model, batch: GraphBatch, labels: list[str], norm: int, prefix: str) -> list[str]:
    """One PNG per hop level of a single graph, nodes coloured by the Lp norm of their embedding at that hop."""
    model.eval()
    edges = [tuple(e) for e in batch.edge_index.t().tolist()]
    xy = layered_layout(len(labels), edges)
    n_cols, n_rows = int(xy[:, 0].max()) + 1, int(-xy[:, 1].min()) + 1
    paths = []
    for hop, h in enumerate(model.node_embeddings(batch)):
        values = torch.linalg.vector_norm(h, ord=norm, dim=-1).numpy()
        fig, ax = plt.subplots(figsize=(min(2 + 0.55 * n_cols, 26), min(1.5 + 0.6 * n_rows, 40)))
        for a, b in edges:
            wraps = xy[b, 0] <= xy[a, 0]  # into a later row: faint, so the rows stay readable
            ax.plot(*_edge_path(xy[a], xy[b]), color="0.55", lw=0.6, zorder=1, alpha=0.25 if wraps else 1.0)
        dots = ax.scatter(*xy.T, c=values, cmap="Reds", s=160, edgecolors="k", linewidths=0.5, zorder=2)
        for (x, y), label in zip(xy, labels):
            ax.annotate(label, (x, y), xytext=(0, -9), textcoords="offset points", ha="center", va="top", fontsize=5)
        fig.colorbar(dots, ax=ax, label=f"L{norm} norm", shrink=0.8)
        ax.set_title(f"hop {hop}: L{norm} norm of each node's embedding")
        ax.set_axis_off()
        path = f"{prefix}_hop{hop}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def plot_predicted_vs_measured(y_true: np.ndarray, predictions: dict[str, np.ndarray], metrics: dict[str, dict],
                               unit: str, path: str, title: str) -> str:
    """One scatter of predicted against measured values per predictor, on shared log axes with the line y = x;
    ``metrics[name]`` (regression_metrics of that predictor) gives each panel's Spearman and MAPE."""
    fig, axes = plt.subplots(1, len(predictions), figsize=(4.5 * len(predictions), 4.2), squeeze=False)
    values = np.concatenate([y_true, *predictions.values()])
    lo, hi = float(values[values > 0].min()) * 0.9, float(values.max()) * 1.1
    for ax, (name, y_pred) in zip(axes[0], predictions.items()):
        ax.scatter(y_true, y_pred, s=8, alpha=0.6)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel=f"measured ({unit})",
               ylabel=f"predicted ({unit})",
               title=f"{name}: Spearman {metrics[name]['Spearman']:.3f}, MAPE {metrics[name]['MAPE']:.1f}%")
        for axis in (ax.xaxis, ax.yaxis):  # ticks at 1, 2, 5 x 10^k as plain numbers, not powers of ten
            axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1, 2, 5)))
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
