"""Defences that look robust and are not, the grader that says whether an attack broke one, and the red flags
that give each of them away (the chapter "Evaluations that lie")."""

import re

import pytest
import torch

import zsr_lab as zl
from zsr_lab import adaptive, defences, grader

EPS = 8  # the grader's classroom budget, in units of 1/255


def default_pgd(defence, images, labels):
    """The book's default single attack: PGD-10 on the cross-entropy, stopping each image at its first success."""
    return zl.attacks.build_attack(defence, "pgd-10", EPS, n_classes=10)(images, labels)


SOLUTIONS = {
    "bit depth": (
        lambda clip: defences.BitDepthReduction(clip, bits=5),
        lambda d, x, y: adaptive.bpda(d.model, d.transform, x, y, eps=EPS),
    ),
    "noise": (
        lambda clip: defences.RandomNoise(clip, sigma=0.1),
        lambda d, x, y: adaptive.eot(d, x, y, eps=EPS, draws=8),
    ),
    "saturated": (lambda clip: defences.SaturatedLogits(clip), lambda d, x, y: adaptive.margin(d, x, y, eps=EPS)),
    "counter-attack": (
        lambda clip: defences.CounterAttack(clip, eps=4 / 255),
        lambda d, x, y: adaptive.margin(d.model, x, y, eps=EPS),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SOLUTIONS))
def test_the_reference_solution_breaks_the_defence_and_the_default_pgd_does_not(classroom_clip, name):
    build, solution = SOLUTIONS[name]
    defence = build(classroom_clip)
    looks_robust = grader.grade(defence, default_pgd)
    assert not looks_robust.passed and "Not broken yet" in str(looks_robust) and defence.hint in str(looks_robust)
    assert looks_robust.robust_accuracy > looks_robust.undefended + 30  # it does look robust
    broken = grader.grade(defence, solution)
    assert broken.passed and str(broken).startswith("Broken:")
    assert broken.robust_accuracy <= broken.undefended + 15 and broken.clean_accuracy > 75


@pytest.mark.slow
def test_a_grade_repeats_exactly(classroom_clip, tmp_path, monkeypatch):
    """Computed twice (each time in an empty cache, so neither is read from the other): the same grade."""
    build, solution = SOLUTIONS["noise"]
    grades = []
    for attempt in range(2):
        monkeypatch.setenv("ZSR_LAB_CACHE", str(tmp_path / f"cache{attempt}"))
        grades.append(grader.grade(build(classroom_clip), default_pgd))
    assert grades[0] == grades[1]
    assert all(len(list((tmp_path / f"cache{attempt}" / "results" / "grade").glob("*.pkl"))) == 1 for attempt in (0, 1))


def _shifted(by):
    return lambda d, x, y: (x + by).clamp(0, 1)


@pytest.mark.parametrize(
    "attack, message",
    [
        (_shifted(9 / 255), "perturbations leave the ε-ball"),
        (lambda d, x, y: x * 1.5, "leave the [0, 1] box"),
        (lambda d, x, y: x.flip(0), "is a perturbation of clean image"),
        (lambda d, x, y: x[:10], "one adversarial image per input image"),
        (lambda d, x, y: (y.zero_(), x)[1], "changed the labels"),
        (lambda d, x, y: x.clamp_(0.1, 0.9), "changed the clean images"),
        (lambda d, x, y: x.numpy(), "must return the adversarial images as one tensor"),
    ],
)
def test_the_grader_refuses_what_is_not_an_attack_under_its_threat_model(random_classroom_clip, attack, message):
    with pytest.raises(grader.InvalidAttack, match=re.escape(message)):
        grader.grade(defences.SaturatedLogits(random_classroom_clip), attack)


def test_a_perturbation_exactly_on_the_ball_is_accepted(random_classroom_clip):
    grade = grader.grade(defences.SaturatedLogits(random_classroom_clip), _shifted(EPS / 255))
    assert grade.n == 200 and grade.eps == EPS and grade.dataset == "fashion_mnist"


@pytest.mark.slow
def test_each_defence_raises_a_red_flag_and_the_undefended_model_none(classroom_clip):
    images, labels, _, _ = grader.graded_images(classroom_clip)
    images, labels = images[:50], labels[:50]

    def fired(model):  # without the black-box check, the slowest: the chapter's table runs it
        flags = zl.sanity.red_flags(model, images, labels, eps=EPS, n_classes=10, square_queries=0)
        return set(flags.loc[flags.fired, "flag"])

    assert fired(classroom_clip) == set()
    assert "the cross-entropy gradient vanishes" in fired(defences.BitDepthReduction(classroom_clip, bits=5))
    assert "answers change between two calls on the same images" in fired(defences.RandomNoise(classroom_clip))
    assert {"the cross-entropy gradient vanishes", "a margin loss beats the cross-entropy"} <= fired(
        defences.SaturatedLogits(classroom_clip)
    )
    assert "answers change between two calls on the same images" in fired(defences.CounterAttack(classroom_clip))


@pytest.mark.slow
def test_the_control_raises_no_flag_and_no_reference_attack_takes_it_below_its_worst_case(classroom_clip):
    control = zl.fit(zl.recipe("tecoa", "classroom"), progress=False).model  # the TeCoA chapter's run
    images, labels, _, _ = grader.graded_images(control)
    images, labels = images[:100], labels[:100]
    with torch.no_grad():
        right = control(images).argmax(1) == labels
    suite = zl.suites.parse_suite("pgd-10+aa-10")
    outcome = zl.suites.run_suite(control, suite.members_for(10), images[right], labels[right], EPS, n_classes=10)
    worst = 100 * outcome.robust.sum().item() / len(images)
    assert worst > 20  # really robust at this budget, unlike the pre-trained CLIP
    for attack in (
        lambda x, y: adaptive.bpda(control, lambda a: a, x, y, eps=EPS),
        lambda x, y: adaptive.eot(control, x, y, eps=EPS, draws=2),
        lambda x, y: adaptive.margin(control, x, y, eps=EPS),
    ):
        torch.manual_seed(0)
        adversarial = attack(images, labels)
        with torch.no_grad():
            robust = 100 * (control(adversarial).argmax(1) == labels).float().mean().item()
        assert robust >= worst - 2.0  # sampling noise of 100 images; not broken below the suite's worst case
    flags = zl.sanity.red_flags(control, images, labels, eps=EPS, n_classes=10, square_queries=200)
    assert not flags.fired.any(), flags.to_string()


def test_defences_pass_on_what_they_do_not_have_and_validate_their_options(random_classroom_clip):
    defence = defences.BitDepthReduction(random_classroom_clip, bits=5)
    assert defence.image_size == random_classroom_clip.image_size and defence.device == random_classroom_clip.device
    assert torch.equal(
        defence.transform(torch.tensor([0.0, 0.49 / 31, 0.51 / 31, 1.0])), torch.tensor([0.0, 0.0, 1 / 31, 1.0])
    )
    with pytest.raises(ValueError, match="bits must be between 1 and 8"):
        defences.BitDepthReduction(random_classroom_clip, bits=0)
    saturated = defences.SaturatedLogits(random_classroom_clip)
    images = torch.rand(4, 1, 28, 28)
    dimension = random_classroom_clip.encode_image(images).shape[-1]
    random_classroom_clip.set_classifier(torch.nn.functional.normalize(torch.randn(10, dimension), dim=-1))
    with torch.no_grad():
        assert torch.equal(saturated(images).argmax(1), random_classroom_clip(images).argmax(1))
