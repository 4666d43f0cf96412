"""TIMA's losses: hyperspherical energy, probe distillation, text-distance margins, margin CE, image distillation."""

import math

import pytest
import torch
import torch.nn.functional as F

from zsr_lab.tima import image_distillation, margin_cross_entropy, mhe_energy, probe_distillation, text_margins


def test_mhe_energy_of_a_hand_built_set():
    # three unit vectors: e1, -e1, e2 → squared distances 4 (e1, -e1) and 2 (each with e2)
    text = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    expected = (2 * (1 / 5) + 4 * (1 / 3)) / 6  # 6 ordered pairs
    assert mhe_energy(text).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least two embeddings"):
        mhe_energy(torch.ones(1, 4))


def test_minimising_mhe_alone_spreads_the_embeddings():
    torch.manual_seed(0)
    base = F.normalize(torch.randn(1, 8), dim=-1)
    raw = (base + 0.1 * torch.randn(6, 8)).requires_grad_(True)  # six crowded directions
    optimizer = torch.optim.SGD([raw], lr=0.5)

    def state():
        text = F.normalize(raw, dim=-1)
        return mhe_energy(text), torch.pdist(text).mean()

    energy0, spread0 = (v.item() for v in state())
    for _ in range(100):
        optimizer.zero_grad()
        state()[0].backward()
        optimizer.step()
    energy1, spread1 = (v.item() for v in state())
    assert energy1 < energy0 - 0.1 and spread1 > spread0 + 0.3


def test_probe_distillation_is_zero_for_untouched_text_and_matches_kl_by_hand():
    torch.manual_seed(0)
    probes, text0 = torch.randn(5, 4), F.normalize(torch.randn(3, 4), dim=-1)
    assert probe_distillation(probes, text0, text0.clone()).item() == pytest.approx(0, abs=1e-6)
    text = F.normalize(text0 + 0.5 * torch.randn(3, 4), dim=-1)
    z = F.normalize(probes, dim=-1)
    p, q = (z @ text0.T / 0.5).softmax(-1), (z @ text.T / 0.5).softmax(-1)
    by_hand = (p * (p / q).log()).sum(-1).mean()
    assert probe_distillation(probes, text0, text, tau=0.5).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_margins_are_larger_for_closer_classes_and_zero_on_the_diagonal():
    angles = torch.tensor([0.0, 0.3, 1.2])  # class 1 is close to class 0, class 2 far from both
    text0 = torch.stack([angles.cos(), angles.sin()], dim=1)
    for function in ("cosine", "distance"):
        margins = text_margins(text0, gamma=0.2, function=function)
        assert torch.all(margins.diagonal() == 0)
        assert margins[0, 1] > margins[0, 2] and margins[1, 0] > margins[2, 0]
        assert torch.allclose(margins, margins.T)
    assert text_margins(text0, gamma=0.2)[0, 1].item() == pytest.approx(0.2 * math.cos(0.3), rel=1e-6)
    assert text_margins(text0, gamma=0.2, function="distance")[0, 2].item() == pytest.approx(
        0.2 * (1 - 2 * math.sin(0.6) / 2), rel=1e-5
    )  # chord length 2 sin(Δ/2)
    with pytest.raises(ValueError, match="margin function must be one of cosine, distance"):
        text_margins(text0, gamma=0.2, function="linear")


def test_margin_cross_entropy_by_hand_and_reduces_to_ce_without_margins():
    image = torch.tensor([[1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0])
    margins = torch.tensor([[0.0, 0.3], [0.3, 0.0]])
    # logits (1 + 0, 0 + 0.3) / 0.5 = (2, 0.6)
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0.6)))
    assert margin_cross_entropy(image, text, labels, margins, tau=0.5).item() == pytest.approx(expected, rel=1e-6)
    plain = F.cross_entropy(torch.tensor([[2.0, 0.0]]), labels)
    assert margin_cross_entropy(image, text, labels, torch.zeros(2, 2), tau=0.5).item() == pytest.approx(
        plain.item(), rel=1e-6
    )


def test_image_distillation_is_zero_when_the_student_matches_and_positive_otherwise():
    torch.manual_seed(1)
    text = F.normalize(torch.randn(4, 6), dim=-1)
    clean = torch.randn(3, 6)
    assert image_distillation(clean, 2 * clean, text).item() == pytest.approx(0, abs=1e-6)  # scale-invariant
    assert image_distillation(clean, torch.randn(3, 6), text).item() > 0


# ---- the text side and the engine ------------------------------------------------------------------------

import json  # noqa: E402

from test_training import tiny_config  # noqa: E402

import zsr_lab as zl  # noqa: E402
from zsr_lab.methods import TIMA, build_method  # noqa: E402
from zsr_lab.tima import ClassText, text_parameters, tune_text  # noqa: E402

TEMPLATES = ["This is a photo of a {}", "a picture of a {}"]


def _model(seed=0):
    torch.manual_seed(seed)
    model = zl.load_clip("zsr-classroom-vit", None, device="cpu")
    names = zl.get_spec("fashion_mnist").classnames
    model.set_classifier(zl.zero_shot_classifier(model, names, TEMPLATES))
    return model, names


@pytest.mark.parametrize("trainable", ["projection", "tower"])
def test_class_text_of_untuned_weights_is_the_zero_shot_classifier(trainable):
    model, names = _model()
    with torch.no_grad():
        assert torch.allclose(ClassText(model, names, TEMPLATES, trainable)(model), model.class_embeddings, atol=1e-5)


@pytest.mark.parametrize("schedule, trainable", [("joint", "projection"), ("joint", "tower"), ("staged", "projection")])
def test_gradients_reach_exactly_the_parameters_the_option_says(schedule, trainable):
    model, names = _model()
    method = build_method("tima", schedule=schedule, text_params=trainable)
    method.setup(model, names, TEMPLATES)
    reference = zl.frozen_copy(model)
    trained = zl.train_image_tower_only(model) + method.text_parameters(model)
    for p in method.text_parameters(model):
        p.requires_grad_(True)
    images, labels = torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5])
    context = method.prepare(model, reference, images, labels)
    loss, terms = method(model, reference, images, (images + 0.02).clamp(0, 1), labels, context)
    loss.backward()
    got = {name for name, p in model.clip.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    text_names = {
        name for name, p in model.clip.named_parameters() if any(p is q for q in text_parameters(model, trainable))
    }
    visual = {name for name, _ in model.clip.visual.named_parameters()}
    assert {f"visual.{n}" for n in visual} & got  # the image tower learns in every schedule
    expected_text = text_names if schedule == "joint" else set()
    assert {n for n in got if not n.startswith("visual.")} <= expected_text
    if schedule == "joint":
        assert "text_projection" in got and {"mhe", "iakd"} <= set(terms)
    assert len(trained) == len(list(model.clip.visual.parameters())) + len(method.text_parameters(model))
    assert all(p.grad is None for p in reference.parameters())


def test_staged_text_tuning_changes_only_the_chosen_weights_and_spreads_the_classes():
    model, names = _model()
    before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    flags = [p.requires_grad for p in model.clip.parameters()]
    class_text = ClassText(model, names, TEMPLATES, "projection")
    probes = torch.randn(64, model.embed_dim)
    history = tune_text(model, class_text, probes, which="projection", steps=30, lr=1e-2)
    changed = {k for k, v in model.clip.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"text_projection"}
    assert history[-1]["mhe"] < history[0]["mhe"]
    assert [p.requires_grad for p in model.clip.parameters()] == flags  # the caller's flags come back
    with pytest.raises(ValueError, match="text_params must be one of projection, tower"):
        text_parameters(model, "adapter")


def test_bad_tima_options_name_the_choices():
    for option, value, match in (
        ("schedule", "alternating", "schedule must be one of staged, joint"),
        ("margin", "linear", "margin must be one of cosine, distance"),
        ("tau", 0.0, "tau must be positive"),
    ):
        with pytest.raises(ValueError, match=match):
            TIMA(**{option: value})


def test_a_staged_run_tunes_the_text_once_and_its_evaluation_uses_the_tuned_text(tmp_path):
    config = tiny_config(
        tmp_path,
        method="tima",
        epochs=1,
        method_options={"text_steps": 6, "text_lr": 1e-2},
        eval_datasets=("fashion_mnist",),
        eval_n_examples=16,
        eval_attacks=("pgd-2",),
        eval_eps=(4,),
    )
    result = zl.fit(config, progress=False)
    log = tmp_path / "run" / "log.jsonl"
    text_rows = [json.loads(line) for line in log.read_text().splitlines() if '"kind": "text"' in line]
    assert [row["step"] for row in text_rows] == list(range(1, 7))
    torch.manual_seed(config.seed)  # the run's random initial weights ("none")
    original = zl.load_clip("zsr-classroom-vit", None, device="cpu")
    tuned = result.model
    assert not torch.equal(tuned.clip.text_projection, original.clip.text_projection)
    assert torch.equal(tuned.clip.token_embedding.weight, original.clip.token_embedding.weight)
    # the engine's classifier is the tuned text, and the evaluation's classifier follows the tuned weights
    expected = zl.zero_shot_classifier(
        tuned, zl.get_spec("fashion_mnist").classnames, list(zl.get_spec("fashion_mnist").templates)
    )
    assert torch.allclose(zl.dataset_classifier(tuned, "fashion_mnist"), expected, atol=1e-5)
    again = zl.fit(config, progress=False)  # finished: loaded, the text is not tuned again
    assert log.read_text().count('"kind": "text"') == 6
    assert torch.equal(again.model.clip.text_projection, tuned.clip.text_projection)


def test_text_geometry_figure_shows_both_heatmaps_the_cosines_and_the_margins():
    import matplotlib

    matplotlib.use("Agg")
    torch.manual_seed(0)
    original = F.normalize(torch.randn(5, 8), dim=-1)
    tuned = F.normalize(original + torch.randn(5, 8), dim=-1)
    names = [f"class {i}" for i in range(5)]
    figure = zl.plots.plot_text_geometry(
        original, tuned, names, scale="classroom", margins=text_margins(original, gamma=0.05)
    )
    titles = [ax.get_title() for ax in figure.axes]
    upper = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    assert f"mean off-diagonal cos {(original @ original.T)[upper].mean():.2f}" in titles[0]
    assert any("margins" in t for t in titles) and any("pairwise cosines" in t for t in titles)
