"""ImageNet top-1 accuracy of OFA subnets, the way OFA measures it.

A subnet inherits its weights from the trained supernet (``ofa_manager.load_supernet``), but the supernet's batch-norm
statistics belong to the largest network, so they are recomputed for every subnet: on a fixed, seeded random subset of
training images at the subnet's resolution, each BatchNorm's running mean/variance becomes the cumulative average of
the per-batch statistics (OFA's ``set_running_statistics``). Top-1 is then measured on the validation images.

ImageNet is read from a local folder in torchvision's ImageFolder layout; the toolkit never downloads it.
"""
from __future__ import annotations

import math
import os
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms
from tqdm import tqdm
from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics

from evaluation.ofa_manager import build_subnet, check_device, check_supernet_file, load_supernet
from iterators.errors import MissingFileError, UserError
from iterators.search_space import Arch, get_family

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VAL_CROP_RATIO = 0.875  # val images are resized to ceil(res / 0.875), then centre-cropped to res

_LAYOUT = ("an ImageFolder layout: <dir>/train/<class>/*.JPEG (training images, a subset of which recalibrates "
           "batch norm) and <dir>/val/<class>/*.JPEG (validation images sorted into the same class folders, "
           "e.g. n01440764/)")
_NOT_DOWNLOADED = "the toolkit does not download ImageNet; obtain it from image-net.org"


def _first_class_with_files(split_dir: str) -> tuple[bool, bool]:
    """(has class subfolders, one of them holds at least one file); stops at the first hit, so it is cheap."""
    has_classes = False
    with os.scandir(split_dir) as entries:
        for entry in entries:
            if not entry.is_dir():
                continue
            has_classes = True
            with os.scandir(entry.path) as files:
                if any(f.is_file() for f in files):
                    return True, True
    return has_classes, False


def check_imagenet_dir(imagenet_dir: str) -> None:
    """Raise MissingFileError (a FileNotFoundError), naming the expected layout, unless ``imagenet_dir`` has
    non-empty train/ and val/ class folders."""
    where = os.fspath(imagenet_dir)
    if not os.path.isdir(where):
        raise MissingFileError(f"no ImageNet folder at {where!r}: expected {_LAYOUT}; {_NOT_DOWNLOADED}")
    for split in ("train", "val"):
        split_dir = os.path.join(where, split)
        if not os.path.isdir(split_dir):
            raise MissingFileError(
                f"ImageNet folder {where!r} has no {split}/ subfolder: expected {_LAYOUT}; {_NOT_DOWNLOADED}")
        has_classes, has_files = _first_class_with_files(split_dir)
        if not has_classes:
            raise MissingFileError(
                f"{split_dir!r} has no class subfolders (images lying directly in {split}/ are not enough: sort them "
                f"into one folder per class): expected {_LAYOUT}; {_NOT_DOWNLOADED}")
        if not has_files:
            raise MissingFileError(f"the class folders of {split_dir!r} are empty: expected {_LAYOUT}; "
                                    f"{_NOT_DOWNLOADED}")


def calib_transform(resolution: int, color_jitter: bool = True) -> transforms.Compose:
    """OFA's training augmentation at ``resolution``, used for the calibration images."""
    steps = [transforms.RandomResizedCrop(resolution), transforms.RandomHorizontalFlip()]
    if color_jitter:  # OFA's default ("tf") colour distortion of training images
        steps.append(transforms.ColorJitter(brightness=32.0 / 255.0, saturation=0.5))
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def val_transform(resolution: int) -> transforms.Compose:
    """OFA's validation preprocessing: resize to ceil(res / 0.875), centre crop to res, normalise."""
    return transforms.Compose([transforms.Resize(int(math.ceil(resolution / VAL_CROP_RATIO))),
                               transforms.CenterCrop(resolution), transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class _Images(Dataset):
    """The samples ``indices`` of a scanned ImageFolder, under ``transform``.

    With ``seed`` set, the random transform of sample i draws from a torch generator seeded with (seed, i) alone, so
    the augmented images do not depend on batch size, worker count or the global RNG (which is left untouched).
    """

    def __init__(self, folder: datasets.ImageFolder, indices: list[int], transform, seed: int | None = None):
        self.folder, self.indices, self.transform, self.seed = folder, indices, transform, seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        path, label = self.folder.samples[self.indices[i]]
        image = self.folder.loader(path)
        if self.seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + i)
            return self.transform(image), label


class AccuracyEvaluator:
    """ImageNet top-1 of OFA subnets with inherited weights and recalibrated batch norm (see the module docstring).

    Both paths are checked at construction, before the supernet is loaded. ``calib_images`` training images, drawn
    once without replacement with ``seed``, recalibrate batch norm for every architecture; ``max_val_images`` limits
    validation to the first images of a fixed ``seed``-shuffled order of val/ (all of val/ when None), so that a
    partial evaluation still spans the classes. Image folders are scanned once, on first use; datasets are cached per
    resolution. Random augmentations are seeded per image and evaluation leaves torch's global RNG untouched.
    """

    def __init__(self, family: str, supernet_path: str, imagenet_dir: str, calib_images: int = 2000,
                 calib_batch_size: int = 100, eval_batch_size: int = 100, max_val_images: int | None = None,
                 workers: int = 0, device: str = "cpu", seed: int = 0, color_jitter: bool = True,
                 progress: bool = True):
        self.family = get_family(family).name
        check_supernet_file(self.family, supernet_path)
        check_imagenet_dir(imagenet_dir)
        for name, value in (("calib_images", calib_images), ("calib_batch_size", calib_batch_size),
                            ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if max_val_images is not None and (isinstance(max_val_images, bool) or not isinstance(max_val_images, int)
                                           or max_val_images < 1):
            raise ValueError(f"max_val_images must be None or a positive integer, got {max_val_images!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise UserError(f"-num_workers must be an integer >= 0, got {workers!r}")
        self.device = check_device(device)

        self.imagenet_dir = os.fspath(imagenet_dir)
        self.calib_images, self.calib_batch_size, self.eval_batch_size = calib_images, calib_batch_size, eval_batch_size
        self.max_val_images, self.workers, self.seed = max_val_images, workers, seed
        self.color_jitter, self.progress = color_jitter, progress
        self.supernet = load_supernet(self.family, supernet_path)
        self.n_classes = self.supernet.classifier.out_features
        self._folders: dict[str, datasets.ImageFolder] = {}
        self._indices: dict[str, list[int]] = {}
        self._datasets: dict[int, tuple[_Images, _Images]] = {}

    # --- data ----------------------------------------------------------------------------------------------------

    def _folder(self, split: str) -> tuple[datasets.ImageFolder, list[int]]:
        """The scanned ImageFolder of ``split`` and the indices of its samples that are used."""
        if split not in self._folders:
            folder = datasets.ImageFolder(os.path.join(self.imagenet_dir, split))
            gen = torch.Generator().manual_seed(self.seed)
            if split == "train":
                n = min(self.calib_images, len(folder))
                if n < self.calib_images:
                    warnings.warn(f"only {n} training images for the {self.calib_images} calibration images asked")
                indices = sorted(torch.randperm(len(folder), generator=gen)[:n].tolist())
            else:
                if len(folder.classes) > self.n_classes:
                    raise UserError(f"-imagenet_dir: {folder.root!r} has {len(folder.classes)} class folders, more "
                                    f"than the {self.n_classes} outputs of the {self.family} classifier")
                if len(folder.classes) != self.n_classes:
                    warnings.warn(f"{folder.root!r} has {len(folder.classes)} class folders, not "
                                  f"{self.n_classes}: labels are the indices of the sorted class folders, which match "
                                  f"ImageNet's class indices only with all {self.n_classes} classes present")
                if self.max_val_images is None or self.max_val_images >= len(folder):
                    indices = list(range(len(folder)))
                else:
                    indices = torch.randperm(len(folder), generator=gen)[:self.max_val_images].tolist()
            self._folders[split], self._indices[split] = folder, indices
        return self._folders[split], self._indices[split]

    def datasets(self, resolution: int) -> tuple[Dataset, Dataset]:
        """(calibration set, validation set) at ``resolution``, built once per resolution."""
        if resolution not in self._datasets:
            train, train_idx = self._folder("train")
            val, val_idx = self._folder("val")
            self._datasets[resolution] = (
                _Images(train, train_idx, calib_transform(resolution, self.color_jitter), seed=self.seed),
                _Images(val, val_idx, val_transform(resolution)))
        return self._datasets[resolution]

    def _loader(self, dataset: Dataset, batch_size: int) -> DataLoader:
        # its own generator: the loader's per-iteration seed draw would otherwise advance the global RNG
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=self.workers,
                          pin_memory=self.device.type == "cuda", drop_last=False,
                          generator=torch.Generator().manual_seed(self.seed))

    # --- evaluation ----------------------------------------------------------------------------------------------

    def calibrated_subnet(self, arch: Arch) -> nn.Module:
        """The subnet of ``arch`` with supernet weights and batch-norm statistics recomputed on the calibration
        images at ``arch.resolution``, on the evaluator's device, in eval mode."""
        if arch.family != self.family:
            raise ValueError(f"this evaluator holds the {self.family} supernet, the architecture is {arch.family}")
        calib, _ = self.datasets(arch.resolution)
        with torch.random.fork_rng(devices=[]):  # building modules draws initial weights: keep the global RNG as is
            subnet = build_subnet(arch, self.supernet)
        subnet = subnet.to(self.device)
        set_running_statistics(subnet, self._loader(calib, self.calib_batch_size))
        return subnet.eval()

    @torch.no_grad()
    def top1(self, model: nn.Module, resolution: int) -> float:
        """Top-1 accuracy (percent) of ``model`` on the validation images at ``resolution``, in eval mode."""
        _, val = self.datasets(resolution)
        model.eval()
        correct = total = 0
        batches = tqdm(self._loader(val, self.eval_batch_size), desc=f"top-1 @{resolution}", unit="batch",
                       disable=not self.progress, leave=False)
        for images, labels in batches:
            logits = model(images.to(self.device, non_blocking=True))
            correct += (logits.argmax(1).cpu() == labels).sum().item()
            total += labels.numel()
            batches.set_postfix(top1=f"{100.0 * correct / total:.2f}")
        return 100.0 * correct / total

    def evaluate(self, arch: Arch) -> float:
        """ImageNet top-1 accuracy (percent, in [0, 100]) of ``arch``'s subnet after batch-norm recalibration."""
        return self.top1(self.calibrated_subnet(arch), arch.resolution)
