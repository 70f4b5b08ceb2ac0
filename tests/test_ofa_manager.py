import dataclasses
import random

import pytest
import torch
from ofa.imagenet_classification.networks import MobileNetV2
from ofa.utils import make_divisible
from ofa.utils.pytorch_utils import count_net_flops

from evaluation.ofa_manager import (build_subnet, build_supernet, checkpoint_name, count_flops_params, cpu_name,
                                   load_supernet, measure_latency)
from iterators.search_space import FAMILIES, random_arch

FAMILY_NAMES = list(FAMILIES)


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def arch_and_subnet(request):
    arch = random_arch(request.param, random.Random(0))
    return arch, build_subnet(arch)


def test_supernet_is_cached():
    assert build_supernet("ofa_mbv3") is build_supernet("ofa_mbv3")
    assert build_supernet("ofa_mbv3") is not build_supernet("ofa_pn")


def test_subnet_structure_matches_arch(arch_and_subnet):
    arch, subnet = arch_and_subnet
    assert not subnet.training
    first, *blocks = subnet.blocks  # block 0 is the fixed expand-1 block before the elastic stages
    assert first.conv.expand_ratio == 1
    assert len(blocks) == arch.n_blocks
    for block, (e, k) in zip(blocks, [b for stage in arch.stages for b in stage]):
        conv = block.conv
        assert conv.depth_conv.conv.kernel_size == (k, k)
        assert conv.expand_ratio == e
        assert conv.inverted_bottleneck.conv.out_channels == make_divisible(round(conv.in_channels * e), 8)


def test_forward_shape(arch_and_subnet):
    arch, subnet = arch_and_subnet
    with torch.no_grad():
        out = subnet(torch.randn(1, 3, arch.resolution, arch.resolution))
    assert out.shape == (1, 1000)


def test_flops_and_params(arch_and_subnet):
    arch, subnet = arch_and_subnet
    f160, p160 = count_flops_params(subnet, 160)
    f224, p224 = count_flops_params(subnet, 224)
    assert 0 < f160 < f224
    assert p160 == p224 == sum(p.numel() for p in subnet.parameters()) / 1e6
    assert not any("total_ops" in n or "total_params" in n for n, _ in subnet.named_buffers())
    # OFA's own counter agrees (it sums in float32, hence the tolerance);
    # a second build of the same arch gives the same numbers
    assert f224 == pytest.approx(count_net_flops(subnet, (1, 3, 224, 224)) / 1e6, rel=1e-6)
    f_res, p_res = count_flops_params(subnet, arch.resolution)
    assert count_flops_params(build_subnet(arch), arch.resolution) == (f_res, p_res)


def test_flops_params_of_mobilenet_v2():
    # published: 300M MACs, 3,504,872 parameters at 224 (MobileNetV2 width 1.0)
    flops, params = count_flops_params(MobileNetV2(width_mult=1.0), 224)
    assert 299 < flops < 302
    assert params == pytest.approx(3.504872, abs=1e-9)


def test_smallest_and_largest_mbv3():
    arch = random_arch("ofa_mbv3", random.Random(0))
    smallest = dataclasses.replace(arch, resolution=224, stages=tuple(((3, 3),) * 2 for _ in arch.stages))
    largest = dataclasses.replace(arch, resolution=224, stages=tuple(((6, 7),) * 4 for _ in arch.stages))
    (f_min, p_min), (f_max, p_max) = (count_flops_params(build_subnet(a), 224) for a in (smallest, largest))
    assert f_min == pytest.approx(193.08, abs=0.01) and p_min == pytest.approx(4.602, abs=0.001)
    assert f_max == pytest.approx(843.10, abs=0.01) and p_max == pytest.approx(10.702, abs=0.001)


def test_latency(arch_and_subnet):
    arch, subnet = arch_and_subnet
    threads = torch.get_num_threads()
    lat = measure_latency(subnet, arch.resolution, warmup=2, repeats=5)
    assert torch.get_num_threads() == threads
    assert set(lat) == {"median_ms", "mean_ms", "std_ms", "iqr_ms", "p10_ms", "p90_ms", "repeats", "threads",
                        "device"}
    assert 0 < lat["p10_ms"] <= lat["median_ms"] <= lat["p90_ms"]
    assert lat["std_ms"] >= 0 and lat["iqr_ms"] >= 0
    assert (lat["repeats"], lat["threads"], lat["device"]) == (5, 1, "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_latency_without_cuda():
    subnet = build_subnet(random_arch("ofa_pn", random.Random(0)))
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        measure_latency(subnet, 160, device="cuda")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_load_supernet_missing_file(family, tmp_path):
    with pytest.raises(FileNotFoundError, match=checkpoint_name(family)) as err:
        load_supernet(family, tmp_path / "nothing.pth")
    assert "mit-han-lab/once-for-all" in str(err.value)


def test_load_supernet_roundtrip(tmp_path):
    path = tmp_path / checkpoint_name("ofa_pn")
    torch.save({"state_dict": build_supernet("ofa_pn").state_dict()}, path)
    loaded = load_supernet("ofa_pn", path)
    assert loaded is not build_supernet("ofa_pn")
    for (name, a), b in zip(build_supernet("ofa_pn").state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_build_subnet_rejects_wrong_supernet():
    with pytest.raises(TypeError):
        build_subnet(random_arch("ofa_mbv3", random.Random(0)), build_supernet("ofa_pn"))


def test_cpu_name():
    assert isinstance(cpu_name(), str) and cpu_name()
