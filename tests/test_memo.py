"""Results cached by content (zsr_lab.memo) and the log of where the time goes (zsr_lab.worklog)."""

import json

import pandas.testing as pd_testing
import pytest
import torch

import zsr_lab as zl
from zsr_lab import defences, grader, memo, sanity, worklog
from zsr_lab.models import CLASSROOM_MODEL


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSR_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_content_digest_follows_values_not_identity():
    a = {"eps": 4.0, "x": torch.arange(6).view(2, 3)}
    assert memo.content_digest(a) == memo.content_digest({"x": torch.arange(6).view(2, 3), "eps": 4.0})
    assert memo.content_digest(a) != memo.content_digest({"eps": 4.0, "x": torch.arange(6).view(3, 2)})
    assert memo.content_digest(a) != memo.content_digest({"eps": 4, "x": torch.arange(6).view(2, 3)})  # int ≠ float
    assert memo.content_digest([1, 2]) != memo.content_digest((1, 2))
    with pytest.raises(memo.Uncacheable, match="object"):
        memo.content_digest({"thing": object()})


budget = 4.0


def attack_reading_budget(defence, images, labels):
    return images + budget / 255


def test_function_digest_follows_the_values_the_function_reads():
    first = memo.function_digest(attack_reading_budget)
    assert memo.function_digest(attack_reading_budget) == first
    globals()["budget"] = 8.0
    try:
        assert memo.function_digest(attack_reading_budget) != first
    finally:
        globals()["budget"] = 4.0

    def closure(scale):
        return lambda x: x * scale

    assert memo.function_digest(closure(2)) != memo.function_digest(closure(3))


def test_remember_computes_once_per_content_and_recovers_from_a_damaged_file(fresh_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    assert memo.remember("demo", {"n": 1}, compute) == ({"value": 1}, False)
    assert memo.remember("demo", {"n": 1}, compute) == ({"value": 1}, True)
    assert memo.remember("demo", {"n": 2}, compute) == ({"value": 2}, False)
    assert len(list((fresh_cache / "results" / "demo").glob("*.pkl"))) == 2
    for path in (fresh_cache / "results" / "demo").glob("*.pkl"):
        path.write_bytes(b"cut short")
    with pytest.warns(UserWarning, match="unreadable cached result"):
        result, cached = memo.remember("demo", {"n": 1}, compute)
    assert (result, cached) == ({"value": 3}, False) and len(calls) == 3
    assert memo.remember("demo", {"n": 1}, compute) == ({"value": 3}, True)  # rewritten, readable again
    assert memo.remember("demo", {"thing": object()}, compute) == ({"value": 4}, False)  # uncacheable: computed


def test_remember_leaves_the_random_sources_as_computing_would(fresh_cache):
    generator = torch.Generator()

    def draws():
        generator.manual_seed(7)
        return torch.rand(3, generator=generator)

    first, cached = memo.remember("draws", {"seed": 7}, draws, random_sources=[generator])
    after_computing = torch.rand(2, generator=generator)
    generator.manual_seed(123)
    again, cached = memo.remember("draws", {"seed": 7}, draws, random_sources=[generator])
    assert cached and torch.equal(first, again)
    assert torch.equal(torch.rand(2, generator=generator), after_computing)


def test_worklog_times_nested_work_once(fresh_cache):
    with worklog.work("fitting", "outer") as outer:
        with worklog.work("evaluating", "inner") as inner:
            inner.cached = True
            sum(range(200_000))
        sum(range(200_000))
    assert not outer.cached
    log = worklog.read_worklog()
    assert list(log["what"]) == ["inner", "outer"]
    inner_row, outer_row = log.iloc[0], log.iloc[1]
    assert inner_row["cached"] and inner_row["depth"] == 1 and outer_row["depth"] == 0
    assert outer_row["self_seconds"] == pytest.approx(outer_row["seconds"] - inner_row["seconds"], abs=2e-3)
    with open(worklog.log_path(), "a") as log_file:
        log_file.write('{"kind": "draw')  # a line cut short by a crash
    assert len(worklog.read_worklog()) == 2
    with pytest.raises(ValueError, match="unknown kind of work 'thinking'"):
        with worklog.work("thinking", "x"):
            pass
    with pytest.raises(ValueError, match="unknown kind of work 'typing'"):
        worklog.record_span("typing", "x", 0.0, 1.0)


def test_timed_logs_each_call_under_the_function_name_and_keeps_its_result(fresh_cache):
    @worklog.timed("drawing")
    def figure(value):
        return value * 2

    assert figure(21) == 42 and figure.__name__ == "figure"
    worklog.record_span("rendering", "book (html)", 100.0, 7.5)
    log = worklog.read_worklog()
    assert list(zip(log["kind"], log["what"])) == [("drawing", "figure"), ("rendering", "book (html)")]
    assert log.iloc[1][["start", "seconds", "self_seconds"]].tolist() == [100.0, 7.5, 7.5]


def test_a_defence_fingerprint_follows_its_settings_its_random_state_and_its_model(random_classroom_clip):
    clip = random_classroom_clip
    clip.set_classifier(torch.nn.functional.normalize(torch.randn(3, clip.embed_dim), dim=-1))
    noisy = defences.RandomNoise(clip, sigma=0.1)
    same = noisy.content_fingerprint()
    assert defences.RandomNoise(clip, sigma=0.1).content_fingerprint() == same
    assert defences.RandomNoise(clip, sigma=0.2).content_fingerprint() != same
    noisy(torch.rand(2, 3, 28, 28))  # draws noise: the random source moved on
    assert noisy.content_fingerprint() != same
    before = clip.content_fingerprint()
    clip.set_classifier(torch.nn.functional.normalize(torch.randn(3, clip.embed_dim), dim=-1))
    assert clip.content_fingerprint() != before  # another classifier, same weights
    assert (
        defences.BitDepthReduction(clip, bits=4).content_fingerprint()
        != defences.BitDepthReduction(clip, bits=5).content_fingerprint()
    )


def test_changed_weights_at_the_same_path_are_measured_again(fresh_cache, tmp_path, monkeypatch):
    """Red flags are cached by the weights' content: other weights saved at the same path recompute."""
    computed = []
    real = sanity._red_flags
    monkeypatch.setattr(sanity, "_red_flags", lambda *a, **k: computed.append(1) or real(*a, **k))
    path = tmp_path / "weights.pt"
    images = torch.rand(6, 3, 28, 28)
    labels = torch.arange(6) % 3

    def flags_of_file():
        model = zl.load_clip(CLASSROOM_MODEL, str(path), device="cpu")
        text = torch.randn(3, model.embed_dim, generator=torch.Generator().manual_seed(0))
        model.set_classifier(torch.nn.functional.normalize(text, dim=-1))
        return sanity.red_flags(model, images, labels, eps=4, n_classes=3, square_queries=0)

    torch.manual_seed(1)
    torch.save(zl.load_clip(CLASSROOM_MODEL, None, device="cpu").clip.state_dict(), path)
    first = flags_of_file()
    assert len(computed) == 1
    assert flags_of_file().equals(first) and len(computed) == 1  # same content: read
    torch.manual_seed(2)
    torch.save(zl.load_clip(CLASSROOM_MODEL, None, device="cpu").clip.state_dict(), path)
    flags_of_file()
    assert len(computed) == 2  # same path, new weights: measured again
    kinds = worklog.read_worklog()
    assert list(kinds.loc[kinds["what"] == "red flags", "cached"]) == [False, True, False]


@pytest.mark.slow
def test_a_cached_grade_equals_the_computed_one_and_leaves_the_same_random_state(fresh_cache, classroom_clip):
    noisy = defences.RandomNoise(classroom_clip, sigma=0.1)
    eps = grader.GRADED_SETS["classroom"][1]

    def pgd(defence, images, labels):
        return zl.attacks.build_attack(defence, "pgd-5", eps, n_classes=10)(images, labels)

    computed = grader.grade(noisy, pgd)
    state_after, noise_state = torch.get_rng_state(), noisy.generator.get_state()
    torch.manual_seed(99)
    read = grader.grade(noisy, pgd)
    assert read == computed
    assert torch.equal(torch.get_rng_state(), state_after) and torch.equal(noisy.generator.get_state(), noise_state)
    log = worklog.read_worklog()
    assert list(log.loc[log["what"] == "grade RandomNoise", "cached"]) == [False, True]
    stored = sorted(p.parent.name for p in (fresh_cache / "results").glob("*/*.pkl"))
    assert stored == ["grade", "undefended_pgd50"]
    assert json.loads(worklog.log_path().read_text().splitlines()[-1])["kind"] == "evaluating"


def test_zero_shot_accuracy_is_read_the_second_time_and_computed_again_for_other_weights_or_prompts(
    fresh_cache, random_classroom_clip, monkeypatch
):
    from zsr_lab import evaluate

    first = zl.evaluate_zero_shot(random_classroom_clip, ["digits", "textures"], progress=False)
    computed = []
    real = evaluate.zero_shot_accuracy
    monkeypatch.setattr(evaluate, "zero_shot_accuracy", lambda *a, **k: computed.append(1) or real(*a, **k))
    again = zl.evaluate_zero_shot(random_classroom_clip, ["digits", "textures"], progress=False)
    pd_testing.assert_frame_equal(first, again)
    assert computed == []
    assert random_classroom_clip.class_embeddings.shape[0] == 3  # the last dataset's classifier, as computing leaves it
    zl.evaluate_zero_shot(random_classroom_clip, ["digits"], templates=["a {}"], progress=False)
    assert computed == [1]  # other prompts: another classifier
    with torch.no_grad():
        random_classroom_clip.clip.visual.proj.mul_(-1)
    other = zl.evaluate_zero_shot(random_classroom_clip, ["digits"], progress=False)
    assert computed == [1, 1]  # other weights
    log = worklog.read_worklog()
    assert log.loc[log["what"] == "zero-shot", "cached"].tolist() == [False, True, False, False]
    assert other["n"].item() == first["n"].iloc[0]
