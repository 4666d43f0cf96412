"""The "harden CLIP" challenge: held-out images, submissions refused with a reason, masked models scored by the
adaptive attacks their red flags call for, and grades that repeat."""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch

import zsr_lab as zl
from zsr_lab import challenge, defences
from zsr_lab.evaluate import subset_indices

# the classroom rules on fewer images: the same code path at a test's cost
SMALL = dataclasses.replace(
    challenge.CHALLENGES["classroom"],
    protocol=challenge.CHALLENGES["classroom"].protocol.replace(n_examples=60),
    flag_images=60,
    square_queries=100,
)


def test_the_held_out_images_are_none_a_chapter_shows():
    """Book evaluations take the first n ≤ 500 of the seed-0 order of a split; the challenge takes the rest."""
    for name, size in (("fashion_mnist", 10_000), ("digits", 899)):
        held_out = set(zl.datasets.held_out_indices(size, zl.datasets.HELD_OUT[name]))
        shown = set(subset_indices(size, zl.datasets.HELD_OUT[name], seed=0))
        assert held_out.isdisjoint(shown) and held_out | shown == set(range(size))
        assert shown >= set(subset_indices(size, 200, seed=0))  # every classroom protocol's images
    loaded = zl.load_dataset("digits_heldout", image_size=28, verbose=False)
    assert len(loaded) == 399 and loaded.indices == zl.datasets.held_out_indices(899, 500)
    assert zl.get_spec("digits_heldout").classnames == zl.get_spec("digits").classnames


@pytest.fixture(scope="module")
def tecoa():
    """The TeCoA chapter's run (trained once per test session's cache)."""
    return zl.fit(zl.recipe("tecoa", "classroom"), progress=False).model


@pytest.mark.slow
def test_tecoas_own_run_passes_and_does_not_beat_itself(tecoa, tmp_path):
    grade = zl.grade_model(tecoa, name="TeCoA again", board_file=tmp_path / "board.csv", challenge=SMALL)
    assert grade.passed and not grade.beats_tecoa
    assert grade.red_flags == () and grade.robust == grade.face_value == grade.tecoa
    assert grade.difference == grade.clean_difference == 0
    assert grade.verdict == grade.clean_verdict == zl.uncertainty.TIE
    low, high = grade.tecoa_clean_interval
    assert grade.tecoa_clean == grade.clean and low < grade.clean < high
    assert grade.clean >= SMALL.clean_floor and "Passed" in str(grade)
    board = zl.board.Board(tmp_path / "board.csv")
    assert [e.name for e in board.entries] == ["TeCoA (recipe)"]  # the same weights: one entry
    assert board.table()["level"].tolist() == ["passed"]


MASKED = {  # each defence of "Evaluations that lie" → the adaptive attack its red flags must call
    "bit depth": (lambda clip: defences.BitDepthReduction(clip, bits=5), "bpda"),
    "random noise": (lambda clip: defences.RandomNoise(clip, sigma=0.1), "eot"),
    "saturated logits": (lambda clip: defences.SaturatedLogits(clip), "margin"),
    "counter-attack": (lambda clip: defences.CounterAttack(clip, eps=4 / 255), "eot"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MASKED))
def test_a_masked_model_is_caught_and_scored_by_its_adaptive_attack(classroom_clip, tecoa, tmp_path, name):
    build, answer = MASKED[name]
    board_file = tmp_path / "board.csv"
    undefended = zl.grade_model(classroom_clip, name="CLIP", board_file=board_file, challenge=SMALL)
    assert undefended.red_flags == () and not undefended.passed
    defence = build(classroom_clip)
    grade = zl.grade_model(defence, board_file=board_file, challenge=SMALL)
    assert grade.red_flags and answer in grade.adaptive
    assert "bpda" not in grade.adaptive or hasattr(defence, "transform")  # BPDA goes through a transform
    if name == "saturated logits":  # no transform to differentiate through: the gradient-free attack instead
        assert "square" in grade.adaptive
    assert f"Red flags: {grade.red_flags[0]}" in str(grade)
    low, high = grade.face_value_interval
    assert f"the suite alone left {grade.face_value:.1f} % [{low:.1f}, {high:.1f}]" in str(grade)
    assert grade.robust <= grade.face_value and not grade.beats_tecoa
    if name == "saturated logits":  # the same predictions as the CLIP: never more robust than it
        assert grade.robust <= undefended.robust
    else:  # the suite alone over-states it; the adaptive attack takes it down
        assert grade.robust < grade.face_value - 10
    board = zl.board.Board(board_file)
    rows = board.entries
    flagged = next(e for e in rows if e.name == type(defence).__name__)
    assert "red flags" in flagged.checks and answer in flagged.checks and flagged.robust == pytest.approx(grade.robust)
    levels = board.table().set_index("model")["level"]
    assert levels["CLIP"] == "not passed"
    assert levels[type(defence).__name__] == ("passed" if grade.passed else "not passed")


@pytest.mark.slow
def test_grading_the_same_submission_twice_gives_the_same_row(classroom_clip, tmp_path, monkeypatch):
    """Computed twice, each time in an empty cache (so neither reads the other), for a randomised submission (on 30
    images a set: the rows must be equal, whatever their size)."""
    rules = dataclasses.replace(SMALL, protocol=SMALL.protocol.replace(n_examples=30), flag_images=30)
    grades = []
    for attempt in range(2):
        monkeypatch.setenv("ZSR_LAB_CACHE", str(tmp_path / f"cache{attempt}"))
        noisy = defences.RandomNoise(classroom_clip, sigma=0.1)
        torch.manual_seed(attempt)  # whatever state the reader's session is in
        noisy.generator.manual_seed(attempt + 7)
        grades.append(
            zl.grade_model(noisy, baseline=classroom_clip, board_file=tmp_path / f"board{attempt}.csv", challenge=rules)
        )
    first, second = (g.rows for g in grades)
    assert first.equals(second) and grades[0].robust == grades[1].robust
    again = zl.grade_model(noisy, baseline=classroom_clip, board_file=tmp_path / "board1.csv", challenge=rules)
    assert again.rows.equals(second)
    board = zl.evaluate.read_results_csv(tmp_path / "board1.csv")
    assert len(board) == 2 * len(rules.protocol.datasets)  # the baseline's rows and the submission's, once each


class FiveClasses(torch.nn.Module):
    """A wrapper that answers with the wrong number of logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images)[:, :5]


def test_a_submission_of_the_wrong_file_architecture_or_shape_is_refused(classroom_clip, scenes_clip, tmp_path):
    not_weights = tmp_path / "notes.txt"
    not_weights.write_text("my best model")
    with pytest.raises(challenge.SubmissionError, match=r"notes\.txt: not weights of the zsr-classroom-vit CLIP"):
        zl.grade_model(not_weights)
    scenes_weights = tmp_path / "scenes.pt"
    torch.save(scenes_clip.clip.state_dict(), scenes_weights)
    with pytest.raises(challenge.SubmissionError, match=r"scenes\.pt: not weights of the zsr-classroom-vit CLIP"):
        zl.grade_model(scenes_weights)
    with pytest.raises(challenge.SubmissionError, match=r"missing\.pt: no such weights file"):
        zl.grade_model(tmp_path / "missing.pt")
    wrong_size = "takes 56-px images; the classroom challenge grades the zsr-classroom-vit CLIP"
    with pytest.raises(challenge.SubmissionError, match=wrong_size):
        zl.grade_model(scenes_clip)
    with pytest.raises(
        challenge.SubmissionError, match=r"a OrderedDict of \d+ entries is not a submission: save a state dict"
    ):
        zl.grade_model(classroom_clip.clip.state_dict())
    with pytest.raises(challenge.SubmissionError, match="a Linear is not a submission"):
        zl.grade_model(torch.nn.Linear(2, 2))
    with pytest.raises(challenge.SubmissionError, match=r"returned \(2, 5\) for 2 images.*shaped \(2, 10\)"):
        zl.grade_model(FiveClasses(classroom_clip), board_file=tmp_path / "board.csv")
    assert not (tmp_path / "board.csv").exists()  # nothing graded, nothing written


def test_grades_go_to_the_cache_unless_a_board_file_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSR_LAB_CACHE", str(tmp_path / "cache"))
    assert challenge.board_path("classroom") == tmp_path / "cache" / "challenge" / "classroom" / "board.csv"
    assert challenge.board_path("full", "~/class.csv") == Path("~/class.csv").expanduser()


def test_a_board_file_refuses_another_grade_of_the_same_weights(tmp_path):
    row = dict(weights="abc", dataset="digits_heldout", attack="s", eps=4.0, clean_accuracy=80.0, robust_accuracy=30.0)
    path = challenge.append_to_board(tmp_path / "board.csv", [pd.DataFrame([row])])
    challenge.append_to_board(path, [pd.DataFrame([row])])  # the same grade again: kept once
    assert len(zl.evaluate.read_results_csv(path)) == 1
    with pytest.raises(zl.board.BoardError, match="already holds another grade of the weights abc"):
        challenge.append_to_board(path, [pd.DataFrame([dict(row, robust_accuracy=31.0)])])
    with pytest.raises(ValueError, match="a class board file is a .csv"):
        challenge.append_to_board(tmp_path / "board.json", [])
