import random

import pytest

from iterators.search_space import (ArchError, FAMILIES, arch_from_json, from_ofa, make_arch, random_arch,
                                    to_ofa)

MBV3 = [["mbconv3_e4_k3", "mbconv3_e6_k5"], ["mbconv3_e3_k7", "mbconv3_e3_k3", "mbconv3_e4_k5"],
        ["mbconv3_e6_k7", "mbconv3_e6_k7"], ["mbconv3_e3_k3"] * 4, ["mbconv3_e4_k5", "mbconv3_e4_k7"]]
PN = [["mbconv2_e3_k3"] * 2] * 5 + [["mbconv2_e6_k7"]]


def test_valid_configs_parse():
    a = make_arch(MBV3, 224)
    assert a.family == "ofa_mbv3" and a.depths == [2, 3, 2, 4, 2] and a.n_blocks == 13
    assert a.stages[0] == ((4, 3), (6, 5)) and a.config == MBV3
    b = make_arch(PN, 128)
    assert b.family == "ofa_pn" and b.depths == [2, 2, 2, 2, 2, 1]
    assert b.unit_hops() == [1, 1, 1, 1, 2]  # PN unit 5 = stage 5 + the one-block stage 6


@pytest.mark.parametrize("config, res, message", [
    (MBV3[:4], 224, "5 stages"),
    ([MBV3[0], ["mbconv3_e4_k3"]] + MBV3[2:], 224, "stage 2 has 1 blocks"),
    ([MBV3[0], MBV3[1][:2] + ["mbconv3_e5_k3"]] + MBV3[2:], 224, "stage 2 block 3: expansion 5"),
    ([MBV3[0], MBV3[1], ["mbconv3_e6_k9", "mbconv3_e6_k7"]] + MBV3[3:], 224, "stage 3 block 1: kernel 9"),
    ([MBV3[0], MBV3[1], ["mbconv2_e6_k7", "mbconv3_e6_k7"]] + MBV3[3:], 224, "stage 3 block 1"),
    ([MBV3[0], MBV3[1], MBV3[2], MBV3[3][:3] + ["conv3x3"]] + MBV3[4:], 224, "stage 4 block 4"),
    (MBV3, 226, "resolution 226"),
    (MBV3, 232, "resolution 232"),
    (PN[:5] + [["mbconv2_e6_k7", "mbconv2_e6_k7"]], 224, "stage 6 has 2 blocks"),
])
def test_invalid_configs_name_the_problem(config, res, message):
    with pytest.raises(ArchError, match=message):
        make_arch(config, res)


def test_json_entry_needs_both_keys():
    with pytest.raises(ArchError, match="resolution"):
        arch_from_json({"config": MBV3})


def test_ofa_notation_round_trip_and_slots():
    a = make_arch(MBV3, 208)
    ofa = to_ofa(a)
    assert len(ofa["ks"]) == 20 and ofa["d"] == [2, 3, 2, 4, 2] and ofa["r"] == 208
    assert ofa["ks"][4:7] == [7, 3, 5] and ofa["e"][4:7] == [3, 3, 4]  # stage 2 uses slots 4..6
    assert from_ofa(ofa) == a
    rng = random.Random(3)
    for family in FAMILIES:
        for _ in range(50):
            arch = random_arch(family, rng)
            assert from_ofa(to_ofa(arch)) == arch


def test_ofa_notation_ignores_unused_slots_and_pn_last_depth():
    ofa = {"ks": [7] * 21, "e": [6] * 21, "d": [2, 2, 2, 2, 2, 4], "r": 224}  # OFA clips stage 6 to one block
    arch = from_ofa(ofa)
    assert arch.family == "ofa_pn" and arch.depths == [2, 2, 2, 2, 2, 1]
    assert from_ofa({**ofa, "d": [2, 2, 2, 2, 2]}) == arch
    with pytest.raises(ArchError, match="matches no family"):
        from_ofa({"ks": [3] * 19, "e": [3] * 19, "d": [2] * 5, "r": 224})
