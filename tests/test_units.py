import json
import os

import numpy as np
import pytest

import label_units
import save_topk_ofa
from conftest import UPSTREAM, upstream_checkpoint
from iterators.search_space import ArchError, make_arch
from iterators.units import (assemble, count_units, rank_networks, split_into_units, top_k_units, unit_groups)


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
    with open(out) as f:
        units = json.load(f)
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
    path.write_text(json.dumps(corpus))
    space = top_k_units(corpus, [2])
    assert [u["config"][0] for u in space[0]] == ["mbconv3_e3_k5", "mbconv3_e3_k7"]
    out = save_topk_ofa.main(["-unit_corpus", str(path), "-k", "2", "1", "3", "1", "1", "-out_dir", str(tmp_path)])
    assert out.endswith("x_2-1-3-1-1_search_space.json")
    saved = json.loads(open(out).read())
    assert [len(s) for s in saved] == [2, 1, 3, 1, 1] and saved[2][2][0] == "mbconv3_e3_k3"
    assert "2 x 1 x 3 x 1 x 1 = 6 networks" in capsys.readouterr().out
    with pytest.raises(ValueError, match="one per unit"):
        top_k_units(corpus, [1, 2])


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
