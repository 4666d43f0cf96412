"""Text-guided attention maps and the TGA-ZSR / Comp-TGA losses."""

import math

import pytest
import torch
from test_training import tiny_config  # the engine tests' few-second recipe

import zsr_lab as zl
from zsr_lab.attention import (
    attention_distance,
    attention_drift,
    attention_maps,
    complementary_attention,
    non_class_classifier,
    text_guided_attention,
)
from zsr_lab.attention_measures import measure_attention_drift
from zsr_lab.methods import TGAZSR, CompTGA, build_method


def test_map_of_a_hand_built_token_tensor_equals_the_hand_computed_map():
    # CLS + 4 patches (2×2 grid), d = 2; text t = (1, 0)
    tokens = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [2.0, 1.0], [0.0, 2.0], [1.0, 1.0]]])
    text = torch.tensor([[1.0, 0.0]])
    # token-axis normalisation: channel 0 divided by sqrt(9+1+4+0+1) = sqrt(15)
    first = [1 / math.sqrt(15), 2 / math.sqrt(15), 0.0, 1 / math.sqrt(15)]
    low, high = min(first), max(first)
    expected = torch.tensor([[(v - low) / (high - low) for v in first]])  # [0.5, 1, 0, 0.5]
    maps = text_guided_attention(tokens, text, image_size=2)  # 2×2 → 2×2 keeps the values
    assert torch.allclose(maps, expected)
    # per-token normalisation: cosines 1, 2/√5, 0, 1/√2 → a different ranking of patches 1 and 2
    per_token = text_guided_attention(tokens, text, image_size=2, normalize="per_token")
    cosines = [1.0, 2 / math.sqrt(5), 0.0, 1 / math.sqrt(2)]
    assert torch.allclose(per_token, torch.tensor([cosines]) / max(cosines))
    assert per_token[0, 0] > per_token[0, 1] and maps[0, 0] < maps[0, 1]


def test_the_two_normalisations_agree_only_when_tokens_and_channels_have_equal_norms():
    h = 1 / math.sqrt(2)  # every token has norm 1 and both channels have squared norm 2.5 across tokens
    balanced = torch.tensor([[[h, h], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])
    text = torch.nn.functional.normalize(torch.tensor([[0.3, 0.7]]), dim=-1)
    assert torch.allclose(
        text_guided_attention(balanced, text, image_size=2),
        text_guided_attention(balanced, text, image_size=2, normalize="per_token"),
    )
    torch.manual_seed(0)
    generic, text = torch.randn(1, 5, 2) * torch.tensor([1.0, 3.0]), torch.tensor([[0.6, 0.8]])
    assert not torch.allclose(
        text_guided_attention(generic, text, image_size=2),
        text_guided_attention(generic, text, image_size=2, normalize="per_token"),
    )


def test_maps_upsample_any_square_grid_to_the_input_size(random_classroom_clip):
    model = random_classroom_clip
    features = model.encode_image_tokens(torch.rand(3, 1, 28, 28))
    maps = text_guided_attention(features.tokens, torch.randn(3, model.embed_dim), image_size=model.image_size)
    assert maps.shape == (3, 28 * 28)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    vit_b32_like = text_guided_attention(torch.randn(2, 50, 8), torch.randn(2, 8), image_size=224)
    assert vit_b32_like.shape == (2, 50_176)
    with pytest.raises(ValueError, match="square patch grid"):
        text_guided_attention(torch.randn(1, 6, 8), torch.randn(1, 8), image_size=4)
    with pytest.raises(ValueError, match="normalize must be"):
        build_method("tga_zsr", normalize="channel")


def test_complementary_map_is_the_product_without_renormalisation():
    class_map, non_class = torch.tensor([[0.2, 1.0, 0.5]]), torch.tensor([[1.0, 0.5, 0.0]])
    assert torch.allclose(complementary_attention(class_map, non_class), torch.tensor([[0.0, 0.5, 0.5]]))


def _setup(method, seed=0):
    torch.manual_seed(seed)
    model = zl.load_clip("zsr-classroom-vit", None, device="cpu")
    names = zl.get_spec("fashion_mnist").classnames
    model.set_classifier(zl.zero_shot_classifier(model, names, ["This is a photo of a {}"]))
    method.setup(model, names, ["This is a photo of a {}"])
    return model, zl.frozen_copy(model)


@pytest.mark.parametrize("method", [TGAZSR(), CompTGA()])
def test_attention_terms_vanish_when_the_models_coincide_on_clean_input(method):
    model, reference = _setup(method)
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([0, 3, 5, 9])
    with torch.no_grad():
        context = method.prepare(model, reference, images, labels)
        loss, terms = method(model, reference, images, images, labels, context)
    assert terms["larm"].item() == pytest.approx(0, abs=1e-5) and terms["gacm"].item() == pytest.approx(0, abs=1e-5)
    assert loss.item() == pytest.approx(terms["ce"].item(), abs=1e-5)


@pytest.mark.parametrize(
    "method",
    [
        TGAZSR(alpha=1.0, beta=0.0),
        TGAZSR(alpha=0.0, beta=1.0),
        CompTGA(alpha=1.0, beta=0.0),
        CompTGA(alpha=0.0, beta=1.0),
    ],
)
def test_gradients_reach_the_image_tower_through_each_attention_term(method):
    model, reference = _setup(method)
    with torch.no_grad():  # move the trained tower away from the frozen one
        for p in model.clip.visual.parameters():
            p.add_(0.02 * torch.randn_like(p))
    params = zl.train_image_tower_only(model)
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([0, 3, 5, 9])
    adversarial = (images + 0.03 * torch.randn_like(images)).clamp(0, 1)
    context = method.prepare(model, reference, images, labels)
    _, terms = method(model, reference, images, adversarial, labels, context)
    term = terms["larm"] if method.alpha else terms["gacm"]
    assert term.item() > 0
    loss, _ = method(model, reference, images, adversarial, labels, context)
    attention_only = loss - terms["ce"]
    grads = torch.autograd.grad(attention_only, params, allow_unused=True)
    assert sum(g.abs().sum() for g in grads if g is not None) > 0
    assert all(p.grad is None for p in reference.parameters())


def test_comp_tga_encodes_the_non_class_prompts():
    method = CompTGA()
    model, _ = _setup(method)
    names = zl.get_spec("fashion_mnist").classnames
    expected = zl.zero_shot_classifier(model, names, ["This is not a photo of a {}"])
    assert torch.allclose(method.non_class_embeddings, expected)
    assert (method.alpha, method.beta) == (0.10, 0.07) and (TGAZSR().alpha, TGAZSR().beta) == (0.08, 0.05)


@pytest.mark.parametrize("method", [TGAZSR(), CompTGA()])
def test_one_forward_of_the_image_tower_gives_logits_and_maps(method):
    model, reference = _setup(method)
    calls = []
    model.clip.visual.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([0, 3, 5, 9])
    context = method.prepare(model, reference, images, labels)
    method(model, reference, images, images.flip(-1), labels, context)
    assert calls == [8]  # clean and adversarial images in a single pass


def test_method_options_include_the_defaults_so_equal_runs_share_a_folder():
    assert TGAZSR().options() == {"alpha": 0.08, "beta": 0.05, "normalize": "tokens"}
    assert build_method("tecoa").options() == {} and build_method("fare").options() == {}
    assert build_method("pmg_aft", form="repository").options() == {"alpha": 1.0, "beta": 1.0, "form": "repository"}
    implicit, explicit = (
        zl.recipe("tga_zsr", "classroom"),
        zl.recipe("tga_zsr", "classroom", method_options={"alpha": 0.08}),
    )
    assert implicit.resolved().method_options == {"alpha": 0.08, "beta": 0.05, "normalize": "tokens"}
    assert implicit.resolved().fingerprint() == explicit.resolved().fingerprint()
    assert (
        zl.recipe("tga_zsr", "classroom", method_options={"alpha": 0.1}).resolved().fingerprint()
        != implicit.resolved().fingerprint()
    )


def test_attention_maps_for_inspection(random_classroom_clip):
    model = random_classroom_clip.train()
    names = zl.get_spec("digits").classnames
    model.set_classifier(zl.zero_shot_classifier(model, names, ['a photo of the number: "{}".']))
    images, labels = torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 7])
    maps = attention_maps(model, images, model.class_embeddings[labels])
    assert maps.shape == (3, 28, 28) and model.training  # the caller's mode is restored
    tokens = model.encode_image_tokens(images).tokens
    expected = text_guided_attention(tokens, model.class_embeddings[labels], image_size=28)
    assert torch.allclose(maps.flatten(1), expected, atol=1e-6)
    non_class = non_class_classifier(model, names)[labels]
    complementary = attention_maps(model, images, model.class_embeddings[labels], non_class_text=non_class)
    assert torch.allclose(complementary, maps * (1 - attention_maps(model, images, non_class)), atol=1e-6)
    one_text = attention_maps(model, images, model.class_embeddings[4])  # one [d] embedding for all images
    assert torch.allclose(one_text, attention_maps(model, images, model.class_embeddings[[4, 4, 4]]))


def test_attention_drift_is_the_rms_difference_and_scales_to_the_loss_distance():
    maps = torch.tensor([[0.0, 1.0, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    target = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(attention_drift(maps, target), torch.tensor([0.5, 1.0]))
    assert attention_distance(maps, target).item() == pytest.approx(
        (math.sqrt(4) * attention_drift(maps, target)).mean().item()
    )


def test_measured_drift_is_zero_for_the_reference_on_clean_images_and_grows_under_attack(classroom_clip):
    reference = classroom_clip
    moved = zl.frozen_copy(reference)
    with torch.no_grad():
        for p in moved.clip.visual.parameters():
            p.add_(0.05 * torch.randn_like(p))
    installed = moved.class_embeddings.clone()
    table = measure_attention_drift(
        {"same": reference, "moved": moved},
        ["digits"],
        reference=reference,
        eps=4,
        steps=5,
        n_examples=48,
        batch_size=24,
    )
    same, other = (table[table.model == name].iloc[0] for name in ("same", "moved"))
    assert torch.equal(moved.class_embeddings, installed)  # the measurement's classifiers are not left behind
    assert same["clean"] == pytest.approx(0, abs=1e-6) and same["n"] == 48
    assert same["adversarial"] > same["random_noise"] > 0  # an attack moves the map more than noise of its size
    assert other["clean"] > 0
    with pytest.raises(ValueError, match="ε must be"):
        measure_attention_drift({"same": reference}, ["digits"], reference=reference, eps=-1)


def test_tga_zsr_without_attention_terms_trains_exactly_like_tecoa(tmp_path):
    tecoa = zl.fit(tiny_config(tmp_path, epochs=1, run_dir=str(tmp_path / "tecoa")), progress=False)
    plain = zl.fit(
        tiny_config(
            tmp_path,
            epochs=1,
            method="tga_zsr",
            method_options={"alpha": 0.0, "beta": 0.0},
            run_dir=str(tmp_path / "tga"),
        ),
        progress=False,
    )
    for (name, a), b in zip(
        tecoa.model.clip.visual.state_dict().items(), plain.model.clip.visual.state_dict().values()
    ):
        assert torch.allclose(a, b, atol=1e-5), name


def test_sensitivity_trains_each_point_once_and_labels_it(tmp_path):
    config = tiny_config(
        tmp_path,
        epochs=1,
        method="tga_zsr",
        eval_datasets=("digits",),
        eval_n_examples=16,
        eval_attacks=("pgd-2",),
        eval_eps=(4,),
    )
    table = zl.sensitivity(config, {"alpha": [0.0, 1.0], "beta": [0.05]})
    assert list(zip(table.option, table.value)) == [("alpha", 0.0), ("alpha", 1.0), ("beta", 0.05)]
    assert set(table.fixed) == {"beta = 0.05, normalize = tokens", "alpha = 0.08, normalize = tokens"}
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"alpha_0", "alpha_1", "beta_0.05"}
    assert table["robust_accuracy"].between(0, 100).all()
    shown = zl.sensitivity_table(table, eps=4)
    assert list(shown.columns) == ["option", "value", "attack", "eps", "clean (%)", "robust (%)"]
    assert list(shown["attack"]) == ["PGD-2"] * 3
    assert (shown["robust (%)"] == table["robust_accuracy"].round(1)).all()
    with pytest.raises(ValueError, match="has no option gamma"):
        zl.sensitivity(config, {"gamma": [1.0]})
