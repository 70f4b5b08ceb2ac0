"""Fitting and evaluating a predictor on a GraphSet: the loop behind train_predictor.py and the benchmarks."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

from iterators.graphs import GraphSet
from models.loss import RankingLoss
from models.predictor import Predictor

GRAD_CLIP_NORM = 5.0


class FlatAdamW:
    """AdamW (decoupled weight decay, the update of torch.optim.AdamW) with gradient-norm clipping, over every
    trainable parameter of a model made a view into one flat tensor (and its gradient a view into another).

    Clipping and the update then run a few ops on one tensor instead of one set per parameter tensor (~60): on a CPU
    torch's foreach kernels loop over the tensors, which cost about 1 ms per batch. Autograd accumulates into the
    gradient views in place. (torch.optim's optimizers also import torch._dynamo on first use: one more second of
    start-up.) ``release`` gives every parameter its own memory back.
    """

    def __init__(self, params, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        sizes = [p.numel() for p in self.params]
        self.flat = torch.cat([p.detach().flatten() for p in self.params])
        self.grad = torch.zeros_like(self.flat)
        for p, data, grad in zip(self.params, self.flat.split(sizes), self.grad.split(sizes)):
            p.data, p.grad = data.view_as(p), grad.view_as(p)
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.flat), torch.zeros_like(self.flat)
        self.steps = 0

    def zero_grad(self) -> None:
        self.grad.zero_()

    @torch.no_grad()
    def step(self, max_grad_norm: float | None = None) -> None:
        if max_grad_norm is not None:  # as torch.nn.utils.clip_grad_norm_
            self.grad.mul_((max_grad_norm / (self.grad.norm() + 1e-6)).clamp_max(1.0))
        beta1, beta2 = self.betas
        self.steps += 1
        self.flat.mul_(1 - self.lr * self.weight_decay)
        self.exp_avg.lerp_(self.grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(self.grad, self.grad, value=1 - beta2)
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** self.steps)).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, denom, value=-self.lr / (1 - beta1 ** self.steps))

    def release(self) -> None:
        for p in self.params:
            p.data, p.grad = p.data.clone(), None


def split_indices(n: int, seed: int, train_ratio: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random train/test split of range(n)."""
    order = np.random.RandomState(seed).permutation(n)
    n_train = int(round(n * train_ratio))
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def fit(model: Predictor, graphs: GraphSet, y: torch.Tensor, train_idx: np.ndarray, epochs: int,
        batch_size: int, loss_fn: RankingLoss, seed: int, lr: float = 1e-4, weight_decay: float = 1e-5,
        progress: bool = True) -> list[float]:
    """Train in place on the standardised targets ``y`` of ``train_idx``; returns the mean loss of every epoch.

    Ctrl-C stops training after the current batch and keeps what was learned; the caller still evaluates and saves.
    """
    optim = FlatAdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    train_idx = torch.as_tensor(train_idx)
    model.fe_mlp.observe(graphs.batch(train_idx).x)
    history: list[float] = []
    bar = tqdm(range(epochs), desc="train", unit="epoch", disable=not progress, dynamic_ncols=True)
    model.train()
    try:
        for _ in bar:
            total, count = 0.0, 0
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                if len(idx) < 2:  # batch norm needs two graphs
                    continue
                pred, graph_embeds = model(graphs.batch(idx))
                loss = loss_fn(pred, y[idx], graph_embeds)
                optim.zero_grad()
                loss.backward()
                optim.step(GRAD_CLIP_NORM)
                total += loss.item() * len(idx)
                count += len(idx)
            history.append(total / max(count, 1))
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted after {len(history)} epochs: evaluating and saving what was learned")
    finally:
        optim.release()
    model.eval()
    return history


@torch.no_grad()
def predict_with_embeddings(model: Predictor, graphs: GraphSet, idx, norm: int, batch_size: int = 4096
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Predictions in target units [n] and the Lp norm of every hop's graph embedding [n_hops, n]."""
    model.eval()
    preds, norms = [], []
    idx = torch.as_tensor(idx)
    mean, std = model.target_moments
    for start in range(0, len(idx), batch_size):
        pred, graph_embeds = model(graphs.batch(idx[start:start + batch_size]))
        preds.append(pred * std + mean)
        norms.append(torch.stack([torch.linalg.vector_norm(g, ord=norm, dim=-1) for g in graph_embeds]))
    return torch.cat(preds).numpy(), torch.cat(norms, dim=1).numpy()


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    nonzero = y_true != 0
    return {
        "MAE": float(np.mean(np.abs(y_pred - y_true))),
        "MAPE": float(np.mean(np.abs((y_pred - y_true)[nonzero] / y_true[nonzero])) * 100),
        "Spearman": float(stats.spearmanr(y_true, y_pred).statistic),
        "KendallTau": float(stats.kendalltau(y_true, y_pred).statistic),
    }


@torch.no_grad()
def hop_norm_moments(model: Predictor, graphs: GraphSet, idx, norm: int, batch_size: int = 4096) -> torch.Tensor:
    """[2, n_hops]: mean and std of the Lp norm of every node embedding at every hop, over ``idx``."""
    model.eval()
    per_hop: list[list[torch.Tensor]] = [[] for _ in range(model.num_hops)]
    idx = torch.as_tensor(idx)
    for start in range(0, len(idx), batch_size):
        for hop, h in enumerate(model.node_embeddings(graphs.batch(idx[start:start + batch_size]))):
            per_hop[hop].append(torch.linalg.vector_norm(h, ord=norm, dim=-1))
    norms = [torch.cat(n) for n in per_hop]
    return torch.stack([torch.stack([n.mean() for n in norms]), torch.stack([n.std() for n in norms])])
