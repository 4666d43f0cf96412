"""Checkpoints in: every published layout loads (detected from the file's content), named tags download once and
are checked, and a bad file says which file and what it holds. Synthetic files are built in each exact layout
from the classroom CLIP (the layouts are the same for ViT-B/32; only the tensors' sizes differ)."""

import dataclasses

import pytest
import torch

import zsr_lab as zl
from zsr_lab import weights as published
from zsr_lab.weights import CheckpointError, read_weights

MODEL = "zsr-classroom-vit"


@pytest.fixture(scope="module")
def tuned():
    """The classroom CLIP with a changed image tower (so that loading the wrong weights would show)."""
    model = zl.load_clip(MODEL, "zsr_lab", device="cpu")
    with torch.no_grad():
        for parameter in model.clip.visual.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return model


def _image_embedding(model, seed=0):
    images = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.encode_image(images)


def _visual(model, dtype=torch.float32):
    return {k: v.to(dtype) for k, v in model.clip.visual.state_dict().items()}


# each layout as its publisher's saving code writes it (see zsr_lab.weights)
LAYOUTS = {
    "robustvlm vision tower": lambda m: _visual(m),
    "official training checkpoint (TeCoA, PMG-AFT: DataParallel prompter)": lambda m: {
        "epoch": 10,
        "state_dict": {"module.pad_up": torch.zeros(1)},
        "add_prompter": {"module.prompt": torch.zeros(1)},
        "vision_encoder_state_dict": _visual(m),
        "best_acc1": 31.2,
        "optimizer": {"state": {}, "param_groups": []},
    },
    "official training checkpoint (TGA-ZSR: empty prompter)": lambda m: {
        "epoch": 10,
        "state_dict": {},
        "add_prompter": {},
        "vision_encoder_state_dict": _visual(m),
        "best_acc1": torch.tensor(30.9),
        "optimizer": {"state": {}, "param_groups": []},
    },
    "whole CLIP under DataParallel, fp16": lambda m: {f"module.{k}": v.half() for k, v in m.clip.state_dict().items()},
    "open_clip / zsr_lab training checkpoint": lambda m: {"state_dict": m.clip.state_dict(), "step": 5},
    "torch.compile'd image tower with its prefix": lambda m: {
        f"_orig_mod.visual.{k}": v for k, v in _visual(m).items()
    },
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_published_layout_loads_into_the_right_tower(layout, tuned, tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save(LAYOUTS[layout](tuned), path)
    loaded = zl.load_clip(MODEL, str(path), device="cpu")
    tolerance = 2e-2 if "fp16" in layout else 1e-5  # fp16 weights round the embedding
    torch.testing.assert_close(_image_embedding(loaded), _image_embedding(tuned), rtol=tolerance, atol=tolerance)
    # the text tower is the base model's when the file holds the image tower alone
    base = zl.load_clip(MODEL, "zsr_lab", device="cpu")
    text = loaded.encode_text(["a photo of a shirt"])
    torch.testing.assert_close(text, base.encode_text(["a photo of a shirt"]), rtol=2e-2, atol=2e-3)
    assert loaded.pretrained == str(path)


def test_the_found_weights_say_where_they_were(tuned, tmp_path):
    path = tmp_path / "official.pth.tar"
    torch.save(LAYOUTS["official training checkpoint (TGA-ZSR: empty prompter)"](tuned), path)
    found = read_weights(path)
    assert (found.kind, found.found) == ("visual", "'vision_encoder_state_dict'")
    assert all(v.dtype == torch.float32 for v in found.state_dict.values())


def test_unknown_layout_lists_what_the_file_holds(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"encoder": {"layer.weight": torch.zeros(2)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError) as error:
        zl.load_clip(MODEL, str(path), device="cpu")
    assert "'encoder': 1 tensors (layer.weight" in str(error.value) and "'epoch': int" in str(error.value)
    assert str(path) in str(error.value)


def test_a_truncated_or_missing_file_is_named(tuned, tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(_visual(tuned), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"(?s)cut\.pt .*probably truncated"):
        zl.load_clip(MODEL, str(path), device="cpu")
    with pytest.raises(FileNotFoundError, match=r"tpyo\.pt does not exist: check the path"):
        zl.load_clip(MODEL, str(tmp_path / "tpyo.pt"), device="cpu")


def test_weights_of_another_architecture_are_refused_with_the_mismatch(tmp_path):
    path = tmp_path / "other.pt"
    state = {k: v for k, v in zl.load_clip(MODEL, "zsr_lab", device="cpu").clip.visual.state_dict().items()}
    state["conv1.weight"] = torch.zeros(7, 3, 4, 4)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"shapes differ for 1 \(e\.g\. conv1\.weight"):
        zl.load_clip(MODEL, str(path), device="cpu")


@pytest.fixture
def registered(monkeypatch, tmp_path, tuned):
    """A published tag for the classroom architecture, served from a local 'server' file."""
    server = tmp_path / "server" / "vitb32_tecoa_eps_1.pt"
    server.parent.mkdir()
    torch.save(_visual(tuned), server)
    entry = dataclasses.replace(published.PUBLISHED["robustvlm-tecoa-eps1"], model=MODEL, base="zsr_lab")
    monkeypatch.setitem(published.PUBLISHED, "test-tecoa", entry)
    downloads = []

    def download(url, dst, progress=True):
        downloads.append(url)
        dst_path = tmp_path / dst if not str(dst).startswith("/") else dst
        with open(dst_path, "wb") as f:
            f.write(server.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    cache = tmp_path / "cache"
    cache.mkdir()
    # the base (the classroom CLIP) comes from the session's cache, not pre-trained again in this one
    (cache / "classroom").symlink_to(zl.settings.cache_dir() / "classroom", target_is_directory=True)
    return downloads, cache


def test_a_named_tag_downloads_once_and_checks_its_hash(registered, tuned):
    downloads, cache = registered
    loaded = zl.load_clip(MODEL, "test-tecoa", device="cpu", cache_dir=cache)
    torch.testing.assert_close(_image_embedding(loaded), _image_embedding(tuned))
    zl.load_clip(MODEL, "test-tecoa", device="cpu", cache_dir=cache)
    assert len(downloads) == 1 and downloads[0].endswith("vitb32_tecoa_eps_1.pt")
    cached = cache / "published" / "vitb32_tecoa_eps_1.pt"
    assert (cache / "published" / "vitb32_tecoa_eps_1.pt.sha256").exists()
    cached.write_bytes(cached.read_bytes()[:-10])  # the file changes after the first download
    with pytest.raises(CheckpointError, match="has sha256 .* expected"):
        zl.load_clip(MODEL, "test-tecoa", device="cpu", cache_dir=cache)


def test_offline_the_message_names_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    def offline(url, dst, progress=True):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(zl.WeightsUnavailableError) as error:
        zl.load_clip("ViT-B-32-quickgelu", "robustvlm-fare-eps1", device="cpu", cache_dir=tmp_path)
    message = str(error.value)
    assert "vitb32_fare_eps_1.pt" in message and str(tmp_path / "published" / "vitb32_fare_eps_1.pt") in message
    assert "nc.mlcloud.uni-tuebingen.de" in message
    assert not list((tmp_path / "published").glob(".*.tmp"))  # no partial file is left behind


def test_a_tag_of_another_architecture_is_refused():
    with pytest.raises(ValueError, match="is a checkpoint of 'ViT-B-32-quickgelu'"):
        zl.load_clip(MODEL, "robustvlm-tecoa-eps4", device="cpu")


def test_recorded_and_requested_normalisations(tuned, tmp_path):
    path = tmp_path / "weights.pt"
    tuned_imagenet = zl.load_clip(MODEL, "zsr_lab", device="cpu")
    tuned_imagenet.pixel_mean.copy_(torch.tensor(published.IMAGENET_NORMALIZATION[0]).view(1, 3, 1, 1))
    tuned_imagenet.pixel_std.copy_(torch.tensor(published.IMAGENET_NORMALIZATION[1]).view(1, 3, 1, 1))
    torch.save(zl.checkpoints.weights_only_state(tuned_imagenet), path)
    loaded = zl.load_clip(MODEL, str(path), device="cpu")  # the statistics recorded in weights.pt
    torch.testing.assert_close(loaded.pixel_std, tuned_imagenet.pixel_std)
    clip_stats = zl.load_clip(MODEL, str(path), device="cpu", normalization="clip")
    assert clip_stats.pixel_std.flatten().tolist() == pytest.approx(published.CLIP_NORMALIZATION[1])
    with pytest.raises(ValueError, match="normalization must be one of clip, imagenet"):
        zl.load_clip(MODEL, str(path), device="cpu", normalization="imagnet")


def test_hub_models_without_internet_say_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(zl.WeightsUnavailableError, match="unset HF_HUB_OFFLINE"):
        zl.load_clip("hf-hub:chs20/FARE4-ViT-B-32-laion2B-s34B-b79K", None, device="cpu")


def test_an_exported_hub_folder_loads_back_through_load_clip(tuned, tmp_path):
    paths = zl.export_encoder(tuned, tmp_path / "export", formats="hub")
    loaded = zl.load_clip(f"local-dir:{paths['hub']}", None, device="cpu")
    torch.testing.assert_close(_image_embedding(loaded), _image_embedding(tuned))
    assert loaded.image_size == tuned.image_size and loaded.model_name.startswith("local-dir:")


def test_loading_a_file_does_not_claim_random_weights(tuned, tmp_path, caplog):
    path = tmp_path / "whole.pt"
    torch.save(tuned.clip.state_dict(), path)
    with caplog.at_level("WARNING"):
        zl.load_clip(MODEL, str(path), device="cpu")
    assert "initialized randomly" not in caplog.text
    with caplog.at_level("WARNING"):
        zl.load_clip(MODEL, None, device="cpu")  # truly random weights still say so
    assert "initialized randomly" in caplog.text


def test_model_image_size_is_read_without_building_the_model():
    assert zl.models.model_image_size("ViT-B-32-quickgelu") == 224
    assert zl.models.model_image_size(MODEL) == 28
    assert zl.models.model_image_size("hf-hub:chs20/FARE4-ViT-B-32-laion2B-s34B-b79K") == 224  # config comes with it
