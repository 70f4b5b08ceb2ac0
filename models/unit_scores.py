"""Scoring every unit of a search space with a trained predictor (the heart of label_units.py).

A unit with n blocks is encoded as a sequence graph at its stage; its score is the Lp norm of its last node's
embedding at hop h = n - 1 (the first hop whose receptive field covers the whole unit), standardised with the
predictor's hop-h norm moments and mapped onto the target moments of (stage, depth index h).
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from iterators.errors import UserError
from iterators.search_space import FAMILIES
from iterators.units import group_graphs, unit_groups
from models.predictor import Predictor


@torch.no_grad()
def score_units(model: Predictor, family: str, resolution: int = 224, norm: int = 1, batch_size: int = 4096,
                progress: bool = True) -> list[dict]:
    """``[{"unit", "config", "hops", "score"}, ...]`` for every unit of ``family``, grouped by unit and length."""
    groups = unit_groups(family)
    deepest = max(g.hops for g in groups)
    if model.num_hops - 1 < deepest:
        raise UserError(f"{family} units need embeddings up to hop {deepest}; this predictor has "
                         f"{model.num_hops - 1} layers (train it with -num_layers {deepest} or more)")
    model.eval()
    fam = FAMILIES[family]
    out = []
    bar = tqdm(total=sum(len(g.choices) for g in groups), desc=f"score {family} units", unit="unit",
               disable=not progress, dynamic_ncols=True)
    for group in groups:
        graphs = group_graphs(group, family, resolution)
        scores = []
        for idx, batch in graphs.batches(batch_size):
            last = model.sink_embeddings(batch.x.view(batch.num_graphs, group.choices.shape[1], -1), group.hops)
            norms = torch.linalg.vector_norm(last, ord=norm, dim=-1)
            scores.append(model.shift_unit_scores(norms, group.unit - 1, group.hops))
            bar.update(len(idx))
        scores = torch.cat(scores).tolist()
        out.extend({"unit": group.unit, "config": cfg, "hops": group.hops, "score": s}
                   for cfg, s in zip(group.configs(fam), scores))
    bar.close()
    return out
