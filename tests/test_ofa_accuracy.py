import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from evaluation.ofa_accuracy import AccuracyEvaluator, check_imagenet_dir
from evaluation.ofa_manager import build_supernet, check_supernet_file, checkpoint_name
from iterators.search_space import FAMILIES, make_arch

FAMILY = "ofa_mbv3"
N_CLASSES = 3


def _write_images(split_dir, per_class, rng):
    for c in range(N_CLASSES):
        class_dir = split_dir / f"n{c:08d}"
        class_dir.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(40, 44, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(class_dir / f"img_{i}.JPEG", format="JPEG")


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    _write_images(root / "train", 4, rng)
    _write_images(root / "val", 3, rng)
    return root


@pytest.fixture(scope="module")
def supernet_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / checkpoint_name(FAMILY)
    torch.save({"state_dict": build_supernet(FAMILY).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def small_arch():
    n_stages = FAMILIES[FAMILY].n_stages
    return make_arch([["mbconv3_e3_k3"] * 2] * n_stages, 128, FAMILY)


@pytest.fixture(scope="module")
def evaluator(imagenet_dir, supernet_path):
    ev = AccuracyEvaluator(FAMILY, str(supernet_path), str(imagenet_dir), calib_images=6, calib_batch_size=4,
                           eval_batch_size=4, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only 3 of the classifier's 1000 classes: see test_max_val_images
        ev.datasets(128)
    return ev


def _bn_stats(model):
    return {name: (m.running_mean.clone(), m.running_var.clone())
            for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def test_evaluate_returns_percentage(evaluator, small_arch):
    rng_state = torch.get_rng_state()
    acc = evaluator.evaluate(small_arch)
    assert torch.equal(torch.get_rng_state(), rng_state)  # seeded on its own: the caller's RNG is left alone
    assert isinstance(acc, float)
    assert 0.0 <= acc <= 100.0


def test_batch_norm_is_recalibrated_deterministically(evaluator, small_arch):
    default = _bn_stats(build_supernet(FAMILY))  # a fresh supernet: running mean 0, running var 1
    assert all(torch.all(mean == 0) and torch.all(var == 1) for mean, var in default.values())
    first = _bn_stats(evaluator.calibrated_subnet(small_arch))
    assert first
    assert all(not torch.all(mean == 0) and not torch.all(var == 1) for mean, var in first.values())
    # the same seeded calibration images and augmentations give the same statistics
    second = _bn_stats(evaluator.calibrated_subnet(small_arch))
    for name, (mean, var) in first.items():
        assert torch.allclose(mean, second[name][0]) and torch.allclose(var, second[name][1])
    # the supernet's own statistics are left alone
    assert all(torch.all(m.running_mean == 0) for m in evaluator.supernet.modules() if isinstance(m, nn.BatchNorm2d))


def test_datasets_are_cached_and_subsets_sized(evaluator):
    calib, val = evaluator.datasets(128)
    assert evaluator.datasets(128)[0] is calib
    assert len(calib) == 6 and len(val) == N_CLASSES * 3
    image, _ = calib[0]
    assert image.shape == (3, 128, 128)
    assert torch.equal(image, calib[0][0])  # seeded augmentation


def test_max_val_images(imagenet_dir, supernet_path):
    ev = AccuracyEvaluator(FAMILY, str(supernet_path), str(imagenet_dir), calib_images=2, max_val_images=4,
                           progress=False)
    with pytest.warns(UserWarning, match="3 class folders, not 1000"):
        assert len(ev.datasets(128)[1]) == 4


def test_missing_imagenet_dir(tmp_path, supernet_path):
    with pytest.raises(FileNotFoundError, match="image-net.org") as err:
        check_imagenet_dir(str(tmp_path / "nowhere"))
    assert "train/<class>" in str(err.value) and "val/<class>" in str(err.value)
    with pytest.raises(FileNotFoundError, match="ImageFolder"):  # fails before the supernet is loaded
        AccuracyEvaluator(FAMILY, str(supernet_path), str(tmp_path / "nowhere"))


def test_imagenet_dir_without_val(tmp_path):
    _write_images(tmp_path / "train", 1, np.random.default_rng(1))
    with pytest.raises(FileNotFoundError, match="no val/ subfolder"):
        check_imagenet_dir(str(tmp_path))
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="no class subfolders"):
        check_imagenet_dir(str(tmp_path))
    (tmp_path / "val" / "n00000000").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        check_imagenet_dir(str(tmp_path))


def test_missing_supernet_file(tmp_path, imagenet_dir):
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="mit-han-lab/once-for-all") as err:
        check_supernet_file(FAMILY, missing)
    assert checkpoint_name(FAMILY) in str(err.value)
    with pytest.raises(FileNotFoundError, match=checkpoint_name(FAMILY).replace(".", r"\.")):
        AccuracyEvaluator(FAMILY, missing, str(imagenet_dir))


def test_eval_topk_accuracy_end_to_end(imagenet_dir, supernet_path, tmp_path):
    import json

    import eval_topk_ofa
    from evaluation.results_store import ResultsStore

    corpus = tmp_path / "tiny_labeled_sgs.json"
    corpus.write_text(json.dumps([{"unit": u, "config": ["mbconv3_e3_k3", "mbconv3_e3_k3"], "hops": 1, "score": 1.0}
                                  for u in range(1, 6)]))
    db = str(tmp_path / "r.db")
    results = eval_topk_ofa.main(["-unit_corpus", str(corpus), "-k", "1", "-m", "acc", "-res", "128", "-db", db,
                                  "-supernet_path", str(supernet_path), "-imagenet_dir", str(imagenet_dir),
                                  "-num_workers", "0", "-quiet"])
    (arch, _, values), = results
    acc = values["acc"]
    assert 0.0 <= acc <= 100.0
    with ResultsStore(db) as store:
        assert store.values([arch], "acc") == [acc]
