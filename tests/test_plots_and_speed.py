import matplotlib
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

import zsr_lab as zl  # noqa: E402
from zsr_lab import speed  # noqa: E402


def test_figures_name_their_scale():
    table = pd.DataFrame(
        {
            "dataset": ["a", "b", "a", "b"],
            "eps": [0, 0, 4, 4],
            "attack": ["PGD-10"] * 4,
            "robust_accuracy": [90.0, 80.0, 20.0, 10.0],
            "accuracy": [90.0, 80.0, 20.0, 10.0],
        }
    )
    ax = zl.plots.plot_accuracy(table[table.eps == 0], scale="classroom")
    assert "classroom scale" in ax.get_title() and "mean 85.0" in ax.get_title()
    assert [t.get_text() for t in ax.texts] == ["90.0", "80.0"]  # bar labels as the tables round
    both = table[table.eps == 4].assign(clean_accuracy=[95.0, 85.0])
    ax = zl.plots.plot_clean_and_robust(both, scale="classroom", title="Clean vs robust")
    assert "mean clean: 90.0, robust: 15.0 %" in " ".join(ax.get_title().split())  # words, not column names
    assert "classroom scale" in zl.plots.plot_robustness_curve(table, scale="classroom").get_title()


def test_adversarial_figure_colours_right_and_wrong_predictions():
    clean, adv = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    fig = zl.plots.show_adversarial(clean, adv, [0, 1], [1, 1], [0, 1], ["cat", "dog"], eps_label="ε = 4/255")
    axes = fig.axes
    assert len(axes) == 6
    bottom = axes[4:]  # adversarial row: image 0 now wrong (red), image 1 still right (green)
    assert [a.title.get_color() for a in bottom] == ["tab:red", "tab:green"]


def test_banner_labels_classroom_numbers_and_unknown_scale_is_an_error():
    assert "do not reproduce the papers" in zl.get_scale("classroom").banner()
    with pytest.raises(ValueError, match="'classroom'.*'full'"):
        zl.get_scale("medium")


def test_banner_says_which_device_and_offers_full_scale_when_a_gpu_is_there(monkeypatch):
    assert "on cpu" in zl.get_scale("classroom").banner()
    assert "No GPU found" in zl.get_scale("full").banner()
    monkeypatch.setattr(zl.settings, "default_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    banner = zl.get_scale("classroom").banner()
    assert "on cuda" in banner and 'A GPU is available (Tesla T4): set scale = "full"' in banner
    assert "No GPU found" not in zl.get_scale("full").banner()


def test_flop_count_includes_the_attention_projections(random_classroom_clip):
    clip = random_classroom_clip
    clip.set_classifier(torch.nn.functional.normalize(torch.randn(3, clip.embed_dim), dim=-1))
    tokens, width, layers = 1 + 16, 128, 3
    # qkv + output projections (4 w²) and the MLP (8 w²) per token and layer; 2 FLOPs per multiply-add
    lower_bound = layers * 2 * tokens * 12 * width**2
    assert speed.forward_flops(clip, torch.rand(1, 3, 28, 28)) >= lower_bound
    assert not clip.training  # the counter leaves the model in eval mode


def test_naive_reference_loop_is_the_same_attack(classroom_clip):
    classroom_clip.set_classifier(zl.dataset_classifier(classroom_clip, "digits"))
    data = zl.load_dataset("digits", image_size=28, verbose=False)
    x, y = map(torch.stack, zip(*[(data[i][0], torch.tensor(data[i][1])) for i in range(64)]))
    tokens = classroom_clip.tokenizer(
        [f"A photo of the handwritten digit {n}." for n in zl.get_spec("digits").classnames]
    )
    torch.manual_seed(0)
    naive = speed.naive_pgd(classroom_clip, x, y, tokens, 4 / 255, 1 / 255, 5)
    torch.manual_seed(0)
    fast = zl.attacks.build_attack(classroom_clip, "pgd-5", 4, n_classes=10)(x, y)
    with torch.no_grad():
        still_right = [(classroom_clip(a).argmax(1) == y).sum().item() for a in (naive, fast)]
    assert (naive - x).abs().max() <= 4 / 255 + 1e-6
    assert abs(still_right[0] - still_right[1]) <= 4


def test_suite_benchmark_counts_the_passes_each_way(classroom_clip):
    from zsr_lab import speed_suites

    fast = speed_suites.count_passes("aa-3", 8, cascade=True, early_exit=True, progress=False)
    slow = speed_suites.count_passes("aa-3", 8, cascade=False, early_exit=False, progress=False)
    assert fast["images"] == slow["images"] > 400
    # about the same verdicts (the cascade changes the random starts of later members, early exits change
    # nothing), fewer passes: 4 per image and run without exits
    assert abs(fast["robust"] - slow["robust"]) <= 1.0
    assert slow["passes"]["APGD-CE-3"] == 4 and fast["passes"]["APGD-CE-3"] < 4
    assert sum(fast["passes"].values()) < sum(slow["passes"].values())
    assert 1 <= fast["passes_to_break"] <= 4
    # the projection: survivors take the suite's whole budget, the others what breaking took on the classroom CLIP
    passes = speed_suites.projected_passes({"passes_to_break": 10.0}, 0.6, 0.4, 1010)
    assert passes == pytest.approx(0.4 * 1010 + 0.2 * 10)


def test_text_progress_prints_one_line_when_a_bar_that_stays_finishes(monkeypatch, capsys):
    from zsr_lab import progress

    monkeypatch.setenv(progress.PROGRESS_ENV, "text")
    assert sum(progress.progress_bar(range(5), desc="steps")) == 10
    for _ in progress.progress_bar(range(3), desc="passing", leave=False):
        pass
    bar = progress.progress_bar(total=4, desc="manual")
    bar.update(4)
    bar.close()
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("steps: 100%") and "5/5" in lines[0]
    assert lines[1].startswith("manual: 100%") and "4/4" in lines[1]
    monkeypatch.setenv(progress.PROGRESS_ENV, "")
    assert not isinstance(progress.progress_bar(range(2), disable=True), progress.TextProgress)


def test_budget_series_shows_one_tile_per_budget_coloured_by_the_prediction(classroom_clip):
    classroom_clip.set_classifier(zl.dataset_classifier(classroom_clip, "digits"))
    data = zl.load_dataset("digits", image_size=28, verbose=False)
    image, label = data[0][0][None], torch.tensor([data[0][1]])
    with torch.no_grad():
        right = classroom_clip(image).argmax(1).item() == label.item()
    fig = zl.plots.show_budget_series(
        classroom_clip, image, label, zl.get_spec("digits").classnames, budgets=(0, 32), steps=5
    )
    clean, attacked = fig.axes
    assert clean.get_title().startswith("ε = 0/255") and attacked.get_title().startswith("ε = 32/255")
    assert clean.title.get_color() == ("tab:green" if right else "tab:red")
    assert attacked.title.get_color() == "tab:red"  # PGD at 32/255 breaks the classroom CLIP (see the ε-curve test)
    assert fig.get_size_inches()[0] <= zl.plots.COLUMN_INCHES
