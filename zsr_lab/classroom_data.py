"""Real image datasets that ship offline, for the classroom scale.

- Fashion-MNIST (70k clothing photos, 10 classes): from ``<data_root>/FashionMNIST``, else the Debian/Ubuntu
  package ``dataset-fashion-mnist``, else torchvision's download.
- digits (scikit-learn, 1,797 handwritten 8×8 digits, 10 classes), split 50/50, stratified, fixed seed.
- textures (scikit-image ``brick``, ``grass``, ``gravel``): 64×64 crops; the top 3/4 of each photo gives the
  training crops, the bottom 1/4 the test crops, so the two splits never overlap.
- faces (scikit-image ``lfw_subset``: 100 LFW face crops, 100 non-face crops), split 50/50, stratified.

Each split is a small torch ``Dataset`` of grey PIL images, so the same torchvision transforms as at full scale
apply.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_SPLIT_SEED = 0
TEXTURE_CROP = 64


class GreyImageDataset(Dataset):
    """Grey uint8 images ``[N, H, W]`` with integer labels, served as PIL images through ``transform``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], transform=None):
        self.images, self.labels, self.classes, self.transform = images, labels, classes, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index], mode="L")
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def check_split(split: str) -> None:
    """Raise unless ``split`` is ``"train"`` or ``"test"``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _half_split(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of a stratified 50/50 split with a fixed seed."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=0.5, stratify=labels, random_state=_SPLIT_SEED)
    return np.sort(train if split == "train" else test)


def fashion_mnist(root: Path, split: str, transform=None, download: bool = False):
    """Fashion-MNIST through torchvision, first filling ``root`` from the Debian package when it is there."""
    import torchvision

    check_split(split)
    raw = Path(root) / "FashionMNIST" / "raw"
    if not all((raw / name).exists() for name in _FASHION_FILES) and DEBIAN_FASHION_MNIST.is_dir():
        raw.mkdir(parents=True, exist_ok=True)
        for name in _FASHION_FILES:
            with gzip.open(DEBIAN_FASHION_MNIST / f"{name}.gz") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return torchvision.datasets.FashionMNIST(root, train=split == "train", transform=transform, download=download)


def digits(split: str, transform=None) -> GreyImageDataset:
    """scikit-learn's handwritten digits (8×8, values 0–16 rescaled to 0–255)."""
    from sklearn.datasets import load_digits

    check_split(split)
    data = load_digits()
    keep = _half_split(data.target, split)
    images = np.round(data.images[keep] * (255 / 16)).astype(np.uint8)
    return GreyImageDataset(images, data.target[keep], [str(d) for d in range(10)], transform)


def textures(split: str, transform=None) -> GreyImageDataset:
    """Crops of three texture photos; train crops (stride 16) from the top 3/4, test crops (stride 32) below."""
    import skimage.data

    check_split(split)
    classes = ["brick", "grass", "gravel"]
    images, labels = [], []
    for label, name in enumerate(classes):
        photo = getattr(skimage.data, name)()
        boundary = photo.shape[0] * 3 // 4
        region = photo[:boundary] if split == "train" else photo[boundary:]
        stride = 16 if split == "train" else 32
        for top in range(0, region.shape[0] - TEXTURE_CROP + 1, stride):
            for left in range(0, region.shape[1] - TEXTURE_CROP + 1, stride):
                images.append(region[top : top + TEXTURE_CROP, left : left + TEXTURE_CROP])
                labels.append(label)
    return GreyImageDataset(np.stack(images), np.array(labels), classes, transform)


def faces(split: str, transform=None) -> GreyImageDataset:
    """scikit-image's LFW subset: the first 100 crops are faces, the last 100 are not."""
    import skimage.data

    check_split(split)
    crops = skimage.data.lfw_subset()
    labels = np.repeat([0, 1], 100)
    keep = _half_split(labels, split)
    images = np.round(crops[keep] * 255).astype(np.uint8)
    return GreyImageDataset(images, labels[keep], ["face", "non-face"], transform)


def as_tensors(dataset: Dataset, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a whole (small) dataset into ``(images, labels)`` tensors."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    images, labels = zip(*loader)
    return torch.cat(images), torch.cat(labels)
