import pandas as pd
import pytest
import torch

import zsr_lab as zl


def test_table_records_the_protocol_and_matches_a_manual_count(classroom_clip):
    table = zl.evaluate_zero_shot(classroom_clip, ["digits"], n_examples=200, seed=3, progress=False)
    row = table.iloc[0]
    assert list(table.columns) == [
        "model",
        "pretrained",
        "dataset",
        "split",
        "template",
        "n",
        "accuracy",
        "accuracy_low",
        "accuracy_high",
        "attack",
        "precision",
        "seed",
    ]
    assert (row.model, row.pretrained, row.dataset, row.n, row.seed) == (
        "zsr-classroom-vit",
        "zsr_lab",
        "digits",
        200,
        3,
    )
    assert row.template == "A photo of the handwritten digit {}."

    data = zl.evaluate.subset(zl.load_dataset("digits", image_size=28, verbose=False), 200, seed=3)
    images, labels = zip(*[data[i] for i in range(len(data))])
    classroom_clip.set_classifier(zl.dataset_classifier(classroom_clip, "digits"))
    with torch.no_grad():
        predictions = classroom_clip(torch.stack(images)).argmax(1)
    manual = 100.0 * (predictions == torch.tensor(labels)).float().mean().item()
    assert row.accuracy == pytest.approx(manual)
    assert (row.accuracy_low, row.accuracy_high) == pytest.approx(zl.wilson_interval(round(manual * 2), 200))


def test_subset_is_fixed_by_the_seed_and_checked():
    data = list(range(100))
    assert list(zl.evaluate.subset(data, 10, seed=0)) == list(zl.evaluate.subset(data, 10, seed=0))
    assert list(zl.evaluate.subset(data, 10, seed=0)) != list(zl.evaluate.subset(data, 10, seed=1))
    assert zl.evaluate.subset(data, 1000) is data
    with pytest.raises(ValueError, match="positive"):
        zl.evaluate.subset(data, 0)


def test_template_override_changes_the_recorded_template(classroom_clip):
    table = zl.evaluate_zero_shot(classroom_clip, "faces", templates=["{}", "a photo of a {}."], progress=False)
    assert table.iloc[0].template == "{} | a photo of a {}."
    assert table.iloc[0].n == 100


def test_with_mean_appends_the_plain_mean():
    table = pd.DataFrame({"dataset": ["a", "b"], "n": [10, 30], "accuracy": [50.0, 70.0]})
    total = zl.with_mean(table)
    assert total.iloc[-1].dataset == "mean" and total.iloc[-1].accuracy == 60.0 and total.iloc[-1].n == 40


def test_bf16_autocast_agrees_with_fp32_and_bad_precision_is_rejected(classroom_clip):
    fp32 = zl.evaluate_zero_shot(classroom_clip, "digits", progress=False).iloc[0]
    bf16 = zl.evaluate_zero_shot(classroom_clip, "digits", precision="bf16", progress=False).iloc[0]
    assert bf16.precision == "bf16" and abs(bf16.accuracy - fp32.accuracy) < 2.0
    with pytest.raises(ValueError, match="precision must be one of"):
        zl.evaluate_zero_shot(classroom_clip, "digits", precision="fp8")
