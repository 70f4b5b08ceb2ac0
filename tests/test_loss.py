import pytest
import torch
from scipy import stats

from models.loss import RankingLoss, average_ranks, soft_spearman


def test_average_ranks_match_scipy_with_ties():
    x = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 1.0])
    assert average_ranks(x).tolist() == stats.rankdata(x.numpy()).tolist()


def test_soft_spearman_matches_scipy_on_untied_data():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        target = torch.randn(64, generator=gen)
        # correlated values spaced 0.01 apart: untied, and far apart compared with the regularisation strength
        pred = average_ranks(target + 0.8 * torch.randn(64, generator=gen)) * 0.01
        expected = stats.spearmanr(target.numpy(), pred.numpy()).statistic
        assert soft_spearman(target, pred, strength=1e-4).item() == pytest.approx(expected, abs=1e-5)
    # and it stays differentiable
    pred = torch.randn(16, requires_grad=True)
    soft_spearman(torch.randn(16), pred).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_ranking_loss_is_mse_plus_mean_rank_penalty():
    target = torch.tensor([0.0, 1.0, 2.0, 3.0])
    pred = torch.tensor([0.5, 1.0, 2.0, 2.5])
    perfect = torch.tensor([[1.0], [2.0], [3.0], [4.0]])  # norms ranked like the target
    reversed_ = perfect.flip(0)
    mse = ((pred - target) ** 2).mean().item()
    assert RankingLoss(1.0, 1, 1e-4)(pred, target, [perfect, perfect]).item() == pytest.approx(mse, abs=1e-5)
    # reversed ranks: 1 - (-1) = 2 on one hop of two, averaged -> 1
    assert RankingLoss(1.0, 1, 1e-4)(pred, target, [perfect, reversed_]).item() == pytest.approx(mse + 1, abs=1e-5)
    assert RankingLoss(0.0)(pred, target, [reversed_]).item() == pytest.approx(mse)
