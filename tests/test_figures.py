"""Every figure of the book fits the text column and stays legible there: at most COLUMN_INCHES wide as saved
(tight bounding box, what the notebook shows), no text smaller than FONT_POINTS, legends off the data, point labels
apart, no panel that shows a single point. Tables are shaped like the full-scale benchmark (16 datasets, six
methods), the hardest case for the column."""

import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.text import Text

matplotlib.use("Agg")

import zsr_lab as zl  # noqa: E402
from zsr_lab.plots import COLUMN_INCHES, FONT_POINTS  # noqa: E402

METHODS = ["tecoa", "pmg_aft", "fare", "tga_zsr", "comp_tga", "tima"]
DATASETS = [f"dataset_{i:02d}" for i in range(16)]
ATTACKS = ("pgd-10+aa-10", "pgd-10")


def _table():
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        [
            {
                "method": m,
                "dataset": d,
                "eps": e,
                "attack": a,
                "clean_accuracy": rng.uniform(30, 90),
                "robust_accuracy": rng.uniform(0, 40),
                "n": 1000,  # so the figures draw their intervals, as the book's do
            }
            for m in METHODS
            for d in DATASETS
            for e in (1.0, 4.0)
            for a in ATTACKS
        ]
    )


def _history():
    return pd.DataFrame(
        [{"kind": "text", "step": s, "mhe": 1 / (s + 1), "iakd": 0.1} for s in range(10)]
        + [{"kind": "train", "step": s, "tam": 2 / (s + 1), "takd": 0.2} for s in range(10)]
        + [{"kind": "holdout", "step": 9, "clean_accuracy": 70.0, "robust_accuracy": 30.0, "attack": "pgd-10"}]
    )


def _table_figures():
    table, history = _table(), _history()
    summary = zl.summarize(table)
    drift = pd.DataFrame(
        [
            {"model": m, "dataset": d, "eps": 4.0, "clean": 0.01, "random_noise": 0.1, "adversarial": 0.2}
            for m in ("CLIP (zero-shot)", "TeCoA", "TGA-ZSR")
            for d in DATASETS[:4]
        ]
    )
    localisation = pd.DataFrame(
        [
            {
                "model": m,
                "dataset": d,
                "condition": c,
                "mass_in_object": 0.4,
                "uniform": 0.2,
                "pointing": 0.5,
                "eps": 4.0,
            }
            for m in ("CLIP", "TeCoA", "TGA-ZSR")
            for d in ("digit_scenes", "fashion_scenes")
            for c in ("clean", "random_noise", "adversarial")
        ]
    )
    sweep = pd.DataFrame(
        [
            {
                "option": o,
                "value": v,
                "fixed": "",
                "eps": 4.0,
                "attack": ATTACKS[0],
                "clean_accuracy": 70 + v,
                "robust_accuracy": 30 - v,
            }
            for o in ("alpha", "beta")
            for v in (0.0, 0.1, 1.0)
        ]
    )
    text = torch.nn.functional.normalize(torch.randn(10, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    robust = table[table["eps"] == 4.0]
    return {
        "tradeoff": lambda: zl.plots.plot_tradeoff(summary, scale="full", eps=4.0).figure,
        "tradeoffs": lambda: zl.plots.plot_tradeoffs(summary, scale="full", eps_values=(1.0, 4.0)),
        "heatmap": lambda: zl.plots.plot_heatmap(table, scale="full", eps=4.0).figure,
        "accuracy": lambda: zl.plots.plot_accuracy(robust, scale="full", hue="method", value="robust_accuracy").figure,
        "curve per dataset": lambda: zl.plots.plot_robustness_curve(table, scale="full").figure,
        "curves per attack": lambda: zl.plots.plot_robustness_curves(table, scale="full", attacks=ATTACKS),
        "attack gap": lambda: (
            zl.plots.plot_attack_gap(summary, scale="full", eps=4.0, worst=ATTACKS[0], single=ATTACKS[1]).figure
        ),
        "training": lambda: zl.plots.plot_training(history, scale="full", title="TIMA"),
        "drift": lambda: zl.plots.plot_attention_drift(drift, scale="full"),
        "localisation": lambda: zl.plots.plot_attention_localisation(localisation, scale="scenes"),
        "sensitivity": lambda: zl.plots.plot_sensitivity(
            sweep, scale="classroom", eps=4.0, reference=summary[summary["method"] == "tecoa"]
        ),
        "text geometry": lambda: zl.plots.plot_text_geometry(
            text, text, [f"class {i}" for i in range(10)], scale="classroom", margins=torch.rand(10, 10)
        ),
    }


def _model_figures(model):
    names = zl.get_spec("digits").classnames
    model.set_classifier(zl.zero_shot_classifier(model, names, ['a photo of the number: "{}".']))
    images, labels = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    maps = torch.rand(6, 28, 28)
    return {
        "predictions": lambda: zl.plots.show_predictions(model, images, labels.tolist(), names),
        "adversarial": lambda: zl.plots.show_adversarial(
            images, images.flip(0), [0] * 6, [1] * 6, [0] * 6, names, eps_label="ε = 4/255"
        ),
        "budget series": lambda: zl.plots.show_budget_series(model, images[:1], labels[:1], names, steps=1),
        "attention": lambda: zl.plots.show_attention(
            {"clean · CLIP (zero-shot)": (images, maps), "PGD · TGA-ZSR": (images, maps)},
            captions={"PGD · TGA-ZSR": [("ankle boot", False)] * 6},
            title="a title as long as the chapters' own, with its scale",
        ),
        "attention shift": lambda: zl.plots.show_attention_shift(
            {"CLIP": model, "TeCoA": model}, images[:2], labels[:2], masks=(maps[:2] > 0.5).float(), steps=1
        ),
        "class similarity": lambda: (
            zl.plots.plot_class_similarity(
                model.class_embeddings, names, title="Digits: similarity of class text"
            ).figure
        ),
    }


def _check_legible(fig):
    fig.draw_without_rendering()
    width = fig.get_tightbbox().width
    assert width <= COLUMN_INCHES + 0.02, f"{width:.2f} in wide, the column is {COLUMN_INCHES}"
    small = [
        (t.get_text(), t.get_fontsize())
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < FONT_POINTS
    ]
    assert not small, f"text below {FONT_POINTS} pt: {small[:5]}"
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    for legend, ax in itertools.product(legends, panels):
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)), "legend on data"
    for ax in panels:
        assert all(len(line.get_xdata()) != 1 for line in ax.get_lines()), "a panel with a single point"


@pytest.mark.parametrize("name", list(_table_figures()))
def test_table_figures_fit_the_column_and_stay_legible(name):
    _check_legible(_table_figures()[name]())


@pytest.mark.parametrize(
    "name", ["predictions", "adversarial", "budget series", "attention", "attention shift", "class similarity"]
)
def test_image_figures_fit_the_column_and_stay_legible(name, random_classroom_clip):
    _check_legible(_model_figures(random_classroom_clip)[name]())


def test_point_labels_are_drawn_apart_and_inside_the_axes_even_for_coinciding_points():
    summary = pd.DataFrame(
        [
            {"method": m, "eps": 4.0, "clean_accuracy": 80.0, "robust_accuracy": 30.0}
            for m in ("tga_zsr", "comp_tga", "tima")
        ]
        + [
            {"method": "tecoa", "eps": 4.0, "clean_accuracy": 60.0, "robust_accuracy": 20.0},
            {"method": "CLIP (zero-shot)", "eps": 4.0, "clean_accuracy": 92.0, "robust_accuracy": 5.0},
        ]
    )
    ax = zl.plots.plot_tradeoff(summary, scale="classroom", eps=4.0)
    ax.figure.draw_without_rendering()
    renderer = ax.figure.canvas.get_renderer()
    boxes = {text.get_text(): text.get_window_extent(renderer) for text in ax.texts}
    assert set(boxes) == {"tga_zsr", "comp_tga", "tima", "tecoa", "CLIP (zero-shot)"}
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes.values(), 2))
    frame = ax.get_window_extent(renderer)  # names at the right edge go left of their points, inside the axes
    assert all(frame.x0 <= box.x0 and box.x1 <= frame.x1 for box in boxes.values())
    assert {t.get_text(): t.xyann for t in ax.texts}["tecoa"] == (6, -FONT_POINTS / 2)  # room: the default place


def test_training_figure_shows_a_single_held_out_measurement_as_bars_and_a_series_as_lines():
    history = _history()
    once = zl.plots.plot_training(history, scale="classroom")
    assert [ax.get_title().split(":")[-1].strip() for ax in once.axes[:2]] == [
        "text stage loss (classroom scale)",
        "image stage loss (classroom scale)",
    ]
    bars = [round(p.get_height(), 1) for p in once.axes[-1].patches]
    assert bars == [70.0, 30.0] and not once.axes[-1].get_lines()
    series = pd.concat([history, history[history["kind"] == "holdout"].assign(step=19, robust_accuracy=35.0)])
    twice = zl.plots.plot_training(series[series["kind"] != "text"], scale="classroom")
    assert (
        len(twice.axes) == 2 and twice.axes[0].get_title() == "Adversarial fine-tuning: training loss (classroom scale)"
    )
    assert [list(line.get_ydata()) for line in twice.axes[-1].get_lines()[:2]] == [[70.0, 70.0], [30.0, 35.0]]


def test_the_book_style_is_set_in_one_place_on_import():
    assert matplotlib.rcParams["font.size"] == FONT_POINTS
    assert matplotlib.rcParams["figure.figsize"][0] == COLUMN_INCHES
    assert all(
        matplotlib.rcParams[key] >= FONT_POINTS
        for key in ("xtick.labelsize", "ytick.labelsize", "legend.fontsize", "axes.labelsize")
    )


def test_the_planes_curves_and_gaps_draw_their_intervals():
    from matplotlib.collections import LineCollection, PolyCollection

    table = _table()
    summary = zl.summarize(table)
    tradeoff = zl.plots.plot_tradeoff(summary, scale="full", eps=4.0)
    assert sum(isinstance(c, LineCollection) for c in tradeoff.collections) == 2  # x and y error bars
    assert "95\u00a0% intervals" in tradeoff.get_xlabel()
    curve = zl.plots.plot_robustness_curve(table, scale="full", hue="method")
    assert sum(isinstance(c, PolyCollection) for c in curve.collections) == len(METHODS)  # one band per line
    without = zl.plots.plot_tradeoff(summary.drop(columns=["robust_low"]), scale="full", eps=4.0)
    assert not any(isinstance(c, LineCollection) for c in without.collections)

    rng = np.random.default_rng(2)
    rows = []
    for method in ("tecoa", "fare"):
        for dataset in ("a", "b"):
            single = rng.random(200) < 0.4
            worst = single & (rng.random(200) < 0.8)  # the suite breaks a fifth of what PGD leaves
            for attack, kept in zip(ATTACKS, (worst, single)):
                rows.append(
                    {
                        "method": method,
                        "dataset": dataset,
                        "attack": attack,
                        "eps": 4.0,
                        "n": 200,
                        "clean_accuracy": 100.0,
                        "robust_accuracy": 100 * kept.mean(),
                        "robust_outcomes": zl.uncertainty.encode_outcomes(kept),
                    }
                )
    gap = zl.plots.plot_attack_gap(pd.DataFrame(rows), scale="classroom", eps=4.0, worst=ATTACKS[0], single=ATTACKS[1])
    lines = [c for c in gap.collections if isinstance(c, LineCollection)]
    assert len(lines) == 1 and len(lines[0].get_segments()) == 2 and "paired 95 %" in gap.get_title()
    heights = [bar.get_height() for bar in gap.patches]
    for segment, height in zip(lines[0].get_segments(), heights):
        low, high = sorted(segment[:, 1])
        assert 0 < low < height < high  # PGD alone over-states the suite by more than noise, on the same images
