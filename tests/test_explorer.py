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
    assert len(figure.axes) == 4  # three panels and the colour bar
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
    figure = zl.plots.show_attention({"clean": (images, maps), "PGD": (images, maps)},
                                     captions={"PGD": [("a", True), ("b", False), ("c", None)]})
    axes = figure.axes
    assert len(axes) == 6 and axes[3].get_ylabel() == "PGD" and axes[4].title.get_color() == "tab:red"
