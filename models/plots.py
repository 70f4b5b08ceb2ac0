"""Figures of a trained predictor: training curve, test scatter, and a network drawn once per hop level."""
from __future__ import annotations

import os
import shutil
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from iterators.graphs import GraphBatch  # noqa: E402
from models.unit_scores import scores_by_unit  # noqa: E402


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


def _dot_graph(labels: list[str], values: list[float], edges: list[tuple[int, int]], title: str) -> str:
    """Graphviz source with nodes filled from white (lowest value) to red (highest)."""
    lo, hi = min(values), max(values)
    lines = [f'digraph G {{ rankdir=LR; label="{title}"; node [shape=box, style=filled, fontname=Helvetica];']
    for i, (label, v) in enumerate(zip(labels, values)):
        t = 0.0 if hi == lo else (v - lo) / (hi - lo)
        g = int(255 * (1 - t))
        lines.append(f'n{i} [label="{label}\\n{v:.3g}", fillcolor="#ff{g:02x}{g:02x}"];')
    lines += [f"n{a} -> n{b};" for a, b in edges]
    return "\n".join(lines + ["}"])


@torch.no_grad()
def draw_hop_graphs(model, batch: GraphBatch, labels: list[str], norm: int, prefix: str) -> list[str]:
    """One PNG per hop level of a single graph, nodes coloured by the Lp norm of their embedding.

    Needs Graphviz's ``dot``; without it, prints one line and draws nothing.
    """
    dot = shutil.which("dot")
    if dot is None:
        print("-plots: Graphviz 'dot' is not installed, skipping the per-hop graph drawings "
              "(install graphviz, e.g. apt-get install graphviz, to get them)")
        return []
    model.eval()
    edges = batch.edge_index.t().tolist()
    paths = []
    for hop, h in enumerate(model.node_embeddings(batch)):
        values = torch.linalg.vector_norm(h, ord=norm, dim=-1).tolist()
        path = f"{prefix}_hop{hop}.png"
        source = _dot_graph(labels, values, edges, f"hop {hop}: L{norm} norm of node embeddings")
        subprocess.run([dot, "-Tpng", "-o", path], input=source.encode(), check=True)
        paths.append(path)
    return paths


def ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def plot_unit_scores(units: list[dict], target: str, path: str) -> str:
    """Distribution of unit scores per stage (one violin per unit position)."""
    by_unit = scores_by_unit(units)
    fig, ax = plt.subplots(figsize=(1.6 * len(by_unit) + 2, 4))
    ax.violinplot(list(by_unit.values()), showmedians=True)
    ax.set_xticks(range(1, len(by_unit) + 1), [f"unit {u}\n(n={len(v)})" for u, v in by_unit.items()])
    ax.set(ylabel=f"unit score ({target} scale)", title="unit scores per stage")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
