"""Interpretable baselines of the graph predictor on the one-hot block/depth features u (iterators/block_indicators):

    bilinear   f(u) = c + w^T u                         BINAS's estimator for OFA's elastic depth: every block
                                                        choice counts when the stage's depth keeps the block, plus
                                                        a term per (stage, depth) and rho, rho^2 for resolution
    quadratic  f(u) = c + w^T u + sum_{p<q} W_pq u_p u_q every pairwise interaction of block, depth and resolution
    mlp        f(u) = MLP(u)                            a plain ReLU network on the same features

bilinear and quadratic are ridge regressions solved in closed form (models/ridge.py; the quadratic one through its
Gram matrix, since it has more interactions than training networks), their penalty chosen by exact leave-one-out
error; the mlp is trained with Adam. All three are ``nn.Module``s whose state dict holds their coefficients, saved and
loaded like the GNN's (models/checkpoints.py), and ``predict(batch)`` takes the sequence-graph batches every
evaluator already builds, so predict.py, eval_topk_ofa.py and rm_search use them unchanged.

Read-out: the contribution of every (stage, position, expansion, kernel), every (stage, depth) and resolution, as
partial dependence over reference networks: the mean prediction with one block set to each choice (or one stage to
each depth, its optional blocks set to the average block), centred over the choices. For the bilinear model these
are exactly its coefficients in the gauge where each slot's and each stage's contributions sum to zero.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from iterators.block_indicators import CHOICE_NAMES, CHOICES, N_CHOICES, layout, rho
from iterators.graphs import GraphBatch
from iterators.search_space import EXPANSIONS, KERNELS
from models.predictor import TEST_METRICS
from models.ridge import ridge_dual, ridge_primal

BASELINES = ("bilinear", "quadratic", "mlp")
READOUT_REFERENCE = 500  # networks the partial dependence averages over
MAX_LISTED_RESOLUTIONS = 8  # more resolutions in the reference than this: the read-out lists 5, evenly spread


class BaselinePredictor(nn.Module):
    """What every baseline shares: its family's feature layout, prediction from graph batches, the read-out."""

    kind = ""

    def __init__(self, family: str):
        super().__init__()
        self.family = family
        self.layout = layout(family)
        self.register_buffer("test_metrics", torch.full((len(TEST_METRICS),), float("nan")))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """[B, n_features] features -> [B] predictions in the target's units (float64)."""
        raise NotImplementedError

    def predict(self, batch: GraphBatch) -> torch.Tensor:
        """Predictions in the target's own units for a batch of sequence graphs, [B]."""
        with torch.no_grad():
            return self(self.layout.features(batch)).float()

    def predict_features(self, u: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self(torch.as_tensor(u, dtype=torch.float64)).numpy()


class BilinearPredictor(BaselinePredictor):
    """f(u) = c + w^T u; ``coef`` [n_features], ``intercept`` [] (float64 buffers)."""

    kind = "bilinear"

    def __init__(self, family: str):
        super().__init__(family)
        self.register_buffer("intercept", torch.zeros((), dtype=torch.float64))
        self.register_buffer("coef", torch.zeros(self.layout.n_features, dtype=torch.float64))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.intercept + u.double() @ self.coef

    def constant_at(self, resolution: int) -> float:
        """The part of f that does not depend on the block/depth indicators at ``resolution``: c + resolution terms."""
        w = self.coef[self.layout.n_indicators:].tolist()
        return float(self.intercept) + w[0] * rho(resolution) + w[1] * rho(resolution) ** 2


class QuadraticPredictor(BaselinePredictor):
    """f(u) = c + w^T u + u^T W u / 2 with W symmetric, zero diagonal: ``pair`` [n_features, n_features]."""

    kind = "quadratic"

    def __init__(self, family: str):
        super().__init__(family)
        p = self.layout.n_features
        self.register_buffer("intercept", torch.zeros((), dtype=torch.float64))
        self.register_buffer("coef", torch.zeros(p, dtype=torch.float64))
        self.register_buffer("pair", torch.zeros(p, p, dtype=torch.float64))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = u.double()
        return self.intercept + u @ self.coef + 0.5 * ((u @ self.pair) * u).sum(dim=1)


class MLPPredictor(BaselinePredictor):
    """Two hidden ReLU layers of width ``hidden`` on the features; output de-standardised by ``target_moments``."""

    kind = "mlp"

    def __init__(self, family: str, hidden: int = 128):
        super().__init__(family)
        p = self.layout.n_features
        self.net = nn.Sequential(nn.Linear(p, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        self.register_buffer("target_moments", torch.tensor([0.0, 1.0]))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        mean, std = self.target_moments
        return (self.net(u.float()).squeeze(1) * std + mean).double()


# --- fitting ------------------------------------------------------------------------------------------------------

def fit_bilinear(family: str, u: np.ndarray, y: np.ndarray, lam: float | None = None) -> tuple[BilinearPredictor, dict]:
    solution = ridge_primal(u, y, lam)
    model = BilinearPredictor(family)
    model.coef.copy_(torch.from_numpy(solution.coef))
    model.intercept.fill_(solution.intercept)
    return model.eval(), _ridge_info(solution)


def quadratic_gram(a: np.ndarray, b: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Gram matrix of phi(u) = [u, sqrt(gamma) (u_p u_q)_{p<q}]: a.b + gamma ((a.b)^2 - (a*a).(b*b)) / 2."""
    g = a @ b.T
    return g + 0.5 * gamma * (g * g - (a * a) @ (b * b).T)


# weights of the interactions against the main effects tried by the quadratic fit (a second, relative penalty)
INTERACTION_WEIGHTS = (1e-3, 1e-2, 1e-1, 1.0)


def quadratic_ridge(u: np.ndarray, y: np.ndarray, lam: float | None = None, gamma: float | None = None
                    ) -> tuple[float, np.ndarray, np.ndarray, dict]:
    """(c, w, W) of f(u) = c + w^T u + u^T W u / 2 (W symmetric, zero diagonal) by kernel ridge on the Gram matrix of
    all main effects and pairwise interactions, for any feature matrix ``u`` [n, p]. The interactions are scaled by
    sqrt(gamma), i.e. penalised 1/gamma times as much as the main effects; ``gamma=None`` picks it, with the penalty,
    by leave-one-out error (a fixed ``lam`` without ``gamma`` uses gamma = 1)."""
    u = np.asarray(u, dtype=np.float64)
    gammas = [gamma] if gamma is not None else ([1.0] if lam is not None else INTERACTION_WEIGHTS)
    best = None
    for g in gammas:
        solution = ridge_dual(quadratic_gram(u, u, g), y, lam)
        score = solution.loo_rmse.get(solution.lam, 0.0)
        if best is None or score < best[0]:
            best = (score, g, solution)
    _, gamma, solution = best
    alpha = solution.coef
    coef = u.T @ alpha                            # weights of the main effects: sum_i alpha_i u_i
    pair = gamma * ((u * alpha[:, None]).T @ u)   # weights of u_p u_q: gamma sum_i alpha_i u_ip u_iq
    np.fill_diagonal(pair, 0.0)
    train_f = u @ coef + 0.5 * np.einsum("ip,pq,iq->i", u, pair, u)
    return solution.intercept - float(train_f.mean()), coef, pair, {**_ridge_info(solution),
                                                                    "interaction_weight": gamma}


def fit_quadratic(family: str, u: np.ndarray, y: np.ndarray, lam: float | None = None,
                  gamma: float | None = None) -> tuple[QuadraticPredictor, dict]:
    intercept, coef, pair, info = quadratic_ridge(u, y, lam, gamma)
    model = QuadraticPredictor(family)
    model.coef.copy_(torch.from_numpy(coef))
    model.pair.copy_(torch.from_numpy(pair))
    model.intercept.fill_(intercept)
    return model.eval(), info


def _ridge_info(solution) -> dict:
    info = {"ridge_lambda": solution.lam}
    if solution.loo_rmse:
        info["loo_rmse"] = solution.loo_rmse[solution.lam]
    return info


def fit_mlp(family: str, u: np.ndarray, y: np.ndarray, hidden: int = 128, epochs: int = 200, batch_size: int = 128,
            seed: int = 0, lr: float = 1e-3, weight_decay: float = 1e-4, progress: bool = True
            ) -> tuple[MLPPredictor, dict]:
    """Adam on the mean squared error of the standardised target; Ctrl-C stops after the current batch."""
    torch.manual_seed(seed)
    model = MLPPredictor(family, hidden)
    mean, std = float(np.mean(y)), float(np.std(y)) or 1.0
    model.target_moments.copy_(torch.tensor([mean, std]))
    x = torch.as_tensor(u, dtype=torch.float32)
    t = torch.as_tensor((np.asarray(y) - mean) / std, dtype=torch.float32)
    optim = torch.optim.AdamW(model.net.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    history = []
    bar = tqdm(range(epochs), desc="train mlp", unit="epoch", disable=not progress, dynamic_ncols=True)
    try:
        for _ in bar:
            order, total = torch.randperm(len(t), generator=gen), 0.0
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                loss = torch.mean((model.net(x[idx]).squeeze(1) - t[idx]) ** 2)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                total += loss.item() * len(idx)
            history.append(total / len(t))
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted after {len(history)} epochs: evaluating and saving what was learned")
    return model.eval(), {"loss_history": history, "epochs_done": len(history)}


def fit_baseline(kind: str, family: str, u: np.ndarray, y: np.ndarray, lam: float | None = None, hidden: int = 128,
                 epochs: int = 200, batch_size: int = 128, seed: int = 0, progress: bool = True
                 ) -> tuple[BaselinePredictor, dict]:
    """Fit a baseline of ``kind`` on features ``u`` (``layout(family).encode``) and targets ``y``; returns the model
    and what the fit chose (penalty, leave-one-out RMSE or loss history) with its wall time in seconds."""
    start = time.perf_counter()
    if kind == "bilinear":
        model, info = fit_bilinear(family, u, y, lam)
    elif kind == "quadratic":
        model, info = fit_quadratic(family, u, y, lam)
    elif kind == "mlp":
        model, info = fit_mlp(family, u, y, hidden, epochs, batch_size, seed, progress=progress)
    else:
        raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")
    info["seconds"] = time.perf_counter() - start
    return model, info


def build_baseline(config: dict) -> BaselinePredictor:
    """An untrained baseline of the shape a saved config describes (to load its state dict into)."""
    kind, family = config.get("model"), config.get("family")
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline model {kind!r}; choose one of {', '.join(BASELINES)}")
    if family not in ("ofa_mbv3", "ofa_pn"):
        raise ValueError(f"baselines are defined on the OFA families, not {family!r}")
    if kind == "bilinear":
        return BilinearPredictor(family)
    if kind == "quadratic":
        return QuadraticPredictor(family)
    return MLPPredictor(family, int(config.get("hidden", 128)))


def baseline_run_name(config: dict) -> str:
    """e.g. ``ofa_mbv3_custom_acc_bilinear`` (the GNN's names end in its layer type instead)."""
    from iterators.targets import Target
    name = "_".join([config["families"], "custom", Target(config["target"]).file_tag(), config["model"]])
    return f"{config['tag']}_{name}" if config.get("tag") else name


# --- read-out -----------------------------------------------------------------------------------------------------

def partial_dependence(model: BaselinePredictor, reference: np.ndarray) -> dict:
    """Contributions of every block choice, depth and resolution over ``reference`` features (see module doc).

    ``{"blocks": {"S1": {"L1": {"e3k3": v, ...}, ...}}, "depth": {"S1": {"D2": v, ...}}, "resolution": {"r192": v},
    "mean": mean prediction}``. Resolutions are those of the reference networks (never extrapolated), relative to
    the smallest of them. Slots no reference network uses are left out.
    """
    lay = model.layout
    ref = np.asarray(reference, dtype=np.float64)
    out = {"blocks": {}, "depth": {}, "resolution": {}, "mean": float(model.predict_features(ref).mean())}
    for s, b in lay.slots:
        cols = slice(lay.block_column(s, b, 0), lay.block_column(s, b, 0) + N_CHOICES)
        present = ref[:, cols].sum(axis=1) > 0.5
        if not present.any():
            continue
        base = ref[present]
        means = []
        for c in range(N_CHOICES):
            mod = base.copy()
            mod[:, cols] = 0.0
            mod[:, cols.start + c] = 1.0
            means.append(model.predict_features(mod).mean())
        means = np.array(means) - np.mean(means)
        out["blocks"].setdefault(f"S{s + 1}", {})[f"L{b + 1}"] = dict(zip(CHOICE_NAMES, means.tolist()))
    for s in range(lay.n_stages):
        options = lay.depth_options[s]
        if len(options) < 2:
            continue
        optional = [b for b in range(lay.min_depths[s], lay.max_depths[s])]
        means = []
        for d in options:
            mod = ref.copy()
            mod[:, [lay.depth_column(s, o) for o in options]] = 0.0
            mod[:, lay.depth_column(s, d)] = 1.0
            for b in optional:  # the average block where the depth keeps one, nothing where it does not
                start = lay.block_column(s, b, 0)
                mod[:, start:start + N_CHOICES] = 1.0 / N_CHOICES if b < d else 0.0
            means.append(model.predict_features(mod).mean())
        means = np.array(means) - np.mean(means)
        out["depth"][f"S{s + 1}"] = {f"D{d}": v for d, v in zip(options, means.tolist())}
    seen = sorted({int(round(192 + 32 * v)) for v in ref[:, lay.n_indicators]})
    if len(seen) > MAX_LISTED_RESOLUTIONS:
        seen = [seen[round(i * (len(seen) - 1) / 4)] for i in range(5)]
    res_means = {}
    for r in seen:
        mod = ref.copy()
        mod[:, lay.n_indicators] = rho(r)
        mod[:, lay.n_indicators + 1] = rho(r) ** 2
        res_means[r] = float(model.predict_features(mod).mean())
    out["resolution"] = {f"r{r}": v - res_means[seen[0]] for r, v in res_means.items()}
    return out


def marginal_readout(pd: dict) -> dict[str, dict[str, float]]:
    """The partial dependence summed up in the FE-MLP read-out's categories, to set beside it.

    stage: how far the stage alone moves the prediction (best minus worst depth and blocks); layer: the mean swing of
    a block's choice at that position; expansion, kernel: the mean contribution of that value; depth: the mean
    contribution of that depth over the elastic stages; resolution: the contribution relative to the smallest.
    """
    blocks, depth = pd["blocks"], pd["depth"]
    out = {"stage": {}, "layer": {}, "expansion": {}, "kernel": {}, "depth": {}, "resolution": dict(pd["resolution"])}
    for stage, positions in blocks.items():
        best = [max(v.values()) for v in positions.values()]
        worst = [min(v.values()) for v in positions.values()]
        if stage in depth:
            options = [(int(d[1:]), v) for d, v in depth[stage].items()]
            hi = max(v + sum(best[:d]) for d, v in options)
            lo = min(v + sum(worst[:d]) for d, v in options)
        else:
            hi, lo = sum(best), sum(worst)
        out["stage"][stage] = hi - lo
    swings: dict[str, list[float]] = {}
    for positions in blocks.values():
        for pos, v in positions.items():
            swings.setdefault(pos, []).append(max(v.values()) - min(v.values()))
    out["layer"] = {pos: float(np.mean(v)) for pos, v in sorted(swings.items())}
    values = [(CHOICES[CHOICE_NAMES.index(name)], v) for positions in blocks.values()
              for choices in positions.values() for name, v in choices.items()]
    out["expansion"] = {f"e{e}": float(np.mean([v for (ce, _), v in values if ce == e])) for e in EXPANSIONS}
    out["kernel"] = {f"k{k}": float(np.mean([v for (_, ck), v in values if ck == k])) for k in KERNELS}
    per_depth: dict[str, list[float]] = {}
    for options in depth.values():
        for d, v in options.items():
            per_depth.setdefault(d, []).append(v)
    out["depth"] = {d: float(np.mean(v)) for d, v in sorted(per_depth.items())}
    return out


def top_interactions(model: QuadraticPredictor, reference: np.ndarray, n: int = 10) -> list[dict]:
    """The ``n`` pairwise terms that move the prediction most over ``reference``: |W_pq| * mean(u_p u_q)-spread."""
    names = model.layout.column_names()
    ref = np.asarray(reference, dtype=np.float64)
    pair = model.pair.numpy()
    spread = np.sqrt(np.maximum((ref * ref).T @ (ref * ref) / len(ref) - ((ref.T @ ref) / len(ref)) ** 2, 0.0))
    strength = np.triu(np.abs(pair) * spread, k=1)
    order = np.argsort(strength, axis=None)[::-1][:n]
    rows = []
    for flat in order:
        p, q = divmod(int(flat), pair.shape[0])
        if strength[p, q] > 0:
            rows.append({"a": names[p], "b": names[q], "weight": float(pair[p, q]), "effect": float(strength[p, q])})
    return rows


def readout(model: BaselinePredictor, reference: np.ndarray, seed: int = 0) -> dict:
    """Partial dependence, its FE-MLP-style summary and, for the quadratic model, its strongest interactions; over at
    most ``READOUT_REFERENCE`` of the reference networks."""
    ref = np.asarray(reference)
    if len(ref) > READOUT_REFERENCE:
        ref = ref[np.random.RandomState(seed).choice(len(ref), READOUT_REFERENCE, replace=False)]
    pd = partial_dependence(model, ref)
    out = {**pd, "marginal": marginal_readout(pd)}
    if isinstance(model, QuadraticPredictor):
        out["interactions"] = top_interactions(model, ref)
    return out


def format_readout(ro: dict) -> str:
    """The read-out as text: per stage its depths and a row of the nine choices per position."""
    lines = [f"Read-out (partial dependence, target units; mean prediction {ro['mean']:.5g}):"]
    for stage, positions in ro["blocks"].items():
        depth = ro["depth"].get(stage)
        lines.append(f"  {stage}" + ("  depth: " + "  ".join(f"{d} {v:+.3g}" for d, v in depth.items())
                                     if depth else "  (fixed depth)"))
        for pos, choices in positions.items():
            lines.append(f"    {pos} " + " ".join(f"{c}={v:+.2e}" for c, v in choices.items()))
    lines.append("  resolution: " + "  ".join(f"{r} {v:+.3g}" for r, v in ro["resolution"].items()))
    lines.append("Summary in the FE-MLP read-out's categories (signed contributions; stage/layer: swing):")
    for category, scores in ro["marginal"].items():
        lines.append(f"  {category:<11}" + "  ".join(f"{k}={v:+.3g}" for k, v in scores.items()))
    if ro.get("interactions"):
        lines.append("Strongest interactions: " + "; ".join(f"{r['a']} x {r['b']} {r['weight']:+.3g}"
                                                           for r in ro["interactions"][:5]))
    return "\n".join(lines)


def n_parameters(model: BaselinePredictor) -> int:
    if isinstance(model, MLPPredictor):
        return sum(p.numel() for p in model.net.parameters())
    if isinstance(model, QuadraticPredictor):
        p = model.layout.n_features
        return 1 + p + math.comb(p, 2)
    return 1 + model.layout.n_features
