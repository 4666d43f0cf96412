import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import zsr_lab as zl
from zsr_lab import attacks
from zsr_lab.precision import PrecisionModel


class TinyModel(nn.Module):
    """A linear classifier over [0,1] images of any shape: fast enough for property tests."""

    def __init__(self, features: int, classes: int = 4, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(features, classes).to(dtype)

    def forward(self, x):
        return 10 * self.linear(x.flatten(1))


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    channels=st.sampled_from([1, 3]),
    size=st.integers(2, 12),
    eps=st.floats(0.0, 32.0),
    steps=st.integers(1, 3),
    name=st.sampled_from(["pgd", "cw", "pgd_l2"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_adversarial_images_stay_in_the_eps_ball_and_the_box(batch, channels, size, eps, steps, name, dtype):
    model = TinyModel(channels * size * size, dtype=dtype)
    images = torch.rand(batch, channels, size, size, dtype=dtype)
    labels = torch.randint(0, 4, (batch,))
    config = attacks.AttackConfig(name, steps=steps, step_size=eps / 2 + 0.5 if name != "pgd_l2" else 0.1)
    adv = attacks.build_attack(model, config, eps if name != "pgd_l2" else eps / 32, n_classes=4)(images, labels)
    delta = (adv - images).flatten(1)
    radius = config.pixel_eps(eps if name != "pgd_l2" else eps / 32)
    size_of_delta = delta.abs().amax(1) if config.norm == "Linf" else delta.norm(dim=1)
    assert adv.dtype == dtype and adv.shape == images.shape
    assert (size_of_delta <= radius + 1e-6).all()
    assert adv.min() >= 0 and adv.max() <= 1


def test_margin_loss_on_a_hand_computed_case():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    labels = torch.tensor([0, 2])
    # example 0: z_y = 3, best other = 2 → −relu(1 + κ); example 1: z_y = 1, best other = 5 → −relu(−4 + κ)
    torch.testing.assert_close(attacks.margin_loss(logits, labels, kappa=2.0), torch.tensor([-3.0, 0.0]))
    torch.testing.assert_close(attacks.margin_loss(logits, labels, kappa=50.0), torch.tensor([-51.0, -46.0]))


def test_attack_names_and_budgets_are_checked():
    assert attacks.parse_attack("pgd-100") == attacks.AttackConfig("pgd", 100)
    assert attacks.parse_attack("CW-10").label == "CW-10"
    assert attacks.parse_attack("apgd_t").steps == 100 and attacks.parse_attack("square").steps == 5000
    assert attacks.parse_attack("apgd_t-20").label == "APGD-T-20"
    assert attacks.AttackConfig("pgd").pixel_eps(1) == pytest.approx(1 / 255)
    assert attacks.AttackConfig("pgd").pixel_step(4) == pytest.approx(1 / 255)
    with pytest.raises(ValueError, match="unknown attack 'fgsm'"):
        attacks.parse_attack("fgsm-1")
    with pytest.raises(ValueError, match="NAME-STEPS"):
        attacks.parse_attack("pgd-ten")
    with pytest.raises(ValueError, match="ε must be ≥ 0"):
        attacks.AttackConfig("pgd").pixel_eps(-1)
    with pytest.raises(TypeError, match="ε must be a number"):
        attacks.AttackConfig("pgd").pixel_eps("1/255")
    with pytest.raises(ValueError, match="positive integer"):
        attacks.AttackConfig("pgd", steps=0)
    with pytest.raises(ValueError, match="ε must be ≥ 0"):
        attacks.AttackConfig("pgd").pixel_eps(float("nan"))
    with pytest.raises(ValueError, match="larger than the whole pixel range"):
        attacks.AttackConfig("pgd").pixel_eps(300)
    with pytest.raises(ValueError, match="did you mean 'apgd_t'"):
        attacks.parse_attack("apgd_tt-10")
    with pytest.raises(ValueError, match="now a suite: write papers-aa"):
        attacks.parse_attack("apgd-10")


def test_attacks_see_the_model_without_a_second_normalisation_also_torchattacks(classroom_clip):
    """The package does not install torchattacks (its metadata pins requests~=2.25.1), but a reader may attack a
    ZeroShotCLIP with it: it must not find mean/std on the model and normalise the images twice."""
    torchattacks = pytest.importorskip("torchattacks")
    classroom_clip.set_classifier(zl.dataset_classifier(classroom_clip, "digits"))
    x = torch.rand(4, 3, 28, 28)
    ours, theirs = attacks.build_attack(classroom_clip, "pgd-1", 1, n_classes=10), torchattacks.PGD(classroom_clip)
    with torch.no_grad():
        torch.testing.assert_close(ours.get_logits(x), classroom_clip(x))
        torch.testing.assert_close(theirs.get_logits(x), classroom_clip(x))
    assert theirs.normalization_used is None


def test_the_package_does_not_require_torchattacks():
    from importlib.metadata import requires

    assert not [r for r in requires("zsr_lab") if r.split(";")[0].strip().startswith("torchattacks")]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_gradients_point_the_same_way(random_classroom_clip, precision):
    clip = random_classroom_clip
    clip.set_classifier(zl.zero_shot_classifier(clip, ["a", "b", "c"], ["{}"]))
    x = torch.rand(4, 3, 28, 28)
    labels = torch.tensor([0, 1, 2, 0])
    grads = {}
    for p in ("fp32", precision):
        image = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(PrecisionModel(clip, p)(image), labels)
        grads[p] = torch.autograd.grad(loss, image)[0]
    agreement = (grads["fp32"].sign() == grads[precision].sign()).float().mean()
    assert grads[precision].abs().sum() > 0 and agreement > 0.8
    if precision == "fp16":  # the gradient scale: 2^12 larger, same direction
        ratio = (grads["fp16"].norm() / grads["fp32"].norm()).item()
        assert math.log2(ratio) == pytest.approx(12, abs=0.5)


def test_restarts_never_weaken_the_attack(classroom_clip):
    classroom_clip.set_classifier(zl.dataset_classifier(classroom_clip, "digits"))
    data = zl.load_dataset("digits", image_size=28, verbose=False)
    x, y = map(torch.stack, zip(*[(data[i][0], torch.tensor(data[i][1])) for i in range(64)]))
    results = {}
    for restarts in (1, 3):
        torch.manual_seed(0)
        adv = attacks.build_attack(classroom_clip, attacks.AttackConfig("pgd", 2, restarts=restarts), 2, n_classes=10)(
            x, y
        )
        with torch.no_grad():
            results[restarts] = (classroom_clip(adv).argmax(1) == y).sum().item()
    assert results[3] <= results[1]


@pytest.mark.parametrize("name", ["apgd_ce", "apgd_dlr", "apgd_t", "fab_t", "square"])
def test_every_suite_member_stays_in_the_eps_ball_and_the_box(name):
    model = TinyModel(3 * 6 * 6, classes=10)
    images, labels = torch.rand(6, 3, 6, 6), torch.randint(0, 10, (6,))
    attack = attacks.build_attack(
        model, attacks.AttackConfig(name, steps=5 if name != "square" else 50), 8, n_classes=10
    )
    adv = attack(images, labels)
    assert (adv - images).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert len(attacks.attack_iterations(attack, 6)) == 6


def test_members_refuse_datasets_with_too_few_classes():
    with pytest.raises(ValueError, match="APGD-T-100 needs at least 4 classes, the dataset has 3"):
        attacks.build_attack(TinyModel(12, classes=3), "apgd_t-100", 1, n_classes=3)
    with pytest.raises(ValueError, match="APGD-DLR-100 needs at least 3 classes"):
        attacks.build_attack(TinyModel(12, classes=2), "apgd_dlr-100", 1, n_classes=2)


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_any_step_pgd_is_last_iterate_pgd_stopped_early(loss):
    """Early stopping changes no surviving trajectory: an image robust under the any-step rule is robust under
    the last-iterate rule, and stopping only saves iterations."""
    model = TinyModel(3 * 8 * 8, classes=10)
    images, labels = torch.rand(64, 3, 8, 8), torch.randint(0, 10, (64,))
    results = {}
    for early_stop in (True, False):
        torch.manual_seed(1)
        attack = attacks.SignPGD(model, eps=2 / 255, alpha=0.5 / 255, steps=20, loss=loss, early_stop=early_stop)
        adv = attack(images, labels)
        with torch.no_grad():
            results[early_stop] = (model(adv).argmax(1) == labels, attack.iterations.clone())
    (robust_any, spent_any), (robust_last, spent_last) = results[True], results[False]
    assert not (robust_any & ~robust_last).any()  # any-step is at least as strong
    assert (spent_last == 20).all() and (spent_any <= 20).all() and spent_any.sum() < spent_last.sum()
    torch.testing.assert_close(robust_any[spent_any == 20], robust_last[spent_any == 20])
