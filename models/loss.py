"""The AutoBuild ranking loss: MSE plus (1 - soft Spearman) between the target and every hop's embedding norm."""
from __future__ import annotations

import torch
import torchsort
from torch import nn


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Exact 1-based ranks of a 1-D tensor, ties sharing their average rank (as scipy.stats.rankdata)."""
    values, order = torch.sort(x)
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(x.dtype)
    group_rank = ends - (counts.to(x.dtype) - 1) / 2
    ranks = torch.empty_like(x)
    ranks[order] = group_rank[inverse]
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of a [n] with every row of b [..., n] -> [...]."""
    a, b = a - a.mean(), b - b.mean(dim=-1, keepdim=True)
    return (b @ a) / (a.norm() * b.norm(dim=-1)).clamp_min(1e-12)


def soft_spearman(target: torch.Tensor, pred: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Spearman correlation with differentiable soft ranks of ``pred`` (torchsort, L2) and exact ranks of the target.

    target [n]; pred [n], or [k, n] for k rankings at once (one soft-rank call) -> [] or [k]. As ``strength`` -> 0 it
    equals the exact Spearman correlation.
    """
    soft = torchsort.soft_rank(pred.reshape(-1, pred.shape[-1]), regularization="l2",
                               regularization_strength=strength)
    return pearson(average_ranks(target), soft.reshape(pred.shape))


class RankingLoss(nn.Module):
    r"""loss = MSE(pred, y) + \lambda / (L+1) \sum_l (1 - soft_spearman(y, ||g_l||_p))

    with g_l the hop-l graph embedding; the L+1 rankings are soft-ranked in one call."""

    def __init__(self, corr_lambda: float = 1.0, norm: int = 1, strength: float = 1.0):
        super().__init__()
        self.corr_lambda, self.norm, self.strength = corr_lambda, norm, strength

    def forward(self, pred: torch.Tensor, target: torch.Tensor, graph_embeds: list[torch.Tensor]) -> torch.Tensor:
        loss = nn.functional.mse_loss(pred, target)
        if self.corr_lambda > 0 and target.numel() > 1:
            norms = torch.stack([torch.linalg.vector_norm(g, ord=self.norm, dim=-1) for g in graph_embeds])
            loss = loss + self.corr_lambda * (1 - soft_spearman(target, norms, self.strength)).mean()
        return loss
