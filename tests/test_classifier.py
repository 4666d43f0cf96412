import pytest
import torch
import torch.nn.functional as F

import zsr_lab as zl
from zsr_lab.classifier import classifier_cache_path


def test_single_template_is_the_normalised_text_embedding(random_classroom_clip):
    clip = random_classroom_clip
    weights = zl.zero_shot_classifier(clip, ["cat", "dog"], ["a photo of a {}"])
    with torch.no_grad():
        expected = F.normalize(clip.clip.encode_text(clip.tokenizer(["a photo of a cat", "a photo of a dog"])), dim=-1)
    torch.testing.assert_close(weights, expected)


def test_template_ensemble_is_normalised_mean_of_normalised_embeddings(random_classroom_clip):
    clip = random_classroom_clip
    templates = ["a photo of a {}", "a drawing of a {}", "{}"]
    weights = zl.zero_shot_classifier(clip, ["cat", "dog"], templates)
    with torch.no_grad():
        for row, name in enumerate(["cat", "dog"]):
            per_template = clip.encode_text([t.format(name) for t in templates])  # normalised rows
            mean = per_template.mean(0)
            torch.testing.assert_close(weights[row], mean / mean.norm())
    torch.testing.assert_close(weights.norm(dim=-1), torch.ones(2))


def test_template_string_is_rejected(random_classroom_clip):
    with pytest.raises(TypeError, match="list of strings"):
        zl.zero_shot_classifier(random_classroom_clip, ["cat"], "a photo of a {}")


def test_dataset_classifier_is_cached_on_disk(random_classroom_clip, tmp_path, monkeypatch):
    clip = random_classroom_clip
    first = zl.dataset_classifier(clip, "digits", cache_dir=tmp_path)
    assert first.shape == (10, clip.embed_dim)
    assert len(list((tmp_path / "classifiers").glob("digits-*.pt"))) == 1

    def no_text_encoding(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(clip, "encode_text", no_text_encoding)
    torch.testing.assert_close(zl.dataset_classifier(clip, "digits", cache_dir=tmp_path), first)


def test_cache_key_follows_dataset_templates_and_text_weights(random_classroom_clip, tmp_path):
    clip = random_classroom_clip
    names = zl.get_spec("digits").classnames
    base = classifier_cache_path(clip, "digits", names, ["{}"], tmp_path)
    assert classifier_cache_path(clip, "digits", names, ["{}"], tmp_path) == base
    assert classifier_cache_path(clip, "textures", names, ["{}"], tmp_path) != base
    assert classifier_cache_path(clip, "digits", names, ["a {}"], tmp_path) != base
    with torch.no_grad():
        clip.clip.text_projection.mul_(1.01)  # a tuned text side must not hit the old entry
    assert classifier_cache_path(clip, "digits", names, ["{}"], tmp_path) != base
    with torch.no_grad():
        clip.clip.visual.proj.mul_(1.01)  # the image tower does not change text embeddings
    assert classifier_cache_path(clip, "digits", names, ["{}"], tmp_path) == classifier_cache_path(
        clip, "digits", names, ["{}"], tmp_path
    )
