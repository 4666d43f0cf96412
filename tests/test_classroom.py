import math

import pytest
import torch

import zsr_lab as zl
from zsr_lab import classroom


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


def test_cached_checkpoint_is_reused(classroom_clip, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the cached checkpoint should have been used")

    monkeypatch.setattr(classroom, "pretrain_classroom_clip", no_training)
    path = classroom.pretrained_checkpoint()
    assert path.exists() and path.parent.name == "classroom"
    record = torch.load(path, weights_only=True)["record"]
    assert record["config"]["steps"] == classroom.ClassroomPretrainConfig().steps


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
