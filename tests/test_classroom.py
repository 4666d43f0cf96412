import math

import pytest
import torch

import zsr_lab as zl
from zsr_lab import classroom
from zsr_lab.models import CLASSROOM_MODEL


def test_multi_positive_loss_on_a_hand_computed_case():
    # two images (classes 0, 1), three captions (classes 0, 0, 1), orthogonal unit embeddings, scale 1
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss = classroom.multi_positive_clip_loss(
        image, text, torch.tensor([0, 1]), torch.tensor([0, 0, 1]), torch.tensor(1.0)
    )
    e = math.e
    # image→text: image 0 logits (1, 1, 0) with targets (1/2, 1/2, 0); image 1 logits (0, 0, 1), target caption 2
    i2t = (-math.log(e / (2 * e + 1)) + -math.log(e / (e + 2))) / 2
    # text→image: each caption's logits over the 2 images; caption 0/1: (1, 0) → image 0; caption 2: (0, 1) → image 1
    t2i = -math.log(e / (e + 1))
    assert loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)


def test_captions_use_the_dataset_template_and_its_phrase():
    captions = classroom.captions_for("digits")
    assert len(captions) == 10
    assert "A photo of the handwritten digit seven." in captions[7]
    assert "a picture of a handwritten digit seven" in captions[7]


def test_pretraining_is_deterministic_given_the_seed():
    tiny = dict(steps=3, batch_size=16)
    a, _ = classroom.pretrain_classroom_clip(classroom.ClassroomPretrainConfig(**tiny), progress=False)
    b, _ = classroom.pretrain_classroom_clip(classroom.ClassroomPretrainConfig(**tiny), progress=False)
    c, _ = classroom.pretrain_classroom_clip(classroom.ClassroomPretrainConfig(**tiny, seed=1), progress=False)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.visual.proj, c.visual.proj)


def test_cache_key_changes_with_the_config():
    base = classroom.ClassroomPretrainConfig()
    assert base.cache_key() == classroom.ClassroomPretrainConfig().cache_key()
    assert base.cache_key() != classroom.ClassroomPretrainConfig(seed=1).cache_key()
    assert base.cache_key() != classroom.ClassroomPretrainConfig(steps=10).cache_key()


def test_pretrained_classroom_clip_is_a_working_zero_shot_classifier(classroom_clip):
    table = zl.evaluate_zero_shot(classroom_clip, zl.CLASSROOM_DATASETS, progress=False)
    accuracy = dict(zip(table.dataset, table.accuracy))
    assert set(accuracy) == set(zl.CLASSROOM_DATASETS)
    for name, value in accuracy.items():
        assert value >= 80.0, f"classroom CLIP zero-shot accuracy on {name}: {value:.1f} %"
    assert classroom_clip.logit_scale.item() == pytest.approx(100.0)


def test_the_package_ships_each_classroom_clip_and_loads_it_without_pre_training(monkeypatch, tmp_path):
    def no_training(*args, **kwargs):
        raise AssertionError("the shipped checkpoint should have been used")

    monkeypatch.setattr(classroom, "pretrain_classroom_clip", no_training)
    for name, config in classroom.PRETRAINING.items():
        path = classroom.pretrained_checkpoint(config, cache_dir=tmp_path)
        # a changed pre-training config (or FORMAT_VERSION) names another file: retrain and ship it
        assert path == classroom.SHIPPED_WEIGHTS / classroom.checkpoint_name(config), name
        record = torch.load(path, weights_only=True)["record"]
        assert record["config"]["model"] == name and record["config"]["steps"] == config.steps
    assert not (tmp_path / "classroom").exists()  # nothing written to the cache


def test_a_config_the_package_does_not_ship_is_pre_trained_once_and_cached(monkeypatch, tmp_path):
    tiny = classroom.ClassroomPretrainConfig(steps=2, batch_size=16)
    assert classroom.shipped_checkpoint(tiny) is None
    trained = classroom.pretrain_classroom_clip(tiny, progress=False)
    calls = []

    def counted(config, **kwargs):
        calls.append(config)
        return trained

    monkeypatch.setattr(classroom, "pretrain_classroom_clip", counted)
    path = classroom.pretrained_checkpoint(tiny, cache_dir=tmp_path, progress=False)
    assert path == classroom.checkpoint_path(tiny, cache_dir=tmp_path) and path.exists() and calls == [tiny]
    assert classroom.pretrained_checkpoint(tiny, cache_dir=tmp_path) == path and calls == [tiny]  # cached: reused
    # shipped=False ignores the package's file: the shipped config is pre-trained into the cache
    default = classroom.ClassroomPretrainConfig()
    assert classroom.pretrained_checkpoint(default, cache_dir=tmp_path, shipped=False, progress=False) == (
        classroom.checkpoint_path(default, cache_dir=tmp_path)
    )
    assert calls == [tiny, default]


# Another machine may round float sums differently, and the bits change: retrained on 1 thread instead of 2, or from
# initial weights moved by one ulp, the 28-px CLIP's weights differ by up to 6e-6 (the attention key biases by up to
# 0.018: their gradient is zero analytically, so Adam scales pure rounding noise into steps), yet on all 11,134
# images of its four test sets the predictions agreed on every image and the logits within 0.0005 (2026-12-07).
# The same model is therefore recognised by what the book uses it for: its predictions.
SHIPPED_AGREEMENT = 0.995  # share of test images on which the retrained and the shipped model must agree
SHIPPED_ACCURACY_POINTS = 0.5  # largest zero-shot accuracy difference on a test set, in points


def _predictions(model_name: str, state_dict: dict, dataset_names, tmp_path) -> dict:
    path = tmp_path / f"{len(list(tmp_path.iterdir()))}.pt"
    torch.save({"state_dict": state_dict}, path)
    model = zl.load_clip(model_name, str(path), device="cpu")
    out = {}
    for name in dataset_names:
        data = zl.load_dataset(name, image_size=model.image_size[0])
        model.set_classifier(zl.dataset_classifier(model, name))
        loader = torch.utils.data.DataLoader(data, batch_size=256)
        with torch.no_grad():
            out[name] = torch.cat([model(images).argmax(1) for images, _ in loader])
        out[name + ":labels"] = torch.cat([labels for _, labels in loader])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model_name", list(classroom.PRETRAINING))
def test_the_shipped_checkpoints_are_what_the_code_produces(model_name, tmp_path):
    """Retrains a shipped classroom CLIP from scratch (about 2 minutes; the scenes CLIP about 4.5) and compares:
    bit-identical on the machine class that made the files, else the same predictions."""
    config = classroom.PRETRAINING[model_name]
    shipped = torch.load(classroom.shipped_checkpoint(config), weights_only=True)["state_dict"]
    threads = torch.get_num_threads()
    torch.set_num_threads(classroom.SHIPPED_THREADS)
    try:
        model, _ = classroom.pretrain_classroom_clip(config, progress=False)
    finally:
        torch.set_num_threads(threads)
    retrained = model.state_dict()
    assert retrained.keys() == shipped.keys()
    if all(torch.equal(retrained[k], shipped[k]) for k in retrained):
        return
    problem = _not_the_same_model(model_name, retrained, shipped, [name for name, _ in config.mixture], tmp_path)
    assert problem is None, (
        f"{model_name} retrained from its config differs from the shipped file: {problem}. If the pre-training code "
        f"changed on purpose, bump classroom.FORMAT_VERSION and remake the files: python -m zsr_lab.classroom"
    )


def _not_the_same_model(model_name: str, ours: dict, theirs: dict, dataset_names, tmp_path) -> str | None:
    """Where two weight sets of one architecture behave differently on the test sets, or ``None``."""
    a = _predictions(model_name, ours, dataset_names, tmp_path)
    b = _predictions(model_name, theirs, dataset_names, tmp_path)
    for name in dataset_names:
        labels = a[name + ":labels"]
        agreement = (a[name] == b[name]).float().mean().item()
        gap = 100 * abs((a[name] == labels).float().mean() - (b[name] == labels).float().mean()).item()
        if agreement < SHIPPED_AGREEMENT or gap > SHIPPED_ACCURACY_POINTS:
            return f"on {name} the predictions agree on {100 * agreement:.1f} % of the images, {gap:.1f} points apart"
    return None


def test_the_same_model_check_ignores_rounding_noise_and_catches_a_changed_model(tmp_path):
    config = classroom.PRETRAINING[CLASSROOM_MODEL]
    shipped = torch.load(classroom.shipped_checkpoint(config), weights_only=True)["state_dict"]
    generator = torch.Generator().manual_seed(0)

    def moved(scale, keys):
        noise = {k: scale * torch.randn(shipped[k].shape, generator=generator) for k in keys}
        return {k: v + noise[k] if k in noise else v for k, v in shipped.items()}

    names = ["digits", "textures"]
    rounding = moved(1e-5, [k for k in shipped if k.startswith("visual.") and k.endswith("weight")])
    assert _not_the_same_model(CLASSROOM_MODEL, rounding, shipped, names, tmp_path) is None
    changed = moved(0.3, ["visual.proj"])
    assert "agree on" in _not_the_same_model(CLASSROOM_MODEL, changed, shipped, names, tmp_path)


def test_negated_captions_count_only_for_images_of_other_classes():
    # images of classes 0 and 1; captions "0", "1" and "not 0" (negated), orthogonal unit embeddings, scale 1
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loss = classroom.multi_positive_clip_loss(
        image,
        text,
        torch.tensor([0, 1]),
        torch.tensor([0, 1, 0]),
        torch.tensor(1.0),
        negated=torch.tensor([False, False, True]),
    )
    e = math.e
    # image→text over the two affirmative captions only: each image's own caption, logits (1, 0) or (0, 1)
    i2t = -math.log(e / (e + 1))
    # text→image: caption "0" → image 0, caption "1" → image 1, caption "not 0" → image 1 (the other class)
    t2i = -math.log(e / (e + 1))
    assert loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)
    assert classroom.negated_captions_for("digits")[7] == [
        "This is not a photo of a seven",
        "This is not a photo of a handwritten digit seven",
        "a picture that is not a seven",
        "a picture that is not a handwritten digit seven",
    ]


def test_the_shipped_checkpoints_are_package_data():
    """A pip install (Colab's) must carry the files, or a reader's first chapter pre-trains again."""
    import fnmatch
    import re
    from pathlib import Path

    root = Path(classroom.__file__).parent
    pyproject = (root.parent / "pyproject.toml").read_text()
    (listed,) = re.findall(r"\[tool\.setuptools\.package-data\]\nzsr_lab = \[(.*)\]", pyproject)
    patterns = re.findall(r'"([^"]+)"', listed)
    files = [path.relative_to(root).as_posix() for path in classroom.SHIPPED_WEIGHTS.glob("*.pt")]
    assert len(files) == len(classroom.PRETRAINING)
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_ship_checkpoints_writes_each_config_on_the_shipped_threads_and_removes_stale_files(monkeypatch, tmp_path):
    tiny = classroom.ClassroomPretrainConfig(steps=2, batch_size=16)
    monkeypatch.setattr(classroom, "PRETRAINING", {tiny.model: tiny})
    monkeypatch.setattr(classroom, "SHIPPED_WEIGHTS", tmp_path)
    stale = tmp_path / f"{tiny.model}-000000000000.pt"
    stale.write_bytes(b"old")
    seen_threads = []
    real = classroom.pretrain_classroom_clip

    def recording(config, **kwargs):
        seen_threads.append(torch.get_num_threads())
        return real(config, **kwargs)

    monkeypatch.setattr(classroom, "pretrain_classroom_clip", recording)
    threads = torch.get_num_threads()
    (path,) = classroom.ship_checkpoints(progress=False)
    assert path == tmp_path / classroom.checkpoint_name(tiny) and classroom.shipped_checkpoint(tiny) == path
    assert not stale.exists() and sorted(tmp_path.iterdir()) == [path]
    assert seen_threads == [classroom.SHIPPED_THREADS] and torch.get_num_threads() == threads
    assert torch.load(path, weights_only=True)["record"]["config"]["steps"] == 2
