"""Figures of the baselines' read-out: every block choice's contribution as a heat map beside the depth and
resolution terms, and read-outs of several predictors (FE-MLP included) side by side, category by category."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from iterators.block_indicators import CHOICE_NAMES  # noqa: E402


def plot_baseline_readout(ro: dict, y_true: np.ndarray, y_pred: np.ndarray, target: str, title: str,
                          path: str) -> str:
    """Test scatter | heat map of (stage, position) x choice contributions | depth contributions per stage."""
    rows = [(f"{stage}.{pos}", [choices[c] for c in CHOICE_NAMES])
            for stage, positions in ro["blocks"].items() for pos, choices in positions.items()]
    grid = np.array([values for _, values in rows])
    fig, (ax_fit, ax_map, ax_depth) = plt.subplots(1, 3, figsize=(16, max(4.5, 0.28 * len(rows) + 1.5)),
                                                   gridspec_kw={"width_ratios": [1.1, 1.3, 0.9]})
    ax_fit.scatter(y_true, y_pred, s=6, alpha=0.6)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax_fit.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax_fit.set(xlabel=f"measured {target}", ylabel=f"predicted {target}", title="test set")
    bound = float(np.abs(grid).max()) or 1.0
    im = ax_map.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    ax_map.set_xticks(range(len(CHOICE_NAMES)), CHOICE_NAMES, rotation=60, fontsize=8)
    ax_map.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=7)
    ax_map.set_title("block choice contribution")
    fig.colorbar(im, ax=ax_map, shrink=0.7, label=target)
    stages = list(ro["depth"])
    depths = sorted({d for options in ro["depth"].values() for d in options})
    width = 0.8 / max(len(depths), 1)
    for i, d in enumerate(depths):
        ax_depth.bar(np.arange(len(stages)) + (i - (len(depths) - 1) / 2) * width,
                     [ro["depth"][s].get(d, 0.0) for s in stages], width, label=d)
    ax_depth.axhline(0, color="k", lw=0.6)
    ax_depth.set_xticks(range(len(stages)), stages)
    ax_depth.set(title="depth contribution", ylabel=target)
    ax_depth.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_readouts_side_by_side(readouts: dict[str, dict[str, dict[str, float]]], path: str,
                               title: str = "read-outs side by side") -> str:
    """One panel per category shared by the read-outs, one bar group per value, one bar per predictor.

    Each predictor's values are divided by its largest |value| over all its categories, so an FE-MLP's non-negative
    scores and a baseline's signed contributions share an axis; what compares is the pattern, not the scale.
    """
    names = list(readouts)
    categories = [c for c in readouts[names[0]] if all(c in r for r in readouts.values())]
    scale = {n: max((abs(v) for cat in readouts[n].values() for v in cat.values()), default=1.0) or 1.0
             for n in names}
    fig, axes = plt.subplots(1, len(categories), figsize=(3.2 * len(categories) + 1, 3.8), squeeze=False)
    width = 0.8 / len(names)
    for ax, category in zip(axes[0], categories):
        keys = list(dict.fromkeys(k for n in names for k in readouts[n][category]))
        for i, n in enumerate(names):
            values = [readouts[n][category].get(k, np.nan) / scale[n] for k in keys]
            ax.bar(np.arange(len(keys)) + (i - (len(names) - 1) / 2) * width, values, width, label=n)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(range(len(keys)), keys, rotation=45, fontsize=8)
        ax.set_title(category)
    axes[0][0].set_ylabel("value / largest |value| of the predictor")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_budget_front(answers: list[tuple[float, float, float]], method: str, metrics: tuple[str, str], path: str,
                      rm_points: np.ndarray | None = None, rm_front: np.ndarray | None = None) -> str:
    """The budget sweep's answers (budget, latency, accuracy) as a front, each budget a dotted line; beside it the
    networks of an rm_search front evaluated under the same two measures, (accuracy, latency) rows."""
    fig, ax = plt.subplots(figsize=(7, 5))
    if rm_points is not None:
        ax.scatter(rm_points[:, 1], rm_points[:, 0], s=10, color="0.6", label="rm_search networks")
    if rm_front is not None and len(rm_front):
        f = rm_front[np.argsort(rm_front[:, 1])]
        ax.step(f[:, 1], f[:, 0], where="post", color="tab:red", lw=1.2, label="rm_search front")
    for budget, _, _ in answers:
        ax.axvline(budget, color="0.8", ls=":", lw=1)
    if answers:
        a = np.array(sorted(answers))
        ax.plot(a[:, 1], a[:, 2], "o-", color="tab:blue", label=f"best under each budget ({method})")
    ax.set(xlabel=metrics[1], ylabel=metrics[0], title="most accurate network under a latency budget")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
