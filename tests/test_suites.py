import pytest
import torch
from torch import nn

import zsr_lab as zl
from zsr_lab import apgd, suites


class Linear(nn.Module):
    def __init__(self, features, classes):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(features, classes)

    def forward(self, x):
        return 20 * self.linear(x.flatten(1))


def test_named_suites_expand_to_their_members():
    labels = lambda text: [m.label for m in suites.parse_suite(text).members]  # noqa: E731
    assert labels("aa") == ["APGD-CE-100", "APGD-T-100"]
    assert labels("aa-20") == ["APGD-CE-20", "APGD-T-20"]
    assert labels("aa-standard") == ["APGD-CE-100", "APGD-T-100", "FAB-T-100", "SQUARE-5000"]
    assert labels("aa-standard-10") == ["APGD-CE-10", "APGD-T-10", "FAB-T-10", "SQUARE-5000"]
    assert labels("papers-aa") == ["APGD-CE-100", "APGD-DLR-100"]
    assert labels("PGD-100 + cw-100+aa") == ["PGD-100", "CW-100", "APGD-CE-100", "APGD-T-100"]
    assert suites.parse_suite("pgd-10").label == "PGD-10" and suites.parse_suite("aa").label == "aa"
    assert suites.parse_suite("pgd-100 + aa").text == "pgd-100+aa"


def test_aa_adapts_to_the_classes_and_hand_written_members_do_not():
    aa = suites.parse_suite("aa")
    assert [m.label for m in aa.members_for(10)] == ["APGD-CE-100", "APGD-T-100"]
    assert [m.label for m in aa.members_for(3)] == ["APGD-CE-100", "APGD-DLR-100"]
    assert [m.label for m in aa.members_for(2)] == ["APGD-CE-100"]
    assert [m.label for m in suites.parse_suite("apgd_dlr-100+aa").members_for(3)] == ["APGD-DLR-100", "APGD-CE-100"]
    with pytest.raises(ValueError, match="APGD-T-100 needs at least 4 classes, but this dataset has 3"):
        suites.parse_suite("pgd-10+apgd_t-100").members_for(3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("aaa", "did you mean the suite 'aa'"),
        ("", "a string such as"),
        ("apgd", "now a suite"),
        ("pgd-10+pgd_l2-10", "mixes ℓ∞ and ℓ2"),
        ("autoattack", "aa-standard"),
    ],
)
def test_bad_suites_say_what_exists(text, message):
    with pytest.raises(ValueError, match=message):
        suites.parse_suite(text)


def test_apgd_checkpoints_follow_the_reference_schedule():
    assert apgd.checkpoints(100) == [21, 40, 56, 69, 79, 86, 92, 98]
    assert apgd.checkpoints(10) == [1, 2, 3, 4, 5, 6, 7, 8, 9]  # 2 iterations, then every one


def test_dlr_losses_on_hand_computed_logits():
    logits = torch.tensor([[4.0, 3.0, 1.0, 0.0], [1.0, 5.0, 2.0, 0.0]])
    labels = torch.tensor([0, 0])
    # 0: correct, margin to the runner-up 1, π1 − π3 = 3 → −1/3; 1: wrong, z_y − max other = −4, π1 − π3 = 4 → 1
    torch.testing.assert_close(apgd.dlr_loss(logits, labels), torch.tensor([-1 / 3, 1.0]))
    targets = torch.tensor([2, 2])
    # 0: −(4 − 1) / (4 − (1 + 0) / 2); 1: −(1 − 2) / (5 − (1 + 0) / 2)
    torch.testing.assert_close(apgd.targeted_dlr_loss(logits, labels, targets), torch.tensor([-3 / 3.5, 1 / 4.5]))


@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr_targeted"])
def test_apgd_early_exit_changes_no_verdict_and_saves_iterations(loss):
    """Every APGD quantity is per image, so dropping fooled images mid-run leaves the others' trajectories as
    they were: the same images are fooled, with fewer forward-backward passes."""
    model = Linear(3 * 8 * 8, 10)
    images, labels = torch.rand(48, 3, 8, 8), torch.randint(0, 10, (48,))
    fooled, spent = {}, {}
    for early_stop in (True, False):
        attack = apgd.APGD(model, eps=3 / 255, steps=30, loss=loss, n_targets=3, seed=7, early_stop=early_stop)
        adv = attack(images, labels)
        assert (adv - images).abs().max() <= 3 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            fooled[early_stop] = model(adv).argmax(1) != labels
        spent[early_stop] = attack.iterations
        if early_stop:  # an image that left before its budget was fooled, and is returned where it was fooled
            budget = 31 * (3 if loss == "dlr_targeted" else 1)
            assert fooled[True][attack.iterations < budget].all()
    assert 0 < fooled[True].sum() < 48
    torch.testing.assert_close(fooled[True], fooled[False])
    assert spent[True].sum() < spent[False].sum()
    runs = 3 if loss == "dlr_targeted" else 1
    assert spent[False][~fooled[False]].eq(31 * runs).all()  # the robust ones take every pass of every run


def test_worst_case_is_robust_only_against_every_member():
    model = Linear(3 * 8 * 8, 10)
    images, labels = torch.rand(64, 3, 8, 8), torch.randint(0, 10, (64,))
    with torch.no_grad():
        keep = model(images).argmax(1) == labels
    images, labels = images[keep], labels[keep]
    members = suites.parse_suite("pgd-5+cw-5+aa-10").members_for(10)
    alone = suites.run_suite(model, members, images, labels, 2, n_classes=10, cascade=False)
    cascade = suites.run_suite(model, members, images, labels, 2, n_classes=10)
    every = torch.stack(alone.robust_alone).all(0)
    torch.testing.assert_close(alone.robust, every)
    for before, after in zip(cascade.robust_after, cascade.robust_after[1:]):
        assert not (after & ~before).any()  # robust accuracy never rises along the cascade
    # the cascade attacks fewer images: members after the first never touch an image already broken
    broken_first = ~cascade.robust_after[0]
    assert (cascade.iterations[1][broken_first] == 0).all()
    assert sum(int(i.sum()) for i in cascade.iterations) < sum(int(i.sum()) for i in alone.iterations)
    assert all(size <= 2 / 255 + 1e-6 for size in cascade.max_perturbation)


@pytest.mark.slow
def test_aa_is_not_weaker_than_the_reference_autoattack(classroom_clip):
    """zsr_lab's aa against pyautoattack (the packaged reference implementation) run as RobustVLM runs it
    (APGD-CE then APGD-T, top-9 targets, 100 iterations, one restart), on the same classroom images."""
    pyautoattack = pytest.importorskip("pyautoattack")
    clip = classroom_clip
    clip.set_classifier(zl.dataset_classifier(clip, "digits"))
    data = zl.load_dataset("digits", image_size=28, verbose=False)
    x, y = map(torch.stack, zip(*[(data[i][0], torch.tensor(data[i][1])) for i in range(0, 640, 10)]))
    with torch.no_grad():
        keep = clip(x).argmax(1) == y
    x, y = x[keep], y[keep]
    eps = 3
    with zl.models.frozen_parameters(clip):
        ours = suites.run_suite(clip, suites.parse_suite("aa").members_for(10), x, y, eps, n_classes=10).robust
        reference = pyautoattack.AutoAttack(
            clip, norm="Linf", eps=eps / 255, version="custom", attacks=["apgd-ce", "apgd-t"], seed=0
        )
        reference.verbose = False
        reference.apgd.n_restarts, reference.apgd_targeted.n_restarts = 1, 1
        reference.apgd_targeted.n_target_classes = 9
        adv = reference.run_standard_evaluation(x, y, batch_size=256)[0]
        with torch.no_grad():
            theirs = clip(adv).argmax(1) == y
    assert 0 < int(theirs.sum()) < len(y)  # a budget where the attack matters
    assert int(ours.sum()) <= int(theirs.sum())
    assert int((ours & ~theirs).sum()) <= 1  # and per image they agree up to a random start


def test_options_after_a_colon_set_targets_and_restarts():
    suite = suites.parse_suite("pgd-10+aa-10:targets=3")
    assert [(m.label, m.targets) for m in suite.members] == [("PGD-10", 9), ("APGD-CE-10", 9), ("APGD-T-10", 3)]
    assert suite.text == "pgd-10+aa-10:targets=3"  # what rows are keyed by
    assert suites.parse_suite("cw-5:restarts=2").members[0].restarts == 2
    with pytest.raises(ValueError, match="cannot read the option 'target=3'"):
        suites.parse_suite("aa:target=3")
