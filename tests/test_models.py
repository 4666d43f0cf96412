import open_clip
import pytest
import torch
import torch.nn.functional as F

import zsr_lab as zl
from zsr_lab.models import CLASSROOM_MODEL, DEFAULT_MODEL

MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)


def test_wrapper_normalises_inside(random_classroom_clip):
    clip = random_classroom_clip
    x = torch.rand(4, 3, 28, 28)
    expected = clip.clip.visual((x - MEAN) / STD)[0]
    torch.testing.assert_close(clip.encode_image(x), expected)
    # normalising twice would be a different input: the wrapper must not expect pre-normalised images
    assert not torch.allclose(clip.encode_image((x - MEAN) / STD), expected, atol=1e-3)


def test_wrapper_resizes_other_resolutions_bicubically(random_classroom_clip):
    clip = random_classroom_clip
    x = torch.rand(2, 3, 14, 14)
    up = F.interpolate(x, size=(28, 28), mode="bicubic", align_corners=False)
    torch.testing.assert_close(clip.encode_image(x), clip.clip.visual((up - MEAN) / STD)[0])


def test_grey_images_are_repeated_to_rgb(random_classroom_clip):
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(
        random_classroom_clip.encode_image(x), random_classroom_clip.encode_image(x.expand(-1, 3, -1, -1))
    )


def test_bad_image_shape_is_a_clear_error(random_classroom_clip):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        random_classroom_clip.encode_image(torch.rand(3, 28, 28))


def _tokens_through_ln_post(clip, x):
    """All 1+P tokens after ln_post, captured independently with a hook, then projected."""
    captured = {}
    handle = clip.clip.visual.ln_post.register_forward_hook(lambda m, i, o: captured.setdefault("t", o))
    clip.encode_image(x)
    handle.remove()
    return captured["t"] @ clip.clip.visual.proj


@pytest.mark.parametrize("model_name, grid, dim, size", [(CLASSROOM_MODEL, 4, 64, 28), (DEFAULT_MODEL, 7, 512, 224)])
def test_projected_tokens(model_name, grid, dim, size):
    torch.manual_seed(0)
    clip = zl.load_clip(model_name, None, device="cpu")  # random weights: same shapes and FLOPs
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        features = clip.encode_image_tokens(x)
        reference = _tokens_through_ln_post(clip, x)
        pooled = clip.encode_image(x)
    assert features.tokens.shape == (2, 1 + grid * grid, dim)
    torch.testing.assert_close(features.tokens[:, 0], pooled)  # CLS token = the pooled path
    torch.testing.assert_close(features.embedding, pooled)
    torch.testing.assert_close(features.tokens, reference, rtol=1e-4, atol=1e-5)


def test_logits_are_scaled_cosines(random_classroom_clip):
    clip = random_classroom_clip
    classes = F.normalize(torch.randn(5, clip.embed_dim), dim=-1)
    clip.set_classifier(classes)
    x = torch.rand(3, 3, 28, 28)
    with torch.no_grad():
        cos = F.normalize(clip.encode_image(x), dim=-1) @ classes.T
        torch.testing.assert_close(clip(x), 100.0 * cos, rtol=1e-4, atol=1e-4)
    assert clip.logit_scale.item() == pytest.approx(100.0)


def test_classifier_shape_is_checked(random_classroom_clip):
    with pytest.raises(ValueError, match="class embeddings must have shape"):
        random_classroom_clip.set_classifier(torch.randn(5, 7))
    with pytest.raises(RuntimeError, match="no classifier set"):
        random_classroom_clip(torch.rand(1, 3, 28, 28))


def test_train_image_tower_only(random_classroom_clip):
    clip = random_classroom_clip
    trainable = zl.train_image_tower_only(clip)
    visual = set(map(id, clip.clip.visual.parameters()))
    assert {id(p) for p in trainable} == visual
    for name, p in clip.clip.named_parameters():
        assert p.requires_grad == name.startswith("visual."), name
    clip.set_classifier(zl.zero_shot_classifier(clip, ["a", "b"], ["{}"]))
    clip(torch.rand(2, 3, 28, 28)).sum().backward()
    assert all(p.grad is not None for p in trainable)
    assert all(p.grad is None for n, p in clip.clip.named_parameters() if not n.startswith("visual."))


def test_frozen_copy_is_independent_and_frozen(random_classroom_clip):
    clip = random_classroom_clip
    reference = zl.frozen_copy(clip)
    assert not any(p.requires_grad for p in reference.parameters())
    assert not reference.training
    with torch.no_grad():
        clip.clip.visual.proj.add_(1.0)
    assert not torch.equal(reference.clip.visual.proj, clip.clip.visual.proj)


def test_missing_pretrained_weights_give_actionable_error():
    with pytest.raises(zl.WeightsUnavailableError) as info:
        zl.load_clip(DEFAULT_MODEL, "openai", device="cpu")  # offline: HF_HUB_OFFLINE=1 in the tests
    message = str(info.value)
    assert "What to do" in message and "classroom" in message and "openai" in message


def test_unknown_tag_and_architecture():
    with pytest.raises(zl.WeightsUnavailableError, match="Known tags"):
        zl.load_clip(DEFAULT_MODEL, "no_such_tag", device="cpu")
    with pytest.raises(ValueError, match="list_models"):
        zl.load_clip("ViT-Z-99", None)


def test_a_model_to_train_from_scratch_is_created_without_the_random_weights_warning(caplog):
    import logging

    import open_clip

    from zsr_lab.models import CLASSROOM_MODEL, create_untrained

    with caplog.at_level(logging.WARNING):
        open_clip.create_model(CLASSROOM_MODEL, pretrained=None)
    assert "initialized randomly" in caplog.text  # what open_clip says, and what a chapter must not show
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model = create_untrained(CLASSROOM_MODEL)
    assert "initialized randomly" not in caplog.text and model.visual.image_size[0] == 28
    assert not any(
        isinstance(f, logging.Filter) and "WeightsFollow" in type(f).__name__ for f in logging.getLogger().filters
    )  # the filter is removed again


def test_frozen_parameters_turn_gradients_off_and_restore_each_flag_even_after_an_error(random_classroom_clip):
    clip = random_classroom_clip
    zl.train_image_tower_only(clip)  # mixed flags: image tower trainable, text tower frozen
    before = [p.requires_grad for p in clip.parameters()]
    assert any(before) and not all(before)
    with zl.models.frozen_parameters(clip):
        assert not any(p.requires_grad for p in clip.parameters())
    assert [p.requires_grad for p in clip.parameters()] == before
    with pytest.raises(RuntimeError, match="inside"), zl.models.frozen_parameters(clip):
        raise RuntimeError("inside")
    assert [p.requires_grad for p in clip.parameters()] == before
