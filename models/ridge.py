"""Ridge regression in closed form, its penalty chosen by the exact leave-one-out error (no SGD, no iterations).

Both forms fit y ~ c + f(u) with an unpenalised intercept c, on centred data:

- primal (few features): X_c = X - mean(X) = U S V^T (thin SVD), w = V diag(s / (s^2 + lam)) U^T y_c;
- dual (more features than samples): the centred Gram matrix K_c = U diag(g) U^T of any feature map,
  alpha = U diag(1 / (g + lam)) U^T y_c, so that w = Phi^T alpha (never formed here; see models/baselines.py).

In both, the fitted values are H y_c with H = U diag(g / (g + lam)) U^T (g = s^2 in the primal), and the leave-one-out
residual of sample i is exactly (y_c - H y_c)_i / (1 - H_ii - 1/n) (1/n: the intercept's leverage): one
decomposition prices a whole grid of lam.
lam = 0 gives the minimum-norm least-squares solution (directions with g below ``RCOND * max(g)`` are dropped).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

RCOND = 1e-12
# relative grid of penalties for the automatic choice, times the mean squared norm of a centred sample
AUTO_GRID = np.logspace(-9, 2, 45)


class RidgeSolution(NamedTuple):
    coef: np.ndarray      # primal: w [p]; dual: alpha [n]
    intercept: float      # primal: c with y ~ c + X w; dual: mean(y) (the caller adds -mean(f) of its feature map)
    lam: float            # the penalty used
    loo_rmse: dict        # penalty -> leave-one-out RMSE (empty for a fixed penalty)


def _loo_rmse(u: np.ndarray, g: np.ndarray, uty: np.ndarray, y_c: np.ndarray, lam: float) -> float:
    shrink = g / (g + lam)
    fitted = u @ (shrink * uty)
    leverage = (u * u) @ shrink + 1.0 / len(y_c)  # the intercept's leverage is 1/n
    return float(np.sqrt(np.mean(((y_c - fitted) / np.maximum(1.0 - leverage, 1e-12)) ** 2)))


def _choose(u, g, uty, y_c, lam) -> tuple[float, dict]:
    if lam is not None:
        if lam < 0:
            raise ValueError(f"the ridge penalty must be >= 0, got {lam}")
        return float(lam), {}
    scale = g.sum() / max(len(y_c), 1)
    grid = AUTO_GRID * (scale if scale > 0 else 1.0)
    scores = {float(v): _loo_rmse(u, g, uty, y_c, v) for v in grid}
    return min(scores, key=scores.get), scores


def ridge_primal(x: np.ndarray, y: np.ndarray, lam: float | None = None) -> RidgeSolution:
    """y ~ c + x @ w; ``lam=None`` picks the penalty of least leave-one-out error from ``AUTO_GRID``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean()
    y_c = y - y_mean
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    keep = s > RCOND * max(s.max(initial=0.0), 1e-300)
    u, s, vt = u[:, keep], s[keep], vt[keep]
    uty = u.T @ y_c
    lam, scores = _choose(u, s * s, uty, y_c, lam)
    coef = vt.T @ (s / (s * s + lam) * uty)
    return RidgeSolution(coef, float(y_mean - x_mean @ coef), lam, scores)


def center_gram(k: np.ndarray) -> np.ndarray:
    """H K H with H = I - 11^T/n: the Gram matrix of the centred feature map."""
    row = k.mean(axis=0)
    return k - row[None, :] - row[:, None] + row.mean()


def ridge_dual(k: np.ndarray, y: np.ndarray, lam: float | None = None) -> RidgeSolution:
    """Kernel ridge on the (uncentred) Gram matrix ``k`` [n, n]; returns alpha with sum(alpha) = 0, so that
    w = Phi^T alpha and f(u) = mean(y) + (phi(u) - mean(phi))^T w."""
    y = np.asarray(y, dtype=np.float64)
    y_mean = y.mean()
    y_c = y - y_mean
    g, u = np.linalg.eigh(center_gram(np.asarray(k, dtype=np.float64)))
    keep = g > RCOND * max(g.max(initial=0.0), 1e-300)
    u, g = u[:, keep], g[keep]
    uty = u.T @ y_c
    lam, scores = _choose(u, g, uty, y_c, lam)
    alpha = u @ (uty / (g + lam))
    return RidgeSolution(alpha, float(y_mean), lam, scores)
