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
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12)


def soft_spearman(target: torch.Tensor, pred: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Spearman correlation with differentiable soft ranks of ``pred`` (torchsort, L2) and exact ranks of the target.

    As ``strength`` -> 0 it equals the exact Spearman correlation.
    """
    soft = torchsort.soft_rank(pred.unsqueeze(0), regularization="l2", regularization_strength=strength).squeeze(0)
    return pearson(average_ranks(target), soft)


class RankingLoss(nn.Module):
    r"""loss = MSE(pred, y) + \lambda / (L+1) \sum_l (1 - soft_spearman(y, ||g_l||_p)), g_l the hop-l graph embedding."""

    def __init__(self, corr_lambda: float = 1.0, norm: int = 1, strength: float = 1.0):
        super().__init__()
        self.corr_lambda, self.norm, self.strength = corr_lambda, norm, strength

    def forward(self, pred: torch.Tensor, target: torch.Tensor, graph_embeds: list[torch.Tensor]) -> torch.Tensor:
        loss = nn.functional.mse_loss(pred, target)
        if self.corr_lambda > 0 and target.numel() > 1:
            corr = sum(1 - soft_spearman(target, torch.linalg.vector_norm(g, ord=self.norm, dim=-1), self.strength)
                       for g in graph_embeds)
            loss = loss + self.corr_lambda * corr / len(graph_embeds)
        return loss
