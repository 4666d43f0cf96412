import re

import numpy as np
import pytest
import torch
from PIL import Image

import zsr_lab as zl
from zsr_lab import classroom_data, datasets

EXPECTED_CLASSES = {
    "tiny_imagenet": 200,
    "cifar10": 10,
    "cifar100": 100,
    "stl10": 10,
    "sun397": 397,
    "food101": 101,
    "oxford_pets": 37,
    "flowers102": 102,
    "dtd": 47,
    "eurosat": 10,
    "fgvc_aircraft": 100,
    "imagenet": 1000,
    "caltech101": 101,
    "caltech256": 257,
    "stanford_cars": 196,
    "pcam": 2,
    "tiny_imagenet_train": 200,
    "imagenet_train": 1000,
    "fashion_mnist": 10,
    "fashion_mnist_train": 10,
    "digits": 10,
    "textures": 3,
    "faces": 2,
}


def test_benchmark_has_the_16_protocol_datasets_in_table_order():
    assert len(zl.BENCHMARK_DATASETS) == 16
    assert zl.BENCHMARK_DATASETS[0] == "tiny_imagenet" and zl.BENCHMARK_DATASETS[-1] == "pcam"
    assert set(zl.list_datasets("full")) >= set(zl.BENCHMARK_DATASETS)
    assert set(zl.list_datasets("classroom")) >= set(zl.CLASSROOM_DATASETS)


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
def test_every_dataset_has_names_templates_and_split(name):
    spec = zl.get_spec(name)
    assert len(spec.classnames) == EXPECTED_CLASSES[name]
    assert len(spec.class_keys) == len(set(spec.class_keys)) == EXPECTED_CLASSES[name]
    assert spec.split and spec.title and spec.layout
    assert all("{}" in t for t in spec.templates)
    assert spec.transform in ("resize", "resize_crop")
    for class_name in spec.classnames:
        assert class_name and class_name == class_name.strip()
        assert not re.search(r"[_/]|  ", class_name), class_name
        assert class_name == class_name.lower(), class_name


def test_protocol_templates_and_transforms():
    assert zl.get_spec("food101").templates == ("A photo of {}, a type of food.",)
    assert zl.get_spec("eurosat").classnames[0] == "annual crop land"
    assert zl.get_spec("stanford_cars").classnames[0] == "am general hummer suv"  # year stripped
    assert {zl.get_spec(n).transform for n in ("cifar10", "cifar100", "stl10")} == {"resize"}
    assert {zl.get_spec(n).transform for n in zl.BENCHMARK_DATASETS[4:]} == {"resize_crop"}


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="did you mean 'cifar10'") as info:
        zl.get_spec("cifar-10")
    assert "imagenet" in str(info.value) and "fashion_mnist" in str(info.value)
    with pytest.raises(TypeError, match="must be a string"):
        zl.get_spec(10)


@pytest.mark.parametrize(
    "name, hint",
    [("cifar10", "download=True"), ("imagenet", "ILSVRC2012_devkit_t12"), ("tiny_imagenet", "val_annotations.txt")],
)
def test_missing_data_names_the_layout_and_the_fix(name, hint, tmp_path):
    with pytest.raises(zl.DatasetNotFoundError) as info:
        zl.load_dataset(name, data_root=tmp_path)
    message = str(info.value)
    assert hint in message and str(tmp_path) in message and "What to do" in message


def _fake_tiny_imagenet(root, wnids):
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(reversed(wnids)))  # file order must not matter
    rows = []
    for i, wnid in enumerate(wnids[:5]):
        Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(base / "val" / "images" / f"val_{i}.JPEG")
        rows.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(rows))
    for wnid in wnids:
        (base / "train" / wnid / "images").mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(base / "train" / wnid / "images" / f"{wnid}_0.JPEG")


def test_tiny_imagenet_val_is_labelled_from_annotations(tmp_path):
    wnids = zl.get_spec("tiny_imagenet").class_keys
    _fake_tiny_imagenet(tmp_path, wnids)
    val = zl.load_dataset("tiny_imagenet", data_root=tmp_path, verbose=False)
    assert len(val) == 5
    assert [val[i][1] for i in range(5)] == [0, 1, 2, 3, 4]  # sorted wnids → labels
    image, _ = val[0]
    assert image.shape == (3, 224, 224) and 0 <= image.min() and image.max() <= 1
    train = zl.load_dataset("tiny_imagenet_train", data_root=tmp_path, verbose=False)
    assert len(train) == 200 and train[3][1] == 3


def test_class_list_mismatch_is_reported(tmp_path):
    wnids = zl.get_spec("tiny_imagenet").class_keys
    _fake_tiny_imagenet(tmp_path, wnids[:199])
    with pytest.raises(datasets.DatasetLayoutError, match="199 classes but zsr_lab registers 200"):
        zl.load_dataset("tiny_imagenet_train", data_root=tmp_path, verbose=False)


def test_transforms_follow_the_protocol():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    crop = datasets.build_transform(zl.get_spec("food101"), 224)(image)
    square = datasets.build_transform(zl.get_spec("cifar10"), 224)(image.resize((32, 32)))
    assert crop.shape == square.shape == (3, 224, 224)
    native = datasets.build_transform(zl.get_spec("cifar10"), 224, resolution="native")(image.resize((32, 32)))
    assert native.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="only applies"):
        datasets.build_transform(zl.get_spec("food101"), 224, resolution="native")
    grey = datasets.build_transform(zl.get_spec("digits"), 28)(Image.new("L", (8, 8), 255))
    assert grey.shape == (3, 28, 28) and torch.allclose(grey, torch.ones_like(grey))


@pytest.mark.parametrize(
    "loader, n_train, n_test",
    [(classroom_data.digits, 898, 899), (classroom_data.textures, 1827, 135), (classroom_data.faces, 100, 100)],
)
def test_classroom_splits_are_disjoint_and_stratified(loader, n_train, n_test):
    train, test = loader("train"), loader("test")
    assert (len(train), len(test)) == (n_train, n_test)
    assert set(np.unique(train.labels)) == set(np.unique(test.labels)) == set(range(len(train.classes)))
    train_bytes = {img.tobytes() for img in train.images}
    assert not any(img.tobytes() in train_bytes for img in test.images)


@pytest.mark.skipif(
    not classroom_data.DEBIAN_FASHION_MNIST.is_dir(),
    reason="needs the Debian/Ubuntu package dataset-fashion-mnist (offline Fashion-MNIST)",
)
def test_fashion_mnist_from_the_debian_package(tmp_path):
    test = zl.load_dataset("fashion_mnist", data_root=tmp_path, image_size=28, verbose=False)
    train = zl.load_dataset("fashion_mnist_train", data_root=tmp_path, image_size=28, verbose=False)
    assert (len(train), len(test)) == (60000, 10000)
    image, label = test[0]
    assert image.shape == (3, 28, 28) and label == 9  # the first test image is an ankle boot


# ---- stand-ins for the layout and file checks ------------------------------------------------------------


def _jpeg_bytes(seed=0, size=64):
    """A real JPEG of noise (big enough that cutting it in half lands in the image data, not the headers)."""
    import io

    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _fake_caltech101(root, background=True):
    categories = root / "caltech101" / "101_ObjectCategories"
    for key in zl.get_spec("caltech101").class_keys:
        (categories / key).mkdir(parents=True)
        (categories / key / "image_0001.jpg").write_bytes(_jpeg_bytes(size=8))
    if background:
        (categories / "BACKGROUND_Google").mkdir()
    return categories


def test_caltech101_without_background_google_says_what_to_do(tmp_path):
    categories = _fake_caltech101(tmp_path, background=False)
    with pytest.raises(datasets.DatasetLayoutError) as info:
        zl.load_dataset("caltech101", data_root=tmp_path, verbose=False)
    message = str(info.value)
    assert "BACKGROUND_Google" in message and str(categories) in message and "What to do" in message
    # the fix the message offers: an empty BACKGROUND_Google folder; labels follow the registered classes
    (categories / "BACKGROUND_Google").mkdir()
    data = zl.load_dataset("caltech101", data_root=tmp_path, image_size=32, verbose=False)
    assert len(data) == 101
    assert [data[i][1] for i in (0, 4, 100)] == [0, 4, 100]
    assert data[0][0].shape == (3, 32, 32)
    # Caltech keeps no path list; the failing file is still named (rebuilt as torchvision builds it)
    broken = categories / data.categories[4] / "image_0001.jpg"
    broken.write_bytes(_jpeg_bytes())
    _truncate(broken)
    with pytest.raises(datasets.DatasetFileError, match=re.escape(str(broken))):
        data[4]


def test_truncated_jpeg_names_the_file_and_the_dataset(tmp_path):
    wnids = zl.get_spec("tiny_imagenet").class_keys
    _fake_tiny_imagenet(tmp_path, wnids)
    broken = tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_2.JPEG"
    broken.write_bytes(_jpeg_bytes())
    _truncate(broken)
    val = zl.load_dataset("tiny_imagenet", data_root=tmp_path, image_size=32, verbose=False)
    assert val[1][1] == 1  # intact images still load
    with pytest.raises(OSError) as info:
        val[2]
    message = str(info.value)
    assert isinstance(info.value, datasets.DatasetFileError)
    assert str(broken) in message and "Tiny-ImageNet" in message and "What to do" in message
    assert "truncated" in message  # PIL's own reason is kept


def test_truncated_jpeg_in_an_image_folder_is_named_through_a_dataloader(tmp_path):
    import pickle

    from torch.utils.data import DataLoader, Subset

    wnids = zl.get_spec("tiny_imagenet").class_keys
    _fake_tiny_imagenet(tmp_path, wnids)
    broken = tmp_path / "tiny-imagenet-200" / "train" / wnids[3] / "images" / f"{wnids[3]}_0.JPEG"
    broken.write_bytes(_jpeg_bytes())
    _truncate(broken)
    train = zl.load_dataset("tiny_imagenet_train", data_root=tmp_path, image_size=32, verbose=False)
    # the wrapper stays a transparent stand-in for the torchvision dataset
    assert len(train) == 200 and list(train.classes) == sorted(wnids) and train.samples[3][0] == str(broken)
    copy = pickle.loads(pickle.dumps(train))
    assert len(copy) == 200 and copy[0][1] == 0
    with pytest.raises(datasets.DatasetFileError, match=re.escape(str(broken))) as info:
        copy[3]
    assert "delete it" in str(info.value)  # an image folder finds its files by listing them
    loader = DataLoader(Subset(train, [0, 3]), batch_size=2, num_workers=1)
    with pytest.raises(OSError, match=re.escape(broken.name)):
        next(iter(loader))


def test_an_unreadable_image_without_a_known_path_names_the_index():
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            raise OSError("image file is truncated")

    wrapped = datasets._NameFailingFiles(Broken(), "Some set", "/data/some")
    with pytest.raises(datasets.DatasetFileError, match=r"Some set.*image 2 .*/data/some"):
        wrapped[2]


def test_imagenet_message_lists_the_archives_and_the_unpacked_form(tmp_path):
    with pytest.raises(zl.DatasetNotFoundError) as info:
        zl.load_dataset("imagenet", data_root=tmp_path, verbose=False)
    message = str(info.value)
    for part in ("ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_img_val.tar", "meta.bin", "val/<wnid>/"):
        assert part in message, part


def test_imagenet_loads_from_the_unpacked_form_without_the_tarballs(tmp_path):
    spec = zl.get_spec("imagenet")
    base = tmp_path / "imagenet"
    base.mkdir()
    torch.save(({wnid: (name,) for wnid, name in zip(spec.class_keys, spec.classnames)}, []), base / "meta.bin")
    jpeg = _jpeg_bytes(size=8)
    for wnid in spec.class_keys:
        (base / "val" / wnid).mkdir(parents=True)
        (base / "val" / wnid / f"ILSVRC2012_val_{wnid}.JPEG").write_bytes(jpeg)
    data = zl.load_dataset("imagenet", data_root=tmp_path, image_size=32, verbose=False)
    assert len(data) == 1000 and data[999][1] == 999 and data[0][0].shape == (3, 32, 32)
    assert not list(base.glob("*.tar*"))


@pytest.mark.parametrize("name, classes", [("imagenet_r", 200), ("imagenet_sketch", 1000)])
def test_robustvlm_sets_load_from_wnid_folders_with_imagenet_names(name, classes, tmp_path):
    spec = zl.get_spec(name)
    imagenet = dict(zip(zl.get_spec("imagenet").class_keys, zl.get_spec("imagenet").classnames))
    assert len(spec.classnames) == classes and len(set(spec.class_keys)) == classes
    assert all(imagenet[key] == value for key, value in zip(spec.class_keys, spec.classnames))
    folder = tmp_path / spec.folder
    for wnid in spec.class_keys:
        (folder / wnid).mkdir(parents=True)
        (folder / wnid / "a.jpg").write_bytes(_jpeg_bytes())
    data = zl.load_dataset(name, data_root=tmp_path, image_size=32, verbose=False)
    image, label = data[classes - 1]
    assert len(data) == classes and label == classes - 1 and image.shape == (3, 32, 32)
    with pytest.raises(zl.DatasetNotFoundError, match="wnid folders"):
        zl.load_dataset(name, data_root=tmp_path / "empty", image_size=32, verbose=False)
