"""The dataset registry: the 16-dataset zero-shot benchmark, the training sets, and the classroom datasets.

Every entry fixes the split, the class names (data files in ``zsr_lab/classnames``, one ``key<TAB>name`` line
per class in label order), the prompt template(s) and the transform of the protocol. Datasets load through
torchvision below one data root (``settings.data_root``); where torchvision can download a dataset,
``download=True`` does it, and where it cannot, the error names the folder layout to create.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.datasets as tvd
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import transforms

from . import classroom_data, scenes, settings
from .registry import Registry

TGA_TEMPLATE = "This is a photo of a {}"


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset is not on disk where zsr_lab looked for it."""


class DatasetLayoutError(RuntimeError):
    """A dataset was found but its folder layout or its classes differ from what zsr_lab expects."""


class DatasetFileError(OSError):
    """An image of a loaded dataset could not be read (truncated, corrupt or missing); the message names the file."""


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset.

    Attributes:
        name: registry key.
        title: human-readable name.
        scale: ``"full"`` or ``"classroom"``.
        split: the split the protocol uses.
        templates: prompt template(s); ``"{}"`` means the class names already are full sentences.
        transform: ``"resize"`` (square resize) or ``"resize_crop"`` (resize the short side, centre crop).
        folder: where the files are expected below the data root.
        layout: the expected folder layout, for error messages.
        downloadable: torchvision can download it (``download=True``).
        class_file: the class-name file (a training split shares its test split's file).
        regions: where the dataset's object regions come from (its loaded dataset then has
            ``object_mask(index, size)``); empty when it has none.
    """

    name: str
    title: str
    scale: str
    split: str
    templates: tuple[str, ...]
    transform: str
    folder: str
    layout: str
    downloadable: bool
    class_file: str
    build: Callable = None  # (root, transform, download) -> (dataset, class keys or None)
    regions: str = ""

    @property
    def classnames(self) -> list[str]:
        """Prompt-ready class names in label order."""
        return [name for _, name in _class_table(self.class_file)]

    @property
    def class_keys(self) -> list[str]:
        """The dataset's own class identifiers (wnids, folder names, ...) in label order."""
        return [key for key, _ in _class_table(self.class_file)]


@functools.cache
def _class_table(name: str) -> tuple[tuple[str, str], ...]:
    path = Path(__file__).parent / "classnames" / f"{name}.tsv"
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line]
    return tuple((key, value) for key, value in rows)


def _to_rgb(image):
    return image.convert("RGB")


def build_transform(spec: DatasetSpec, image_size: int, resolution: str = "protocol"):
    """The protocol transform at ``image_size`` (224 at full scale), ending in ``ToTensor`` (no Normalize).

    ``resolution="native"`` keeps CIFAR/STL at their own size; the model then upsamples inside (TeCoA/FARE).
    """
    if resolution == "native":
        if spec.transform != "resize":
            raise ValueError(
                f"resolution='native' only applies to the square-resized datasets "
                f"(CIFAR-10/100, STL-10), not {spec.name!r}"
            )
        return transforms.Compose([transforms.Lambda(_to_rgb), transforms.ToTensor()])
    if resolution != "protocol":
        raise ValueError(f"resolution must be 'protocol' or 'native', got {resolution!r}")
    return transforms.Compose([transforms.Lambda(_to_rgb), *_geometry(spec, image_size), transforms.ToTensor()])


def _geometry(spec: DatasetSpec, image_size: int) -> list:
    """The resizing and cropping of the protocol transform (applied to object masks as to images)."""
    if spec.transform == "resize":
        return [transforms.Resize((image_size, image_size))]
    # Resize(256) -> CenterCrop(224), scaled to the model's resolution
    return [transforms.Resize(round(image_size * 256 / 224)), transforms.CenterCrop(image_size)]


# ---- builders: each returns (dataset, the class keys it exposes or None) --------------------------------


def _classes(attr: str = "classes"):
    def keys(dataset):
        return list(getattr(dataset, attr, None) or []) or None

    return keys


def _torchvision(cls, keys=None, **kwargs):
    keys = keys or _classes()

    def build(root, transform, download):
        dataset = cls(root, transform=transform, download=download, **kwargs)
        return dataset, keys(dataset)

    return build


def _no_download(cls, subfolder: str = "", keys=None, **kwargs):
    keys = keys or _classes()

    def build(root, transform, download):
        dataset = cls(Path(root) / subfolder, transform=transform, **kwargs)
        return dataset, keys(dataset)

    return build


def _caltech101(root, transform, download):
    categories = Path(root) / "caltech101" / "101_ObjectCategories"
    # torchvision drops BACKGROUND_Google from the folder list with list.remove, a bare ValueError when it is absent
    if categories.is_dir() and not (categories / "BACKGROUND_Google").exists():
        raise DatasetLayoutError(
            f"Caltech-101 under {categories} has no BACKGROUND_Google folder; torchvision's Caltech101 expects "
            f"101_ObjectCategories as it comes in the archive: the 101 category folders plus BACKGROUND_Google "
            f"(not a class; zsr_lab never uses its images).\nWhat to do: re-extract 101_ObjectCategories from the "
            f"archive, or create an empty folder {categories / 'BACKGROUND_Google'}."
        )
    return _torchvision(tvd.Caltech101, keys=_classes("categories"), target_type="category")(root, transform, download)


class OxfordPetsWithRegions(tvd.OxfordIIITPet):
    """Oxford-IIIT Pets whose object regions are the pet's pixels in the dataset's trimaps
    (``annotations/trimaps/<image>.png``: 1 pet, 2 background, 3 the pet's outline, counted as pet)."""

    def __init__(self, root, split: str = "test", **kwargs):
        super().__init__(root, split=split, **kwargs)
        annotations = Path(self.root) / "oxford-iiit-pet" / "annotations"
        ids = [line.split()[0] for line in (annotations / f"{split}.txt").read_text().splitlines() if line.strip()]
        self.trimaps = [annotations / "trimaps" / f"{image_id}.png" for image_id in ids]  # in the images' order

    def object_mask(self, index: int, size: int) -> torch.Tensor:
        trimap = np.asarray(Image.open(self.trimaps[index]))
        mask = Image.fromarray(np.isin(trimap, (1, 3)).astype(np.float32), mode="F")
        for step in _geometry(get_spec("oxford_pets"), size):
            mask = step(mask)
        return torch.from_numpy(np.asarray(mask, dtype=np.float32).clip(0, 1))


def _pcam(root, transform, download):
    try:
        import h5py  # noqa: F401  (torchvision's PCAM reads HDF5)
    except ImportError as err:
        raise ImportError("PCAM needs h5py: pip install h5py (it is in requirements.txt)") from err
    return tvd.PCAM(root, split="test", transform=transform, download=download), None


class TinyImageNetVal(Dataset):
    """Tiny-ImageNet val, labelled from ``val_annotations.txt`` (the unsorted val folder is one flat directory)."""

    def __init__(self, root: Path, transform=None):
        root = Path(root)
        self.classes = sorted((root / "wnids.txt").read_text().split())
        index = {wnid: i for i, wnid in enumerate(self.classes)}
        rows = [
            line.split("\t")[:2]
            for line in (root / "val" / "val_annotations.txt").read_text().splitlines()
            if line.strip()
        ]
        self.samples = [(root / "val" / "images" / file, index[wnid]) for file, wnid in rows]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        image = tvd.folder.default_loader(str(path))
        return (self.transform(image) if self.transform else image), label


def _tiny_imagenet(split: str):
    def build(root, transform, download):
        base = Path(root) / "tiny-imagenet-200"
        if split == "val" and (base / "val" / "val_annotations.txt").exists():
            dataset = TinyImageNetVal(base, transform)
        else:  # train, or a val folder already sorted into one sub-folder per wnid
            dataset = tvd.ImageFolder(base / split, transform=transform)
        return dataset, dataset.classes

    return build


def _classroom(loader, split: str):
    def build(root, transform, download):
        if loader is classroom_data.fashion_mnist:
            dataset = loader(root, split, transform, download)
        else:
            dataset = loader(split, transform)
        return dataset, list(dataset.classes)

    return build


def _scenes(source: str, split: str):
    def build(root, transform, download):
        if source == "fashion_mnist":
            dataset = scenes.fashion_scenes(root, split, transform, download)
        else:
            dataset = scenes.digit_scenes(split, transform)
        return dataset, list(dataset.classes)

    return build


_FASHION_LAYOUT = "FashionMNIST/raw/ (idx files), or the Debian/Ubuntu package dataset-fashion-mnist"
_SCENE_REGIONS = "each object's silhouette, kept when the scene is made"


_IMAGENET_LAYOUT = (
    "imagenet/ in either form torchvision accepts: (a) the archives ILSVRC2012_devkit_t12.tar.gz "
    "and ILSVRC2012_img_val.tar (ILSVRC2012_img_train.tar for training), which torchvision unpacks "
    "into form (b) on first use; or (b) unpacked: meta.bin (the class table torchvision writes from "
    "the devkit) and val/<wnid>/*.JPEG (train/<wnid>/*.JPEG for training), one folder per wnid. "
    "An unpacked val/ or train/ folder without meta.bin also works next to "
    "ILSVRC2012_devkit_t12.tar.gz (torchvision then writes meta.bin); a flat val/ folder does not: "
    "sort it into wnid folders, or remove it and keep ILSVRC2012_img_val.tar"
)
_TINY_LAYOUT = (
    "tiny-imagenet-200/ as unzipped from tiny-imagenet-200.zip: wnids.txt, words.txt, "
    "train/<wnid>/images/*.JPEG, val/images/*.JPEG with val/val_annotations.txt "
    "(or val/<wnid>/ folders if you sorted val yourself)"
)


def _spec(
    name,
    title,
    split,
    template,
    transform,
    folder,
    layout,
    downloadable,
    build,
    scale="full",
    class_file=None,
    regions="",
):
    templates = template if isinstance(template, tuple) else (template,)
    return DatasetSpec(
        name,
        title,
        scale,
        split,
        templates,
        transform,
        folder,
        layout,
        downloadable,
        class_file or name.removesuffix("_train"),
        build,
        regions,
    )


def _image_folder(folder: str):
    def build(root, transform, download):
        dataset = tvd.ImageFolder(Path(root) / folder, transform=transform)
        return dataset, dataset.classes

    return build


DATASETS: Registry[DatasetSpec] = Registry(
    "dataset",
    {
        s.name: s
        for s in [
            # --- the 16-dataset benchmark, in table order -------------------------------------------------------
            _spec(
                "tiny_imagenet",
                "Tiny-ImageNet",
                "val (10k)",
                TGA_TEMPLATE,
                "resize_crop",
                "tiny-imagenet-200",
                _TINY_LAYOUT,
                False,
                _tiny_imagenet("val"),
            ),
            _spec(
                "cifar10",
                "CIFAR-10",
                "test",
                TGA_TEMPLATE,
                "resize",
                "cifar-10-batches-py",
                "cifar-10-batches-py/ (torchvision layout)",
                True,
                _torchvision(tvd.CIFAR10, train=False),
            ),
            _spec(
                "cifar100",
                "CIFAR-100",
                "test",
                TGA_TEMPLATE,
                "resize",
                "cifar-100-python",
                "cifar-100-python/ (torchvision layout)",
                True,
                _torchvision(tvd.CIFAR100, train=False),
            ),
            _spec(
                "stl10",
                "STL-10",
                "test",
                TGA_TEMPLATE,
                "resize",
                "stl10_binary",
                "stl10_binary/ (torchvision layout)",
                True,
                _torchvision(tvd.STL10, split="test"),
            ),
            _spec(
                "sun397",
                "SUN397",
                "whole dataset",
                TGA_TEMPLATE,
                "resize_crop",
                "SUN397",
                "SUN397/ClassName.txt and SUN397/<letter>/<class>/*.jpg",
                True,
                _torchvision(tvd.SUN397),
            ),
            _spec(
                "food101",
                "Food101",
                "test",
                "A photo of {}, a type of food.",
                "resize_crop",
                "food-101",
                "food-101/meta and food-101/images",
                True,
                _torchvision(tvd.Food101, split="test"),
            ),
            _spec(
                "oxford_pets",
                "Oxford-IIIT Pets",
                "test",
                "A photo of a {}, a type of pet.",
                "resize_crop",
                "oxford-iiit-pet",
                "oxford-iiit-pet/images and oxford-iiit-pet/annotations",
                True,
                _torchvision(OxfordPetsWithRegions, split="test", target_types="category"),
                regions="the pets' trimaps (annotations/trimaps: pet and outline pixels)",
            ),
            _spec(
                "flowers102",
                "Flowers102",
                "test",
                "A photo of a {}, a type of flower.",
                "resize_crop",
                "flowers-102",
                "flowers-102/jpg, imagelabels.mat, setid.mat",
                True,
                _torchvision(tvd.Flowers102, split="test"),
            ),
            _spec(
                "dtd",
                "DTD",
                "test, partition 1",
                "A surface with a {} texture.",
                "resize_crop",
                "dtd",
                "dtd/dtd/images and dtd/dtd/labels",
                True,
                _torchvision(tvd.DTD, split="test", partition=1),
            ),
            _spec(
                "eurosat",
                "EuroSAT",
                "whole dataset",
                "A centered satellite photo of {}.",
                "resize_crop",
                "eurosat",
                "eurosat/2750/<class>/*.jpg",
                True,
                _torchvision(tvd.EuroSAT),
            ),
            _spec(
                "fgvc_aircraft",
                "FGVC-Aircraft",
                "test",
                "A photo of a {}, a type of aircraft.",
                "resize_crop",
                "fgvc-aircraft-2013b",
                "fgvc-aircraft-2013b/data (variants.txt, images/)",
                True,
                _torchvision(tvd.FGVCAircraft, split="test", annotation_level="variant"),
            ),
            _spec(
                "imagenet",
                "ImageNet",
                "val (50k)",
                TGA_TEMPLATE,
                "resize_crop",
                "imagenet",
                _IMAGENET_LAYOUT,
                False,
                _no_download(tvd.ImageNet, "imagenet", keys=_classes("wnids"), split="val"),
            ),
            _spec(
                "caltech101",
                "Caltech-101",
                "whole dataset",
                TGA_TEMPLATE,
                "resize_crop",
                "caltech101",
                "caltech101/101_ObjectCategories/<category>/image_NNNN.jpg, with the BACKGROUND_Google folder of the "
                "archive (an empty one will do)",
                True,
                _caltech101,
            ),
            _spec(
                "caltech256",
                "Caltech-256",
                "whole dataset",
                "A photo of a {}.",
                "resize_crop",
                "caltech256",
                "caltech256/256_ObjectCategories/<NNN.category>/*.jpg",
                True,
                _torchvision(tvd.Caltech256, keys=_classes("categories")),
            ),
            _spec(
                "stanford_cars",
                "Stanford Cars",
                "test",
                "A photo of a {}.",
                "resize_crop",
                "stanford_cars",
                "stanford_cars/ with devkit/, cars_test/ and cars_test_annos_withlabels.mat (torchvision's layout; "
                "the original download links are gone, use a mirror)",
                False,
                _no_download(tvd.StanfordCars, split="test"),
            ),
            _spec(
                "pcam",
                "PCAM",
                "test",
                "{}",
                "resize_crop",
                "pcam",
                "pcam/camelyonpatch_level_2_split_test_{x,y}.h5",
                True,
                _pcam,
            ),
            # --- training sets ---------------------------------------------------------------------------------
            # --- two more of RobustVLM's 13 zero-shot sets (the other 11 are benchmark sets above) ------------------
            _spec(
                "imagenet_r",
                "ImageNet-R",
                "whole dataset (30k)",
                TGA_TEMPLATE,
                "resize_crop",
                "imagenet-r",
                "imagenet-r/<wnid>/*.jpg as unpacked from imagenet-r.tar: 200 wnid folders",
                False,
                _image_folder("imagenet-r"),
            ),
            _spec(
                "imagenet_sketch",
                "ImageNet-Sketch",
                "whole dataset (50,889)",
                TGA_TEMPLATE,
                "resize_crop",
                "imagenet-sketch",
                "imagenet-sketch/<wnid>/*.JPEG: 1000 wnid folders (ImageNet-Sketch.zip unpacks them "
                "into sketch/: rename or link that folder)",
                False,
                _image_folder("imagenet-sketch"),
                class_file="imagenet",
            ),
            _spec(
                "tiny_imagenet_train",
                "Tiny-ImageNet (train)",
                "train (100k)",
                TGA_TEMPLATE,
                "resize_crop",
                "tiny-imagenet-200",
                _TINY_LAYOUT,
                False,
                _tiny_imagenet("train"),
            ),
            _spec(
                "imagenet_train",
                "ImageNet (train)",
                "train (1.28M)",
                TGA_TEMPLATE,
                "resize_crop",
                "imagenet",
                _IMAGENET_LAYOUT,
                False,
                _no_download(tvd.ImageNet, "imagenet", keys=_classes("wnids"), split="train"),
            ),
            # --- classroom scale: real data that ships offline ------------------------------------------------
            _spec(
                "fashion_mnist",
                "Fashion-MNIST",
                "test (10k)",
                TGA_TEMPLATE,
                "resize",
                "FashionMNIST",
                _FASHION_LAYOUT,
                True,
                _classroom(classroom_data.fashion_mnist, "test"),
                scale="classroom",
            ),
            _spec(
                "fashion_mnist_train",
                "Fashion-MNIST (train)",
                "train (60k)",
                TGA_TEMPLATE,
                "resize",
                "FashionMNIST",
                _FASHION_LAYOUT,
                True,
                _classroom(classroom_data.fashion_mnist, "train"),
                scale="classroom",
            ),
            _spec(
                "digits",
                "Digits (scikit-learn)",
                "test half (899)",
                "A photo of the handwritten digit {}.",
                "resize",
                "",
                "ships with scikit-learn",
                False,
                _classroom(classroom_data.digits, "test"),
                scale="classroom",
            ),
            _spec(
                "fashion_scenes",
                "Fashion-MNIST scenes",
                "test (10k items on photos)",
                TGA_TEMPLATE,
                "resize",
                "FashionMNIST",
                _FASHION_LAYOUT,
                True,
                _scenes("fashion_mnist", "test"),
                scale="classroom",
                class_file="fashion_mnist",
                regions=_SCENE_REGIONS,
            ),
            _spec(
                "fashion_scenes_train",
                "Fashion-MNIST scenes (train)",
                "train (24k items on photos)",
                TGA_TEMPLATE,
                "resize",
                "FashionMNIST",
                _FASHION_LAYOUT,
                True,
                _scenes("fashion_mnist", "train"),
                scale="classroom",
                class_file="fashion_mnist",
                regions=_SCENE_REGIONS,
            ),
            _spec(
                "digit_scenes",
                "Digit scenes (scikit-learn digits)",
                "test half (899 digits on photos)",
                "A photo of the handwritten digit {}.",
                "resize",
                "",
                "ships with scikit-learn",
                False,
                _scenes("digits", "test"),
                scale="classroom",
                class_file="digits",
                regions=_SCENE_REGIONS,
            ),
            _spec(
                "textures",
                "Textures (scikit-image)",
                "test crops (135)",
                "A surface with a {} texture.",
                "resize",
                "",
                "ships with scikit-image",
                False,
                _classroom(classroom_data.textures, "test"),
                scale="classroom",
            ),
            _spec(
                "faces",
                "Faces (scikit-image LFW subset)",
                "test half (100)",
                "A close-up photo of a {}.",
                "resize",
                "",
                "ships with scikit-image",
                False,
                _classroom(classroom_data.faces, "test"),
                scale="classroom",
            ),
        ]
    },
)

# Test images that no chapter shows: a book evaluation draws the first n of a seeded order of its split
# (zsr_lab.evaluate.subset_indices, seed 0; n ≤ 500 at classroom scale, 1,000 at full), so the images after the
# first ``skip`` of that order are held out for the "harden CLIP" challenge (zsr_lab.challenge).
HELD_OUT = {"fashion_mnist": 500, "digits": 500, "cifar10": 1000, "cifar100": 1000}


def held_out_indices(split_size: int, skip: int) -> list[int]:
    """The indices of a split after the first ``skip`` of its seed-0 order, in increasing order."""
    order = torch.randperm(split_size, generator=torch.Generator().manual_seed(0))
    return order[skip:].sort().values.tolist()


def _held_out(spec: DatasetSpec, skip: int) -> DatasetSpec:
    """``spec``'s split without the first ``skip`` images of its seeded order, as ``<name>_heldout``."""

    def build(root, transform, download):
        dataset, keys = spec.build(root, transform, download)
        return Subset(dataset, held_out_indices(len(dataset), skip)), keys

    return dataclasses.replace(
        spec,
        name=f"{spec.name}_heldout",
        title=f"{spec.title}, held out",
        split=f"{spec.split} after the first {skip:,} of the seeded order",
        build=build,
    )


DATASETS.update({f"{name}_heldout": _held_out(DATASETS[name], skip) for name, skip in HELD_OUT.items()})

BENCHMARK_DATASETS: tuple[str, ...] = (
    "tiny_imagenet",
    "cifar10",
    "cifar100",
    "stl10",
    "sun397",
    "food101",
    "oxford_pets",
    "flowers102",
    "dtd",
    "eurosat",
    "fgvc_aircraft",
    "imagenet",
    "caltech101",
    "caltech256",
    "stanford_cars",
    "pcam",
)
CLASSROOM_DATASETS: tuple[str, ...] = ("fashion_mnist", "digits", "textures", "faces")
SCENE_DATASETS: tuple[str, ...] = ("fashion_scenes", "digit_scenes", "textures", "faces")


def list_datasets(scale: str | None = None) -> list[str]:
    """Registered dataset names, optionally only those of one scale (``"full"`` or ``"classroom"``)."""
    return DATASETS.filter(lambda spec: scale is None or spec.scale == scale)


def has_object_regions(name: str) -> bool:
    """Whether a registered dataset says where its objects are (see :func:`object_masks`)."""
    return bool(get_spec(name).regions)


def object_masks(dataset: Dataset, size: int) -> torch.Tensor:
    """The object masks of a loaded dataset (or a ``Subset`` of one), in its order, ``[N, size, size]`` floats in
    [0, 1] (1 on the object), aligned with its images at input size ``size``.

    Raises:
        ValueError: the dataset has no object regions.
    """
    indices = range(len(dataset))
    while isinstance(dataset, Subset):
        indices, dataset = [dataset.indices[i] for i in indices], dataset.dataset
    if not hasattr(dataset, "object_mask"):
        raise ValueError(
            f"{type(dataset).__name__} has no object regions: only datasets registered with regions "
            f"(has_object_regions) say where their objects are"
        )
    return torch.stack([dataset.object_mask(i, size) for i in indices])


def object_examples(
    name: str, indices, *, image_size: int, data_root=None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chosen test examples of a dataset with object regions, as the attention figures take them.

    Arguments:
        name: a registry name with object regions (:func:`has_object_regions`).
        indices: which examples, in this order.
        image_size: the model's input size; images and masks come at it.

    Returns:
        ``(images [B, C, H, W] in [0, 1], labels [B], masks [B, H, W])`` (masks as :func:`object_masks`).

    Raises:
        ValueError: the dataset has no object regions.
    """
    chosen = Subset(
        load_dataset(name, data_root=data_root, image_size=image_size, download=download, verbose=False), list(indices)
    )
    images, labels = zip(*chosen)
    return torch.stack(images), torch.tensor(labels), object_masks(chosen, image_size)


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``; an unknown name raises a ``ValueError`` listing the choices."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    return DATASETS[name]


def load_dataset(
    name: str,
    *,
    data_root=None,
    image_size: int = 224,
    download: bool = False,
    resolution: str = "protocol",
    verbose: bool = True,
) -> Dataset:
    """Load a registered dataset with its protocol split and transform; images come out in [0, 1].

    Arguments:
        name: registry key (``list_datasets()``).
        data_root: the one data root (default ``settings.data_root()``); each dataset has its own sub-folder.
        image_size: the model's input resolution (224 for ViT-B/32, 28 for the classroom CLIP).
        download: let torchvision download what it can (needs internet).
        resolution: ``"protocol"`` or ``"native"`` (CIFAR/STL at their own size, upsampled in the model).
        verbose: print a one-line summary of what was loaded.

    Raises:
        ValueError: unknown name or option.
        DatasetNotFoundError: files missing; the message names the expected layout and how to get them.
        DatasetLayoutError: the folder layout or the files' class list differs from the registered one.

    Reading an image that cannot be decoded (truncated, corrupt, missing) raises :class:`DatasetFileError`, an
    ``OSError`` whose message names the file (the index where no path is known), the dataset and what to do.
    """
    spec = get_spec(name)
    root = settings.data_root(data_root)
    transform = build_transform(spec, image_size, resolution)
    try:
        dataset, keys = spec.build(root, transform, download and spec.downloadable)
    except (DatasetLayoutError, DatasetNotFoundError):
        raise
    except (RuntimeError, FileNotFoundError, OSError) as err:
        how = (
            "pass download=True (needs internet) to let torchvision fetch it, or place the files there"
            if spec.downloadable
            else "download it yourself and place the files there"
        )
        raise DatasetNotFoundError(
            f"{spec.title} not found under {root / spec.folder} ({err}).\nExpected layout below the data root "
            f"{root}: {spec.layout}.\nWhat to do: {how}; or point data_root (or $ZSR_LAB_DATA) at the folder "
            f"that holds it."
        ) from err
    _check_classes(spec, keys, root)
    if spec.scale == "full":  # the classroom sets live in memory
        dataset = _NameFailingFiles(dataset, spec.title, str(root / spec.folder))
    if verbose:
        template = " | ".join(spec.templates)
        print(
            f"{spec.title} [{spec.split}]: {len(dataset):,} images, {len(spec.classnames)} classes, "
            f"template {template!r}, transform {spec.transform} at {image_size}px"
        )
    return dataset


def _check_classes(spec: DatasetSpec, keys, root: Path) -> None:
    expected = spec.class_keys
    if keys is None:
        return
    keys = [str(k) for k in keys]
    if keys != expected:
        first = next((i for i, (a, b) in enumerate(zip(keys, expected)) if a != b), min(len(keys), len(expected)))
        raise DatasetLayoutError(
            f"{spec.title} under {root} has {len(keys)} classes but zsr_lab registers {len(expected)}; first "
            f"difference at label {first}: found {keys[first] if first < len(keys) else None!r}, registered "
            f"{expected[first] if first < len(expected) else None!r}. Check that the folder holds the "
            f"unmodified dataset ({spec.layout})."
        )


# ---- naming the file behind an image that fails to load -------------------------------------------------

_PATH_LISTS = ("samples", "_samples", "imgs", "_image_files", "_images")  # ImageFolder & co., torchvision's own


def _image_path(dataset, index) -> str | None:
    """The file behind item ``index`` of a torchvision-style dataset, or ``None`` where it cannot be told."""
    try:
        for attr in _PATH_LISTS:
            items = getattr(dataset, attr, None)
            if isinstance(items, (list, tuple)) and len(items) == len(dataset):
                item = items[index]
                item = item[0] if isinstance(item, tuple) else item
                if isinstance(item, (str, os.PathLike)):
                    return str(item)
        if isinstance(dataset, (tvd.Caltech101, tvd.Caltech256)):  # paths rebuilt as torchvision builds them
            label, number = dataset.y[index], dataset.index[index]
            if isinstance(dataset, tvd.Caltech101):
                return os.path.join(
                    dataset.root, "101_ObjectCategories", dataset.categories[label], f"image_{number:04d}.jpg"
                )
            return os.path.join(
                dataset.root, "256_ObjectCategories", dataset.categories[label], f"{label + 1:03d}_{number:04d}.jpg"
            )
    except Exception:  # noqa: BLE001  (naming the file must never hide the original error)
        return None
    return None


class _NameFailingFiles(Dataset):
    """A loaded dataset whose image-reading errors name the file, the dataset and the fix.

    PIL reports a truncated JPEG as ``OSError: image file is truncated`` without the file's name, and inside a
    DataLoader worker nothing else tells which of thousands of files it was. Everything else (``len``, items,
    attributes such as ``classes`` or ``samples``) is the wrapped dataset's; it pickles for DataLoader workers.
    """

    _OWN = ("dataset", "title", "folder")

    def __init__(self, dataset, title: str, folder: str):
        object.__setattr__(self, "dataset", dataset)
        object.__setattr__(self, "title", title)
        object.__setattr__(self, "folder", folder)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except DatasetFileError:
            raise
        except OSError as err:  # PIL.UnidentifiedImageError and FileNotFoundError are OSErrors too
            raise DatasetFileError(self._message(index, err)) from err

    def _message(self, index, err: OSError) -> str:
        path = _image_path(self.dataset, index)
        what = f"image file {path}" if path else f"image {index} (no file name known) below {self.folder}"
        cause = "missing" if isinstance(err, FileNotFoundError) else "probably truncated or corrupt"
        if isinstance(err, FileNotFoundError):
            remove = ""
        elif isinstance(self.dataset, (tvd.DatasetFolder, tvd.SUN397)):
            remove = (
                "; or delete it (the dataset finds its images by listing its folders, so it then has one image fewer)"
            )
        else:
            remove = (
                "; deleting it does not help here: the dataset lists its images in its own index or annotation files"
            )
        return (
            f"{self.title}: cannot read {what} ({type(err).__name__}: {err}). The file is {cause}, "
            f"e.g. from an interrupted download or unpacking.\nWhat to do: replace it with an intact copy "
            f"(re-extract it from the dataset's archive, or download the dataset again){remove}."
        )

    def __getattr__(self, name):
        # only called for names not found on the wrapper; dunders stay unforwarded (pickling, __getitems__)
        if name.startswith("__") or "dataset" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)

    def __setattr__(self, name, value):
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:  # e.g. data.transform = ...: it must reach the dataset that applies it
            setattr(self.dataset, name, value)

    def __repr__(self) -> str:
        return repr(self.dataset)
