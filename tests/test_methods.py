"""Loss modules against hand-computed cases, and the training attack's geometry."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zsr_lab.attacks import pgd_linf
from zsr_lab.methods import FARE, METHODS, PMGAFT, TeCoA, build_method


class ToyCLIP(nn.Module):
    """A stand-in for ZeroShotCLIP whose image embedding is the flattened input times ``gain``."""

    def __init__(self, class_embeddings, gain=1.0):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(float(gain)))
        self.class_embeddings = F.normalize(torch.as_tensor(class_embeddings, dtype=torch.float32), dim=-1)

    def encode_image(self, images):
        return self.gain * images.flatten(1)

    def logits(self, embedding):
        return 100.0 * F.normalize(embedding, dim=-1) @ self.class_embeddings.T

    def forward(self, images):
        return self.logits(self.encode_image(images))


def softmax(values):
    exps = [math.exp(v - max(values)) for v in values]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def unit(angle):
    return [math.cos(angle), math.sin(angle)]


def test_registry_holds_the_three_methods_and_names_the_fix():
    assert {"tecoa", "pmg_aft", "fare"} <= set(METHODS)
    with pytest.raises(ValueError, match="did you mean 'tecoa'"):
        build_method("teco")
    with pytest.raises(TypeError, match="bad option for method 'tecoa'"):
        build_method("tecoa", alpha=1)
    with pytest.raises(ValueError, match="form must be"):
        build_method("pmg_aft", form="official")


def test_tecoa_is_the_cross_entropy_of_the_scaled_adversarial_logits():
    model = ToyCLIP([[1, 0], [0, 1]])
    adversarial = torch.tensor([unit(0.0), unit(math.pi / 3)]).view(2, 1, 1, 2)
    labels = torch.tensor([1, 1])
    loss, terms = TeCoA()(model, None, adversarial, adversarial, labels, {})
    expected = [-math.log(softmax([100 * math.cos(a), 100 * math.sin(a)])[1]) for a in (0.0, math.pi / 3)]
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    assert terms["adv_accuracy"].item() == 0.5  # the 60° image is closer to class 1


@pytest.mark.parametrize("form", ["paper", "repository"])
def test_pmg_aft_kl_terms_match_hand_computed_distributions(form):
    angles_clean, angles_adv = [0.2, 1.0], [0.5, 1.3]
    model = ToyCLIP([[1, 0], [0, 1]])
    reference = ToyCLIP([[1, 0], [0, 1]], gain=1.0)
    clean = torch.tensor([unit(a) for a in angles_clean]).view(2, 1, 1, 2)
    adversarial = torch.tensor([unit(a) for a in angles_adv]).view(2, 1, 1, 2)
    # the frozen model sees the adversarial image through other weights: rotate what it returns
    rotation = 0.3
    reference.encode_image = lambda images: torch.stack(
        [torch.tensor(unit(math.atan2(float(v[1]), float(v[0])) - rotation)) for v in images.flatten(1)]
    )
    labels = torch.tensor([0, 1])
    method = PMGAFT(alpha=0.7, beta=2.0, form=form)
    loss, terms = method(model, reference, clean, adversarial, labels, {})

    scale = 100.0 if form == "paper" else 1.0

    def probs(angle, s):
        return softmax([s * math.cos(angle), s * math.sin(angle)])

    ce = [-math.log(probs(a, scale)[y]) for a, y in zip(angles_adv, [0, 1])]  # the official code: cosines here too
    kl_ref = [kl(probs(a - rotation, scale), probs(a, scale)) for a in angles_adv]
    kl_clean = [kl(probs(c, scale), probs(a, scale)) for c, a in zip(angles_clean, angles_adv)]
    reduce = (lambda v: sum(v) / 2) if form == "paper" else sum
    assert terms["ce"].item() == pytest.approx(sum(ce) / 2, rel=1e-5)
    assert terms["kl_reference"].item() == pytest.approx(reduce(kl_ref), rel=1e-4)
    assert terms["kl_clean"].item() == pytest.approx(reduce(kl_clean), rel=1e-4)
    assert loss.item() == pytest.approx(sum(ce) / 2 + 0.7 * reduce(kl_ref) + 2.0 * reduce(kl_clean), rel=1e-4)
    assert (method.pixel_stats is None) == (form == "paper")
    # the training attack maximises the same cross-entropy (plain cosines in the repository form)
    objective = method.attack_objective(model, adversarial, labels, {})
    assert objective.item() == pytest.approx(sum(ce) / 2, rel=1e-5)


def test_pmg_aft_clean_branch_is_not_detached():
    model = ToyCLIP([[1, 0], [0, 1]])
    clean = torch.tensor([unit(0.2)]).view(1, 1, 1, 2).requires_grad_(True)
    adversarial = torch.tensor([unit(0.9)]).view(1, 1, 1, 2)
    reference = ToyCLIP([[1, 0], [0, 1]])
    loss, _ = PMGAFT(alpha=0.0, beta=1.0)(model, reference, clean, adversarial, torch.tensor([0]), {})
    loss.backward()
    assert clean.grad.abs().sum() > 0


def test_fare_loss_is_the_mean_squared_distance_to_the_frozen_clean_embedding():
    model = ToyCLIP([[1, 0], [0, 1]], gain=1.0)
    reference = ToyCLIP([[1, 0], [0, 1]], gain=2.0)
    clean = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).view(2, 1, 1, 2)
    adversarial = torch.tensor([[3.0, 4.0], [1.0, 1.0]]).view(2, 1, 1, 2)
    method = FARE()
    context = method.prepare(model, reference, clean, None)
    loss, terms = method(model, reference, clean, adversarial, None, context)
    # targets: 2·(0, 0) and 2·(1, 1); distances 3² + 4² = 25 and 1 + 1 = 2 (unnormalised, summed over dims)
    assert loss.item() == pytest.approx((25 + 2) / 2)
    assert method.attack_objective(model, adversarial, None, context).item() == pytest.approx(13.5)
    assert terms["embedding_distance"].item() == pytest.approx(13.5)


def test_pgd_linf_takes_sign_steps_inside_the_ball_and_the_box():
    images = torch.tensor([[0.5, 0.5, 0.999, 0.001]]).view(1, 1, 2, 2)
    weights = torch.tensor([[1.0, -2.0, 3.0, -0.5]]).view(1, 1, 2, 2)
    objective = lambda adv: (weights * adv).sum()  # noqa: E731  gradient = weights everywhere
    eps, step = 4 / 255, 1 / 255
    one = pgd_linf(objective, images, eps=eps, step_size=step, steps=1)
    assert torch.allclose(one, (images + step * weights.sign()).clamp(0, 1))
    many = pgd_linf(objective, images, eps=eps, step_size=step, steps=10)
    expected = (images + eps * weights.sign()).clamp(0, 1)  # 10 steps saturate the 4/255 ball
    assert torch.allclose(many, expected)
    assert (many - images).abs().max() <= eps + 1e-7
    assert many.min() >= 0 and many.max() <= 1


def test_pgd_linf_random_start_and_parameter_gradients():
    torch.manual_seed(0)
    model = ToyCLIP([[1, 0, 0, 0], [0, 1, 0, 0]])
    images = torch.rand(8, 1, 2, 2)
    labels = torch.randint(0, 2, (8,))
    start = torch.rand_like(images)
    adv0 = pgd_linf(
        lambda a: F.cross_entropy(model(a), labels), images, eps=2 / 255, step_size=1 / 255, steps=0, start=start
    )
    assert torch.allclose(adv0, (images + (2 * start - 1) * 2 / 255).clamp(0, 1))
    adv = pgd_linf(
        lambda a: F.cross_entropy(model(a), labels), images, eps=2 / 255, step_size=1 / 255, steps=3, start=start
    )
    assert model.gain.grad is None  # the attack never touches the parameters' gradients
    assert F.cross_entropy(model(adv), labels) > F.cross_entropy(model(images), labels)


def test_momentum_sign_steps_follow_the_spec_formula():
    """v ← sign(0.9·v + sign(g)): where the gradient is zero, the previous direction continues."""
    images = torch.full((1, 1, 1, 2), 0.5)
    calls = []

    def objective(adv):  # step 1: gradient (+1, +1); step 2: gradient (−1, 0)
        calls.append(None)
        weights = torch.tensor([1.0, 1.0]) if len(calls) == 1 else torch.tensor([-1.0, 0.0])
        return (weights.view(1, 1, 1, 2) * adv).sum()

    step = 1 / 255
    adv = pgd_linf(objective, images, eps=8 / 255, step_size=step, steps=2, momentum=0.9)
    # first component: +1 then sign(0.9 − 1) = −1 → back to 0.5; second: +1 then sign(0.9 + 0) = +1
    assert torch.allclose(adv.flatten(), torch.tensor([0.5, 0.5 + 2 * step]))
    plain = pgd_linf(
        lambda a: (torch.tensor([1.0, 0.0]).view(1, 1, 1, 2) * a).sum(), images, eps=8 / 255, step_size=step, steps=2
    )
    assert torch.allclose(plain.flatten(), torch.tensor([0.5 + 2 * step, 0.5]))
