import json
import os
import pickle

import numpy as np
import pytest

import label_units
import save_topk_ofa
from iterators.errors import UserError
from conftest import UPSTREAM, upstream_checkpoint
from iterators.search_space import ArchError, make_arch
from iterators.units import (ReducedSpace, UnitCorpus, assemble, load_unit_corpus, rank_networks, split_into_units,
                             unit_groups, unit_moment_shape, unit_target_moments)


def count_units(family):
    return sum(len(g.choices) for g in unit_groups(family))


def test_unit_counts_match_the_paper():
    assert count_units("ofa_mbv3") == 5 * (9 ** 2 + 9 ** 3 + 9 ** 4) == 36855
    assert count_units("ofa_pn") == 4 * 7371 + 9 ** 3 + 9 ** 4 + 9 ** 5 == 95823
    pn_unit5 = [g for g in unit_groups("ofa_pn") if g.unit == 5]
    assert sorted(g.stage_lengths for g in pn_unit5) == [(2, 1), (3, 1), (4, 1)]
    assert [g.hops for g in sorted(pn_unit5, key=lambda g: g.stage_lengths)] == [2, 3, 4]


@pytest.fixture(scope="module")
def reference():
    with open(os.path.join(UPSTREAM, "unit_scores_sample.json")) as f:
        return json.load(f)["families"]


@pytest.mark.parametrize("family", ["ofa_mbv3", "ofa_pn"])
def test_label_units_reproduces_the_original_scores(reference, family, tmp_path):
    out = label_units.main(["-chkpt", upstream_checkpoint(family, "acc"), "-out_dir", str(tmp_path), "-quiet"])
    corpus = load_unit_corpus(out)
    assert corpus.family == family and corpus.target == "acc"
    units = corpus.units
    assert len(units) == count_units(family)
    by_key = {(u["unit"], json.dumps(u["config"])): u for u in units}
    for ref in reference[family]:
        got = by_key[(ref["unit"], json.dumps(ref["config"]))]
        assert got["hops"] == ref["hops"]
        assert got["score"] == pytest.approx(ref["score"], rel=1e-6)
    assert os.path.exists(out.replace("_labeled_sgs.json", "_unit_scores.png"))


def test_top_k_and_search_space_file(tmp_path, capsys):
    corpus = [{"unit": u, "config": [f"mbconv3_e3_k{k}", "mbconv3_e3_k3"], "hops": 1, "score": s}
              for u in range(1, 6) for k, s in ((3, 1.0), (5, 3.0), (7, 2.0))]
    path = tmp_path / "x_labeled_sgs.json"
    path.write_text(json.dumps(corpus))  # the plain list label_units.py wrote before it named family and target
    space = ReducedSpace.top_k(load_unit_corpus(str(path)), [2])
    assert [c["config"][0] for c in space.candidates[0]] == ["mbconv3_e3_k5", "mbconv3_e3_k7"]
    out = save_topk_ofa.main(["-unit_corpus", str(path), "-k", "2", "1", "3", "1", "1", "-out_dir", str(tmp_path),
                              "-n", "3"])
    assert out.endswith("x_2-1-3-1-1_search_space.json")
    saved = ReducedSpace.load(out)
    assert saved.sizes == [2, 1, 3, 1, 1] and saved.candidates[2][2]["config"][0] == "mbconv3_e3_k3"
    assert saved.scores()[2] == [3.0, 2.0, 1.0] and saved.family == "ofa_mbv3"
    printed = capsys.readouterr().out
    assert "2 x 1 x 3 x 1 x 1 = 6 networks" in printed
    # -n lists the best networks by summed unit score: k5 everywhere first, then a k7 (ties in position order)
    assert "     0  e3k5 e3k3 || e3k5 e3k3 || e3k5 e3k3 || e3k5 e3k3 || e3k5 e3k3\n" in printed
    assert "     1  e3k5 e3k3 || e3k5 e3k3 || e3k7 e3k3 || e3k5 e3k3 || e3k5 e3k3\n" in printed
    assert "     2  e3k7 e3k3 || e3k5 e3k3 || e3k5 e3k3 || e3k5 e3k3 || e3k5 e3k3\nwrote" in printed
    with pytest.raises(UserError, match="one per position"):
        ReducedSpace.top_k(load_unit_corpus(str(path)), [1, 2])


def test_merged_corpora_and_cost_targets(tmp_path):
    """Several corpora merge per position; a latency corpus keeps its lowest-scored (fastest) units."""
    blocks = [[f"mbconv3_e{e}_k3", "mbconv3_e3_k3"] for e in (3, 4, 6)]
    acc = UnitCorpus("ofa_mbv3", [{"unit": u, "config": b, "hops": 1, "score": s}
                                  for u in range(1, 6) for b, s in zip(blocks, (0.1, 0.2, 0.3))], "acc")
    lat = UnitCorpus("ofa_mbv3", [{"unit": u, "config": b, "hops": 1, "score": s}
                                  for u in range(1, 6) for b, s in zip(blocks, (1.0, 2.0, 3.0))], "latency_gpu")
    paths = [acc.save(str(tmp_path / "acc_labeled_sgs.json")), lat.save(str(tmp_path / "lat_labeled_sgs.json"))]
    out = save_topk_ofa.main(["-unit_corpus", *paths, "-k", "1", "-out_dir", str(tmp_path)])
    space = ReducedSpace.load(out)
    assert space.configs()[0] == [blocks[2], blocks[0]]  # acc keeps e6 (highest), latency keeps e3 (lowest)
    assert [s["keep"] for s in space.sources] == ["highest", "lowest"]
    assert [c["source"] for c in space.candidates[0]] == [0, 1]
    with pytest.raises(UserError, match="summed unit score"):
        space.scores()  # scores of different targets do not add up
    both = save_topk_ofa.main(["-unit_corpus", *paths, "-k", "2", "-keep", "highest", "-out",
                               str(tmp_path / "h.json")])
    assert ReducedSpace.load(both).configs()[0] == [blocks[2], blocks[1]]  # both keep e6 and e4: listed once
    merged = ReducedSpace.merge([ReducedSpace.load(out), ReducedSpace.load(out)])
    assert merged.sizes == [2] * 5 and len(merged.sources) == 4


def test_assemble_and_split_are_inverse():
    pn = [["mbconv2_e3_k3"] * 2, ["mbconv2_e4_k5"] * 3, ["mbconv2_e6_k7"] * 4, ["mbconv2_e3_k5"] * 2,
          ["mbconv2_e4_k3"] * 3, ["mbconv2_e6_k3"]]
    arch = make_arch(pn, 208)
    units = split_into_units(arch)
    assert units[4] == [["mbconv2_e4_k3"] * 3, ["mbconv2_e6_k3"]]
    assert assemble("ofa_pn", units, 208) == arch
    with pytest.raises(ArchError, match="unit 5"):
        assemble("ofa_pn", units[:4] + [["mbconv2_e4_k3"] * 3], 208)


def test_networks_ordered_by_summed_score():
    order = rank_networks([[5.0, 1.0], [0.0, 2.0, 1.0]])
    sums = [[5.0, 1.0][a] + [0.0, 2.0, 1.0][b] for a, b in order]
    assert sums == sorted(sums, reverse=True) and order[0].tolist() == [0, 1] and len(order) == 6
    shuffled = rank_networks([[5.0, 1.0], [0.0, 2.0, 1.0]], seed=1)
    assert sorted(map(tuple, shuffled.tolist())) == sorted(map(tuple, order.tolist()))
    assert np.array_equal(shuffled, rank_networks([[5.0, 1.0], [0.0, 2.0, 1.0]], seed=1))


def test_unit_target_moments_by_hand():
    two = [["mbconv3_e3_k3"] * 2] * 5
    arch_a = make_arch(two, 224)                                    # every unit depth index 1
    arch_b = make_arch([["mbconv3_e3_k3"] * 4] + two[1:], 224)      # unit 1 depth index 3
    moments = unit_target_moments([arch_a, arch_b, arch_a], np.array([1.0, 5.0, 3.0]), "ofa_mbv3")
    assert moments.shape == (5, 4, 2) and unit_moment_shape("ofa_pn") == (5, 5)
    assert moments[0, 1].tolist() == pytest.approx([2.0, 1.0])      # unit 1 at depth index 1: {1, 3}
    assert moments[0, 3].tolist() == pytest.approx([5.0, 0.0])
    assert moments[1, 1].tolist() == pytest.approx([3.0, np.std([1.0, 5.0, 3.0])])
    assert moments[0, 2].tolist() == [0.0, 1.0]                     # never seen: the neutral default


def _original_corpus(family, per_position=3):
    """Units as the original's label_units.py pickled them: each dict also holds its torch_geometric graph."""
    import torch
    from torch_geometric.data import Data
    prefix = "mbconv3" if family == "ofa_mbv3" else "mbconv2"
    units = []
    for u in range(1, 6):
        for i, e in enumerate((3, 4, 6)[:per_position]):
            blocks = [f"{prefix}_e{e}_k3", f"{prefix}_e3_k5", f"{prefix}_e3_k7"]
            config = [blocks[:2], blocks[2:]] if family == "ofa_pn" and u == 5 else blocks
            graph = Data(x=torch.rand(3, 6), edge_index=torch.tensor([[0, 1], [1, 2]]))
            units.append({"config": config, "tg_subgraph": graph, "unit": u, "hops": 2, "score": float(u + e)})
    return units


@pytest.mark.parametrize("family", ["ofa_mbv3", "ofa_pn"])
def test_reads_the_original_corpus_pickle(tmp_path, family):
    path = tmp_path / "units" / f"x_{family}_custom_acc_labeled_sgs.pkl"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(_original_corpus(family), protocol=4))
    corpus = load_unit_corpus(str(path))
    assert corpus.family == family and len(corpus.units) == 15 and corpus.target is None
    assert corpus.units[0] == {"unit": 1, "config": corpus.units[0]["config"], "hops": 2, "score": 4.0}
    out = save_topk_ofa.main(["-unit_corpus", str(path), "-k", "2", "-out_dir", str(tmp_path / "evals")])
    assert out.endswith(f"x_{family}_custom_acc_2_search_space.json")
    space = ReducedSpace.load(out)
    assert space.scores() == [[u + 6.0, u + 4.0] for u in range(1, 6)]  # e6 then e4: highest first
    assert space.network([0] * 5, 224).family == family


def test_corpus_pickles_that_run_code_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    path = tmp_path / "evil_labeled_sgs.pkl"
    path.write_bytes(pickle.dumps([{"config": ["mbconv3_e3_k3"] * 2, "unit": 1, "hops": 1, "score": Evil()}]))
    with pytest.raises(UserError, match="evil_labeled_sgs.pkl: refusing to load posix.system"):
        load_unit_corpus(str(path))
    (tmp_path / "bad.json").write_text('{"units": [{"unit": 9}]}')
    with pytest.raises(UserError, match="bad.json: not a valid unit corpus: expected a list"):
        load_unit_corpus(str(tmp_path / "bad.json"))
    with pytest.raises(UserError, match="missing.pkl: no such file"):
        ReducedSpace.load(str(tmp_path / "missing.pkl"))
