"""The attention explorer and the attention figures."""

import matplotlib
import pytest
import torch

import zsr_lab as zl
from zsr_lab.explorer import TRUE_CLASS, AttentionExplorer

matplotlib.use("Agg")


@pytest.fixture()
def explorer(random_classroom_clip):
    moved = zl.frozen_copy(random_classroom_clip)
    with torch.no_grad():
        for p in moved.clip.visual.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return AttentionExplorer({"original": random_classroom_clip, "moved": moved}, "digits", n_images=4, steps=3)


def test_adversarial_images_stay_in_the_ball_and_the_box_and_are_cached(explorer):
    clean = explorer.images[2:3]
    adversarial = explorer.adversarial("moved", 2, 8)
    assert (adversarial - clean).abs().max() <= 8 / 255 + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert not torch.equal(adversarial, clean)
    assert explorer.adversarial("moved", 2, 8) is adversarial
    assert torch.equal(explorer.adversarial("moved", 2, 0), clean)


@pytest.mark.parametrize("kind", ["class", "non_class", "complementary"])
def test_show_draws_clean_adversarial_and_shift(explorer, kind):
    figure = explorer.show(image=1, prompt=explorer.classnames[3], eps=4, model="moved", kind=kind)
    assert len(figure.axes) == 5  # three panels, the maps' colour bar and the shift's
    assert [ax.get_label() for ax in figure.axes[3:]] == ["<colorbar>", "<colorbar>"]
    assert "moved" in figure._suptitle.get_text() and explorer.classnames[3] in figure._suptitle.get_text()
    unattacked = explorer.show(image=1, eps=0, kind=kind)
    assert "drift 0.000" in unattacked.axes[2].get_title()


def test_complementary_map_is_the_class_map_times_one_minus_the_non_class_map(explorer):
    images = explorer.images[:2]
    maps = {kind: explorer.maps("original", images, 5, kind) for kind in ("class", "non_class", "complementary")}
    assert torch.allclose(maps["complementary"], maps["class"] * (1 - maps["non_class"]), atol=1e-6)


def test_bad_choices_say_what_is_available(explorer):
    with pytest.raises(ValueError, match="the explorer has original, moved"):
        explorer.show(model="tecoa")
    with pytest.raises(ValueError, match="between 0 and 3"):
        explorer.show(image=9)
    with pytest.raises(ValueError, match="kind must be one of class, non_class, complementary"):
        explorer.maps("original", explorer.images[:1], 0, "reversed")
    with pytest.raises(ValueError, match="at least one model"):
        AttentionExplorer({}, "digits")


def test_widget_redraws_when_a_control_changes(explorer, monkeypatch):
    drawn = []
    monkeypatch.setattr(explorer, "show", lambda **choice: drawn.append(choice))
    box = explorer.widget()
    image_slider = box.children[0].children[0]
    image_slider.value = 2
    assert drawn[-1]["image"] == 2 and drawn[-1]["prompt"] == TRUE_CLASS and drawn[-1]["eps"] == 8


def test_show_attention_draws_one_row_per_entry(random_classroom_clip):
    images, maps = torch.rand(3, 1, 28, 28), torch.rand(3, 28, 28)
    figure = zl.plots.show_attention(
        {"clean": (images, maps), "PGD": (images, maps)}, captions={"PGD": [("a", True), ("b", False), ("c", None)]}
    )
    axes = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == 6 and axes[3].get_ylabel() == "PGD" and axes[4].title.get_color() == "tab:red"
    bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2  # one per row, each on its row's scale


def test_a_row_of_small_values_gets_its_own_scale_and_maps_use_a_perceptual_colour_map():
    images = torch.rand(2, 1, 28, 28)
    normalised, product = torch.rand(2, 28, 28), 0.05 * torch.rand(2, 28, 28)
    figure = zl.plots.show_attention({"class": (images, normalised), "product": (images, product)})
    overlays = [ax.get_images()[-1] for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert {artist.get_cmap().name for artist in overlays} == {"magma"}
    assert overlays[0].get_clim() == (0, float(normalised.max()))
    assert overlays[2].get_clim() == (0, float(product.max()))  # not 0–1: its structure stays visible
    bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert all(bar.collections[0].get_alpha() in (None, 1) for bar in bars)  # full colour, not the overlay's 0.6


def test_show_model_attention_captions_each_row_with_its_models_predictions(random_classroom_clip):
    model = random_classroom_clip
    names = zl.get_spec("digits").classnames
    model.set_classifier(zl.zero_shot_classifier(model, names, ['a photo of the number: "{}".']))
    images, labels = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2])
    with torch.no_grad():
        predicted = model(images).argmax(1)
    figure = zl.plots.show_model_attention({"clean": (model, images)}, labels, names)
    for ax, p, y in zip(figure.axes, predicted.tolist(), labels.tolist()):
        assert ax.get_title() == names[p][:18]
        assert ax.title.get_color() == ("tab:green" if p == y else "tab:red")


def test_attention_drift_figure_has_one_panel_per_model_with_the_table_values():
    import pandas as pd

    table = pd.DataFrame(
        [
            {"model": m, "dataset": d, "eps": 4.0, "clean": c, "random_noise": c + 0.01, "adversarial": c + 0.05}
            for m, c in (("CLIP", 0.0), ("TeCoA", 0.1))
            for d in ("digits", "faces")
        ]
    )
    figure = zl.plots.plot_attention_drift(table, scale="classroom")
    assert [ax.get_title() for ax in figure.axes] == ["CLIP", "TeCoA"]
    heights = sorted(round(bar.get_height(), 3) for bar in figure.axes[1].patches if bar.get_height() > 0)
    assert heights == [0.1, 0.1, 0.11, 0.11, 0.15, 0.15]


def test_sensitivity_figure_plots_each_option_against_its_values_with_the_reference():
    import pandas as pd

    sweep = pd.DataFrame(
        [
            {
                "option": o,
                "value": v,
                "fixed": "beta = 0.05" if o == "alpha" else "alpha = 0.08",
                "eps": 4.0,
                "clean_accuracy": 70 + 10 * v,
                "robust_accuracy": 30 - v,
            }
            for o in ("alpha", "beta")
            for v in (0.0, 0.1, 1.0)
        ]
    )
    reference = pd.DataFrame([{"method": "tecoa", "eps": 4.0, "clean_accuracy": 74.0, "robust_accuracy": 30.0}])
    figure = zl.plots.plot_sensitivity(sweep, scale="classroom", eps=4.0, reference=reference)
    assert [ax.get_xlabel() for ax in figure.axes] == ["alpha (beta = 0.05)", "beta (alpha = 0.08)"]
    lines = figure.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines[:2]] == [[70, 71, 80], [30, 29.9, 29]]
    assert {line.get_ydata()[0] for line in lines if line.get_linestyle() == "--"} == {74.0, 30.0}


def test_robustness_curve_per_method_is_the_mean_over_datasets():
    import pandas as pd

    table = pd.DataFrame(
        [
            {"method": m, "dataset": d, "attack": "PGD-10", "eps": e, "robust_accuracy": r}
            for m, base in (("a", 60), ("b", 40))
            for d, shift in (("x", 0), ("y", 10))
            for e, r in ((1.0, base + shift), (4.0, base + shift - 20))
        ]
    )
    ax = zl.plots.plot_robustness_curve(table, scale="classroom", hue="method")
    assert "mean over 2 datasets" in ax.get_title()
    assert [list(line.get_ydata()) for line in ax.get_lines()[:2]] == [[65, 45], [45, 25]]
