import torch

from iterators.encoding import encode_archs
from iterators.graphs import GraphSet
from iterators.search_space import make_arch

PN = [["mbconv2_e3_k5", "mbconv2_e6_k7"], ["mbconv2_e4_k3", "mbconv2_e4_k3"], ["mbconv2_e3_k3"] * 2,
      ["mbconv2_e3_k3"] * 2, ["mbconv2_e6_k3", "mbconv2_e3_k7", "mbconv2_e4_k5"], ["mbconv2_e6_k5"]]


def test_hand_checked_sequence_graph():
    data = encode_archs([make_arch(PN, 208)]).batch()
    # [stage, layer, block type, expansion index, kernel index, (208-192)/32]
    expected_head = [[0, 0, 0, 0, 1, 0.5], [0, 1, 0, 2, 2, 0.5], [1, 0, 0, 1, 0, 0.5]]
    expected_tail = [[4, 0, 0, 2, 0, 0.5], [4, 1, 0, 0, 2, 0.5], [4, 2, 0, 1, 1, 0.5], [5, 0, 0, 2, 1, 0.5]]
    assert data.x.shape == (12, 6)
    assert data.x[:3].tolist() == expected_head and data.x[-4:].tolist() == expected_tail
    assert data.chain and data.edge_index.tolist() == [list(range(11)), list(range(1, 12))]


def test_mbv3_block_type_and_resolution_feature():
    x = encode_archs([make_arch([["mbconv3_e6_k7"] * 2] * 5, 160), make_arch(PN, 224)]).x
    assert x[0].tolist() == [0, 0, 1, 2, 2, -1.0]
    assert x[10].tolist() == [0, 0, 0, 0, 1, 1.0]  # the second network (PN) starts after the first one's 10 blocks


def test_graphset_batch_is_the_disjoint_union():
    archs = [make_arch(PN, 224), make_arch([["mbconv2_e3_k3"] * 4] * 5 + [["mbconv2_e3_k3"]], 192),
             make_arch(PN, 128)]
    graphs = encode_archs(archs)
    batch = graphs.batch([2, 0])
    one, two = (encode_archs([a]).batch() for a in (archs[2], archs[0]))
    assert torch.equal(batch.x, torch.cat([one.x, two.x]))
    assert torch.equal(batch.edge_index, torch.cat([one.edge_index, two.edge_index + one.x.shape[0]], dim=1))
    assert batch.batch.tolist() == [0] * 12 + [1] * 12 and batch.num_graphs == 2
    assert batch.last_node.tolist() == [11, 23] and batch.prev_mask.flatten().tolist() == ([0] + [1] * 11) * 2
    # the general constructor gives the same store as the sequence shortcut, and finds that these are chains
    singles = [encode_archs([a]).batch() for a in archs]
    general = GraphSet.from_lists([s.x.numpy() for s in singles], [s.edge_index.numpy() for s in singles])
    assert general.chain and torch.equal(general.batch([1, 2]).edge_index, graphs.batch([1, 2]).edge_index)
    # a slice is the batch of a contiguous range
    assert torch.equal(graphs.slice(1, 3).x, graphs.batch([1, 2]).x)
    assert graphs.slice(1, 3).ptr.tolist() == graphs.batch([1, 2]).ptr.tolist() == [0, 21, 33]


def test_a_graph_with_another_edge_is_no_chain():
    x = [torch.zeros(3, 2).numpy(), torch.zeros(2, 2).numpy()]
    assert GraphSet.from_lists(x, [torch.tensor([[0, 1], [1, 2]]).numpy(), torch.tensor([[0], [1]]).numpy()]).chain
    skip = GraphSet.from_lists(x, [torch.tensor([[0, 1, 0], [1, 2, 2]]).numpy(), torch.tensor([[0], [1]]).numpy()])
    backwards = GraphSet.from_lists(x, [torch.tensor([[1, 2], [0, 1]]).numpy(), torch.tensor([[0], [1]]).numpy()])
    assert not skip.chain and not backwards.chain
    assert skip.batch([1, 0]).edge_index.tolist() == [[0, 2, 3, 2], [1, 3, 4, 4]]
