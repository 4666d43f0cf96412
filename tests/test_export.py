"""Exported encoders: open_clip itself loads both formats and computes what zsr_lab's model computes; the card
carries method, recipe, protocol and the evaluation's numbers; bad calls fail before anything is written."""

import copy
import subprocess
import sys

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from zsr_lab import export
from zsr_lab.engine import fit
from zsr_lab.evaluate import summarize
from zsr_lab.export import export_encoder
from zsr_lab.models import CLASSROOM_MODEL
from zsr_lab.recipes import TrainConfig

TEXTS = ["a photo of a sneaker", "a picture of a handwritten digit seven"]


@pytest.fixture(scope="module")
def exported(classroom_clip, tmp_path_factory):
    """A few steps of TeCoA on the classroom CLIP, evaluated on two small sets, exported in both formats."""
    root = tmp_path_factory.mktemp("export")
    config = TrainConfig(
        method="tecoa",
        scale="classroom",
        train_examples=32,
        holdout_examples=16,
        batch_size=16,
        steps=2,
        lr=0.01,
        warmup_steps=1,
        eps=4.0,
        attack_step_size=2.0,
        eval_every=0,
        eval_datasets=("digits", "faces"),
        eval_n_examples=16,
        eval_attacks=("pgd-2",),
        eval_eps=(4.0,),
        run_dir=str(root / "run"),
    )
    result = fit(config, progress=False)
    paths = export_encoder(result, root / "out")
    return result, paths


def images_in_unit_range(n=3, size=28, seed=0):
    """[0,1] RGB images on the 1/255 grid (so a round trip through PIL is exact), and the same as PIL images."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    return tensor, [Image.fromarray(p, mode="RGB") for p in pixels]


def test_export_writes_the_files_open_clip_looks_for(exported):
    result, paths = exported
    assert set(paths) == {"state_dict", "hub"}
    assert paths["state_dict"].name == "open_clip_model.pt" and paths["state_dict"].parent == paths["hub"].parent
    assert {p.name for p in paths["hub"].iterdir()} == {
        "open_clip_config.json",
        "open_clip_model.safetensors",
        "README.md",
    }
    assert not [p for p in paths["hub"].parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    state = torch.load(paths["state_dict"], weights_only=True)
    expected = result.model.clip.state_dict()
    assert type(state) is dict and list(state) == list(expected)  # a bare state dict, open_clip's own keys
    for name, value in state.items():
        assert value.dtype == torch.float32 and torch.equal(value, expected[name].cpu()), name


def test_state_dict_loads_with_open_clip_create_model_and_matches_the_model(exported, classroom_clip):
    result, paths = exported
    model = result.model
    loaded = open_clip.create_model(CLASSROOM_MODEL, pretrained=str(paths["state_dict"])).eval()
    images, _ = images_in_unit_range()
    tokens = model.tokenizer(TEXTS)
    with torch.no_grad():
        image_features = loaded.encode_image(model.preprocess(images))
        text_features = loaded.encode_text(tokens)
        assert torch.allclose(image_features, model.encode_image(images), atol=1e-5)
        assert torch.allclose(text_features, model.clip.encode_text(tokens), atol=1e-5)
        # the fine-tuned weights went out, not the pre-trained ones
        assert not torch.allclose(image_features, classroom_clip.encode_image(images), atol=1e-3)


def test_hub_folder_loads_with_local_dir_and_its_own_preprocessing(exported):
    result, paths = exported
    model = result.model
    loaded, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{paths['hub']}")
    loaded.eval()
    cfg = loaded.visual.preprocess_cfg
    assert torch.allclose(torch.tensor(cfg["mean"]), model.pixel_mean.flatten())
    assert torch.allclose(torch.tensor(cfg["std"]), model.pixel_std.flatten())
    assert tuple(loaded.visual.image_size) == model.image_size
    images, pil_images = images_in_unit_range()
    inputs = torch.stack([preprocess(image) for image in pil_images])  # open_clip's own normalisation
    assert torch.allclose(inputs, model.preprocess(images), atol=1e-6)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{paths['hub']}")
    assert torch.equal(tokenizer(TEXTS), model.tokenizer(TEXTS))
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(inputs), model.encode_image(images), atol=1e-5)
        assert torch.allclose(
            loaded.encode_text(tokenizer(TEXTS)), model.encode_text(TEXTS, normalize=False), atol=1e-5
        )


def test_hub_folder_loads_in_a_process_that_never_imported_zsr_lab(exported, tmp_path):
    """The folder's open_clip_config.json carries the architecture: no zsr-classroom-vit registration needed."""
    result, paths = exported
    images, _ = images_in_unit_range(n=2, seed=1)
    torch.save(images, tmp_path / "images.pt")
    script = (
        "import sys, torch, open_clip\n"
        "from torchvision.transforms import Normalize\n"
        f"assert {CLASSROOM_MODEL!r} not in open_clip.list_models()\n"
        "model, _, _ = open_clip.create_model_and_transforms('local-dir:' + sys.argv[1])\n"
        "cfg = model.visual.preprocess_cfg\n"
        "images = Normalize(cfg['mean'], cfg['std'])(torch.load(sys.argv[2]))\n"
        "with torch.no_grad():\n"
        "    torch.save(model.eval().encode_image(images), sys.argv[3])\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(paths["hub"]), str(tmp_path / "images.pt"), str(tmp_path / "features.pt")],
        check=True,
        timeout=120,
    )
    with torch.no_grad():
        expected = result.model.encode_image(images)
    assert torch.allclose(torch.load(tmp_path / "features.pt"), expected, atol=1e-5)


def test_model_card_carries_method_recipe_protocol_and_the_evaluation_numbers(exported):
    result, paths = exported
    card = (paths["hub"] / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "open_clip" and meta["pipeline_tag"] == "zero-shot-image-classification"
    assert {"adversarial-robustness", "zero-shot-image-classification", "tecoa", "classroom-scale"} <= set(meta["tags"])
    assert "license" not in meta  # zsr_lab does not know a licence for the classroom weights: it says so
    assert "licence: not declared" in body
    assert "TeCoA (Mao et al., 2023)" in body and "- method: `tecoa`" in body
    assert "| `lr` | `0.01` |" in body and "| `train_examples` | `32` |" in body and "| `steps` | `2` |" in body
    assert result.config.protocol.describe() in body
    table = result.evaluation
    assert len(table) == 2
    for row in table.itertuples():
        assert (
            f"| {row.dataset} | {row.attack} | {row.eps:g} | {row.n} | {row.clean_accuracy:.2f} "
            f"[{row.clean_low:.2f}, {row.clean_high:.2f}] | {row.robust_accuracy:.2f} "
            f"[{row.robust_low:.2f}, {row.robust_high:.2f}] |"
        ) in body
    for row in summarize(table, by=("attack", "eps")).itertuples():
        assert (
            f"| {row.attack} | {row.eps:g} | {row.clean_accuracy:.2f} [{row.clean_low:.2f}, {row.clean_high:.2f}] | "
            f"{row.robust_accuracy:.2f} [{row.robust_low:.2f}, {row.robust_high:.2f}] |"
        ) in body
    assert "95 % interval" in body
    assert "classroom numbers" in body and "not reproductions of any paper" in body
    assert f'create_model_and_transforms("local-dir:{paths["hub"]}")' in body
    assert 'create_model_and_transforms("hf-hub:<your-org>/zsr-classroom-vit-tecoa")' in body
    assert f'pretrained="{paths["state_dict"]}"' in body
    assert result.model.weights_fingerprint() in body


def test_a_bare_model_exports_with_a_card_that_says_what_is_unknown(classroom_clip, tmp_path):
    model = copy.deepcopy(classroom_clip)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.clip.visual.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    paths = export_encoder(model, tmp_path / "bare", formats="hub", repo_id="someone/bare-clip")
    assert set(paths) == {"hub"} and not (tmp_path / "bare" / "open_clip_model.pt").exists()
    loaded = open_clip.create_model(f"local-dir:{paths['hub']}").eval()
    images, _ = images_in_unit_range()
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(model.preprocess(images)), model.encode_image(images), atol=1e-5)
        assert not torch.allclose(
            loaded.encode_image(model.preprocess(images)), classroom_clip.encode_image(images), atol=1e-3
        )
    card = (paths["hub"] / "README.md").read_text()
    assert "## Method\n\nUnknown" in card and "## Training recipe\n\nUnknown" in card
    assert "## Evaluation protocol\n\nUnknown" in card and "No evaluation was recorded" in card
    assert "hf-hub:someone/bare-clip" in card and "The same weights as a plain state dict" not in card


def test_overwrite_replaces_a_previous_export_only_when_asked(exported, tmp_path):
    result, _ = exported
    out = tmp_path / "out"
    export_encoder(result, out, formats="state_dict")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_encoder(result, out, formats="state_dict")
    (out / "hub").mkdir()
    (out / "hub" / "stale.bin").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="not empty: pass overwrite=True"):
        export_encoder(result, out, formats="hub")
    paths = export_encoder(result, out, overwrite=True)
    assert {p.name for p in paths["hub"].iterdir()} == {
        "open_clip_config.json",
        "open_clip_model.safetensors",
        "README.md",
    }  # the stale weights file is gone
    assert sorted(p.name for p in out.iterdir()) == ["hub", "open_clip_model.pt"]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda r, out: export_encoder(r, out, formats=("hub", "onnx")), ValueError, "unknown export format.*'onnx'"),
        (lambda r, out: export_encoder(r, out, formats=()), ValueError, "no export format given"),
        (lambda r, out: export_encoder(r.model.clip, out), TypeError, "TrainResult.*or a ZeroShotCLIP"),
        (
            lambda r, out: export_encoder(r, out, evaluation=r.evaluation.assign(weights="0123456789abcdef")),
            ValueError,
            "measured on other weights",
        ),
    ],
)
def test_bad_calls_fail_before_anything_is_written(exported, tmp_path, call, error, match):
    result, _ = exported
    with pytest.raises(error, match=match):
        call(result, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_out_dir_that_is_a_file_is_refused(exported, tmp_path):
    result, _ = exported
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(FileExistsError, match="is a file"):
        export_encoder(result, tmp_path / "file")


def test_verification_failure_publishes_nothing(exported, tmp_path, monkeypatch):
    """An architecture config that is not the model's (here: GELU instead of QuickGELU) is caught by loading the
    staged files back with open_clip; neither format is published and no temporary file is left."""
    result, _ = exported
    real = export._model_config
    monkeypatch.setattr(export, "_model_config", lambda model: {**real(model), "quick_gelu": False})
    with pytest.raises(RuntimeError, match="other image features"):
        export_encoder(result, tmp_path / "out", formats=("state_dict", "hub"), verify=True)
    assert list((tmp_path / "out").iterdir()) == []


def test_clean_only_evaluation_tables_are_reported_too(exported, tmp_path):
    result, _ = exported
    clean = pd.DataFrame({"dataset": ["digits", "faces"], "n": [10, 20], "accuracy": [91.25, 64.5]})
    paths = export_encoder(result.model, tmp_path / "out", formats="hub", evaluation=clean, config=result.config)
    card = (paths["hub"] / "README.md").read_text()
    assert "| digits | 10 | 91.25 [" in card and "| faces | 20 | 64.50 [" in card and "Mean: 77.88" in card
    assert "- method: `tecoa`" in card
