import torch

from iterators.encoding import encode_arch, encode_archs
from iterators.graphs import GraphSet
from iterators.search_space import make_arch

PN = [["mbconv2_e3_k5", "mbconv2_e6_k7"], ["mbconv2_e4_k3", "mbconv2_e4_k3"], ["mbconv2_e3_k3"] * 2,
      ["mbconv2_e3_k3"] * 2, ["mbconv2_e6_k3", "mbconv2_e3_k7", "mbconv2_e4_k5"], ["mbconv2_e6_k5"]]


def test_hand_checked_sequence_graph():
    data = encode_arch(make_arch(PN, 208))
    # [stage, layer, block type, expansion index, kernel index, (208-192)/32]
    expected_head = [[0, 0, 0, 0, 1, 0.5], [0, 1, 0, 2, 2, 0.5], [1, 0, 0, 1, 0, 0.5]]
    expected_tail = [[4, 0, 0, 2, 0, 0.5], [4, 1, 0, 0, 2, 0.5], [4, 2, 0, 1, 1, 0.5], [5, 0, 0, 2, 1, 0.5]]
    assert data.x.shape == (12, 6)
    assert data.x[:3].tolist() == expected_head and data.x[-4:].tolist() == expected_tail
    assert data.edge_index.tolist() == [list(range(11)), list(range(1, 12))]


def test_mbv3_block_type_and_resolution_feature():
    data = encode_arch(make_arch([["mbconv3_e6_k7"] * 2] * 5, 160))
    assert data.x[0].tolist() == [0, 0, 1, 2, 2, -1.0]


def test_graphset_batch_is_the_disjoint_union():
    archs = [make_arch(PN, 224), make_arch([["mbconv2_e3_k3"] * 4] * 5 + [["mbconv2_e3_k3"]], 192),
             make_arch(PN, 128)]
    graphs = encode_archs(archs)
    batch = graphs.batch([2, 0])
    one, two = encode_arch(archs[2]), encode_arch(archs[0])
    assert torch.equal(batch.x, torch.cat([one.x, two.x]))
    assert torch.equal(batch.edge_index, torch.cat([one.edge_index, two.edge_index + one.x.shape[0]], dim=1))
    assert batch.batch.tolist() == [0] * 12 + [1] * 12 and batch.num_graphs == 2
    assert batch.last_node.tolist() == [11, 23]
    # the general constructor gives the same store as the sequence shortcut
    general = GraphSet.from_lists([encode_arch(a).x.numpy() for a in archs],
                                  [encode_arch(a).edge_index.numpy() for a in archs])
    assert torch.equal(general.batch([1, 2]).edge_index, graphs.batch([1, 2]).edge_index)
