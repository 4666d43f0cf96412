"""Robust encoders out: a fine-tuned model as files that open_clip itself loads, with a model card.

    result = zl.fit(zl.recipe("tecoa", "classroom"))
    paths = zl.export_encoder(result, "exports/tecoa")
    # exports/tecoa/open_clip_model.pt        open_clip.create_model(name, pretrained=<this file>)
    # exports/tecoa/hub/                      open_clip.create_model_and_transforms("local-dir:<this folder>")
    #     open_clip_config.json               model_cfg + preprocess_cfg (the normalisation the model was used with)
    #     open_clip_model.safetensors         the weights (the file name open_clip's hub loaders look for first)
    #     README.md                           model card: method, recipe, protocol, results, how to load

Both formats hold the whole open_clip CLIP model (text tower included: TIMA may tune the text side), in float32.
Nothing is published half-written: everything is written to temporary names, loaded back with open_clip and
checked against the model (``verify``), and only then renamed into place.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import open_clip
import pandas as pd
import torch
from safetensors.torch import save_file

from .engine import TrainResult
from .evaluate import summarize, with_intervals
from .methods import METHODS
from .models import CLASSROOM_MODELS, ZeroShotCLIP
from .protocol import Protocol
from .recipes import TrainConfig

FORMATS = ("state_dict", "hub")
STATE_DICT_FILE = "open_clip_model.pt"
HUB_DIR = "hub"
HUB_CONFIG_FILE = "open_clip_config.json"  # open_clip.constants.HF_CONFIG_NAME
HUB_WEIGHTS_FILE = "open_clip_model.safetensors"  # open_clip.constants.HF_SAFE_WEIGHTS_NAME: tried first by both
CARD_FILE = "README.md"  # the local-dir: and the hf-hub: loaders
# Licences zsr_lab knows for a base checkpoint (open_clip pretrained tag); others are left to the caller.
KNOWN_LICENSES = {"openai": "mit"}  # github.com/openai/CLIP is released under the MIT licence
_CHECK_TEXTS = ("a photo of a cat", "This is not a photo of a dog")


def export_encoder(
    source: TrainResult | ZeroShotCLIP,
    out_dir: str | os.PathLike,
    *,
    formats: str | Iterable[str] = FORMATS,
    config: TrainConfig | None = None,
    evaluation: pd.DataFrame | None = None,
    protocol: Protocol | None = None,
    name: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> dict[str, Path]:
    r"""Write a fine-tuned CLIP in files open_clip loads: a plain state dict and a Hugging Face hub folder.

    Arguments:
        source: what :func:`zsr_lab.fit` returned (a ``TrainResult``: it carries the model, its recipe and its
            evaluation, all of which go into the model card), or a bare :class:`ZeroShotCLIP` (then the card says
            which of method, recipe, protocol and results are unknown, unless ``config``/``evaluation`` give them).
        out_dir: the export folder (created if missing; an existing file there is an error).
        formats: ``"state_dict"``: ``<out_dir>/open_clip_model.pt``, a plain ``{name: tensor}`` state dict of the
            whole CLIP model that ``open_clip.create_model(model_name, pretrained=file)`` loads;
            ``"hub"``: ``<out_dir>/hub/`` in the Hugging Face hub layout (``open_clip_config.json``,
            ``open_clip_model.safetensors``, ``README.md``) that
            ``open_clip.create_model_and_transforms("local-dir:<out_dir>/hub")`` loads, and ``"hf-hub:ORG/NAME"``
            once the folder is uploaded. Default: both.
        config: the training config, overriding the one of a ``TrainResult``.
        evaluation: an evaluation table of *this* model (:func:`zsr_lab.evaluate_robustness`), overriding the one
            of a ``TrainResult``; its ``weights`` column must match the model's weights.
        protocol: the evaluation protocol for the card (default: ``config.protocol``).
        name: the model's name in the card and in the ``hf-hub:`` example (default ``<model>-<method>``).
        repo_id: the hub repository ("ORG/NAME") the folder is meant for, for the card's loading example.
        license: the licence for the card's metadata (default: the base checkpoint's when zsr_lab knows it, e.g.
            MIT for the OpenAI weights; otherwise left out and the card says so).
        overwrite: replace an existing weights file or a non-empty hub folder (default: refuse).
        verify: load every written format back with open_clip before publishing it and check that its image and
            text features, and its preprocessing mean/std, equal the model's (raises and writes nothing if not).

    Returns:
        ``{format: path}`` of what was written (``"state_dict"``: the file, ``"hub"``: the folder).

    Raises:
        ValueError: an unknown format, an evaluation table of other weights, a model open_clip has no config for.
        FileExistsError: ``out_dir`` is a file, or the targets exist and ``overwrite`` is off.
        TypeError: ``source`` is neither a ``TrainResult`` nor a ``ZeroShotCLIP``.
        RuntimeError: ``verify`` found that open_clip's model differs from the exported one.

    Examples::

        >>> result = zl.fit(zl.recipe("tecoa", "classroom"))
        >>> paths = zl.export_encoder(result, "exports/tecoa-classroom")
        >>> model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{paths['hub']}")
        >>> same = open_clip.create_model("zsr-classroom-vit", pretrained=str(paths["state_dict"]))
    """
    wanted = _check_formats(formats)
    model, config, evaluation, protocol = _unpack(source, config, evaluation, protocol)
    out_dir = Path(out_dir).expanduser()
    targets = {"state_dict": out_dir / STATE_DICT_FILE, "hub": out_dir / HUB_DIR}
    _check_targets(out_dir, {f: targets[f] for f in wanted}, overwrite)
    model_cfg = _model_config(model)
    name = name or _default_name(model, config)
    state = {
        key: value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).contiguous()
        for key, value in _unwrap(model.clip).state_dict().items()
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.tmp"
    staged: dict[str, Path] = {}
    try:
        if "state_dict" in wanted:
            staged["state_dict"] = out_dir / f".{STATE_DICT_FILE}.{tag}"
            torch.save(state, staged["state_dict"])
        if "hub" in wanted:
            staged["hub"] = folder = out_dir / f".{HUB_DIR}.{tag}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            (folder / HUB_CONFIG_FILE).write_text(
                json.dumps({"model_cfg": model_cfg, "preprocess_cfg": _preprocess_cfg(model)}, indent=2) + "\n"
            )
            save_file(state, str(folder / HUB_WEIGHTS_FILE), metadata={"format": "pt"})
            shutil.copymode(folder / HUB_CONFIG_FILE, folder / HUB_WEIGHTS_FILE)  # safetensors writes it 0600
            if model_cfg.get("text_cfg", {}).get("hf_tokenizer_name") and hasattr(model.tokenizer, "save_pretrained"):
                model.tokenizer.save_pretrained(str(folder))  # local-dir: reads an HF tokenizer from the folder
            card = model_card(
                model,
                config=config,
                evaluation=evaluation,
                protocol=protocol,
                name=name,
                repo_id=repo_id,
                license=license,
                hub_dir=targets["hub"],
                state_dict_file=targets["state_dict"] if "state_dict" in wanted else None,
            )
            (folder / CARD_FILE).write_text(card, encoding="utf-8")
        if verify:
            if "state_dict" in staged:
                _check_loaded(
                    open_clip.create_model(model.model_name, pretrained=str(staged["state_dict"])),
                    model,
                    f"the state dict ({STATE_DICT_FILE})",
                    check_preprocess=False,
                )
            if "hub" in staged:
                _check_loaded(
                    open_clip.create_model(f"local-dir:{staged['hub']}"),
                    model,
                    f"the hub folder ({HUB_DIR}/)",
                    check_preprocess=True,
                )
        for fmt, path in staged.items():  # publish: every format checked, now rename into place
            _replace(path, targets[fmt])
    finally:
        for path in staged.values():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
    return {fmt: targets[fmt] for fmt in wanted}


def model_card(
    model: ZeroShotCLIP,
    *,
    config: TrainConfig | None = None,
    evaluation: pd.DataFrame | None = None,
    protocol: Protocol | None = None,
    name: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    hub_dir: str | os.PathLike | None = None,
    state_dict_file: str | os.PathLike | None = None,
) -> str:
    """The model card (``README.md`` of the hub folder) of a fine-tuned model, as markdown with YAML metadata.

    Arguments are those of :func:`export_encoder`; ``hub_dir`` and ``state_dict_file`` are the paths the loading
    examples show. Unknown parts (a bare model: no method, recipe, protocol or results) are said to be unknown.
    """
    if protocol is None and config is not None:
        protocol = _protocol_of(config)
    name = name or _default_name(model, config)
    method = config.method if config is not None else None
    base = config.pretrained if config is not None else model.pretrained
    classroom = model.model_name in CLASSROOM_MODELS or (config is not None and config.scale != "full")
    license = license or KNOWN_LICENSES.get(str(base))
    repo = repo_id or f"<your-org>/{name}"

    tags = ["clip", "open_clip", "zsr_lab", "adversarial-robustness", "zero-shot-image-classification"]
    tags += [method] if method else []
    tags += ["classroom-scale"] if classroom else []
    meta = ["---", "library_name: open_clip", "pipeline_tag: zero-shot-image-classification"]
    meta += [f"license: {_yaml(license)}"] if license else []
    hub_base = (open_clip.get_pretrained_cfg(model.model_name, str(base)).get("hf_hub") or "").strip("/")
    meta += [f"base_model: {_yaml(hub_base)}"] if hub_base else []
    meta += ["tags:", *(f"- {_yaml(t)}" for t in tags), "---", ""]

    label = _method_label(method) if method else None
    title = f"{label.split(' (')[0]} fine-tuned {model.model_name}" if label else f"Fine-tuned {model.model_name}"
    lines = [f"# {name}: {title}", ""]

    def para(*texts: str) -> None:
        lines.extend([*texts, ""])

    para(
        f"Adversarially fine-tuned CLIP image encoder (open_clip `{model.model_name}`, started from `{base}`), "
        f"exported by zsr_lab {_version()} with open_clip {open_clip.__version__}. The files hold the whole CLIP "
        f"model (image and text towers) in float32."
    )
    if classroom:
        para(
            "> **Classroom model.** `zsr-classroom-vit` is a small CLIP that zsr_lab pre-trains itself on 28×28 "
            "grey images (Fashion-MNIST, scikit-learn digits, scikit-image textures and faces) so that the book's "
            "experiments run on a CPU in minutes. Its numbers are classroom numbers: they show the phenomena, they "
            "are not reproductions of any paper's results, and the model is not meant for real photos."
        )
    if str(base) == "none":
        para(
            '> The run started from **random weights** (`pretrained = "none"`): a benchmark or test run, not a '
            "fine-tuned pre-trained CLIP."
        )

    para("## Method")
    if method:
        options = ", ".join(f"`{k} = {_value(v)}`" for k, v in (config.method_options or {}).items())
        para(_method_summary(method))
        para(f"- method: `{method}`", f"- options: {options or 'none'}")
    else:
        para(
            "Unknown: exported from a bare `ZeroShotCLIP`. Export the `TrainResult` of `zsr_lab.fit` (or pass "
            "`config=`) to record the method."
        )

    para("## Training recipe")
    if config is not None:
        fields = dataclasses.asdict(config)
        shaping = [f for f in getattr(TrainConfig, "SHAPING", ()) if f in fields]
        para(
            "Every field of the `zsr_lab.TrainConfig` of the run (`zsr_lab.TrainConfig(**fields)` rebuilds it). "
            "These shape the weights:"
        )
        para(*_markdown([("Field", "Value")] + [(f"`{f}`", f"`{_value(fields[f])}`") for f in shaping]))
        para("Evaluation and run settings (no effect on the weights):")
        para(
            *_markdown(
                [("Field", "Value")] + [(f"`{f}`", f"`{_value(v)}`") for f, v in fields.items() if f not in shaping]
            )
        )
    else:
        para("Unknown: no training config was given.")

    para("## Evaluation protocol")
    if protocol is not None:
        para(protocol.describe())
        para(
            f"Datasets: {', '.join(f'`{d}`' for d in protocol.datasets)}. Robust accuracy is the per-image worst "
            f"case over the attacks of a suite (ℓ∞, ε in units of 1/255, on [0, 1] pixels); only clean-correct "
            f"images are attacked. Zero-shot classifiers from each dataset's prompt templates."
        )
    else:
        para("Unknown: no protocol was given.")

    para("## Results")
    if evaluation is not None and len(evaluation):
        lines.extend(_results(evaluation))
        if classroom:
            para("Classroom numbers (see the note at the top), not a paper's.")
    else:
        para(
            "No evaluation was recorded with this export: evaluate the model with `zsr_lab.evaluate_robustness` "
            "and export again with `evaluation=`."
        )

    preprocess = _preprocess_cfg(model)
    hub_path = str(hub_dir) if hub_dir is not None else "PATH/TO/THIS/FOLDER"
    para("## How to load")
    para("With open_clip, from this folder on disk or, once uploaded, from the Hub:")
    para(
        "```python",
        "import open_clip",
        "",
        f'model, _, preprocess = open_clip.create_model_and_transforms("local-dir:{hub_path}")',
        f'tokenizer = open_clip.get_tokenizer("local-dir:{hub_path}")',
        f"# after uploading this folder as {repo}:",
        f'model, _, preprocess = open_clip.create_model_and_transforms("hf-hub:{repo}")',
        "```",
    )
    if state_dict_file is not None:
        register = ["import zsr_lab  # registers the classroom architecture with open_clip"] if classroom else []
        para("The same weights as a plain state dict:")
        para(
            "```python",
            "import open_clip",
            *register,
            "",
            f'model = open_clip.create_model("{model.model_name}", pretrained="{state_dict_file}")',
            "```",
        )
    para("## Preprocessing")
    para(
        f"The model was trained and evaluated on images in [0, 1] normalised with mean `{preprocess['mean']}` and "
        f"std `{preprocess['std']}` (`preprocess_cfg` of `{HUB_CONFIG_FILE}`, so open_clip's `preprocess` applies "
        f"them) at {model.image_size[0]}×{model.image_size[1]} pixels. zsr_lab resized inside the model with torch "
        f"`{model.resize_mode}` interpolation after each dataset's own resize or crop; open_clip's transform "
        f"resizes with PIL, so images that need resizing can give slightly different numbers. Attacks and ε live "
        f"in [0, 1] pixel space, before the normalisation."
    )
    para("## Provenance")
    fingerprint = model.weights_fingerprint()
    provenance = [f"- zsr_lab weights fingerprint: `{fingerprint}` (the `weights` column of its evaluation tables)"]
    if config is not None and config.run_dir:
        provenance.append(f"- run folder: `{Path(config.run_dir).name}`")
    provenance.append(
        f"- licence: {license}"
        if license
        else "- licence: not declared (zsr_lab does not know the base checkpoint's; pass `license=` to "
        "`export_encoder`)"
    )
    para(*provenance)
    return "\n".join(meta + lines)


# ---- pieces ---------------------------------------------------------------------------------------------------


def _check_formats(formats) -> tuple[str, ...]:
    wanted = (formats,) if isinstance(formats, str) else tuple(formats)
    choose = f"choose one or both of {', '.join(repr(f) for f in FORMATS)}, e.g. formats=('state_dict', 'hub')"
    if not wanted:
        raise ValueError(f"no export format given: {choose}")
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(map(repr, unknown))}: {choose}")
    return tuple(dict.fromkeys(wanted))


def _unpack(source, config, evaluation, protocol):
    if isinstance(source, TrainResult):
        model = source.model
        config = config if config is not None else source.config
        evaluation = evaluation if evaluation is not None else source.evaluation
    elif isinstance(source, ZeroShotCLIP):
        model = source
    else:
        raise TypeError(
            f"source must be what zsr_lab.fit returns (a TrainResult) or a ZeroShotCLIP, got {type(source).__name__}"
        )
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a zsr_lab.TrainConfig, got {type(config).__name__}")
    if evaluation is not None and not isinstance(evaluation, pd.DataFrame):
        raise TypeError(f"evaluation must be an evaluation table (pandas DataFrame), got {type(evaluation).__name__}")
    if evaluation is not None and len(evaluation) and "weights" in evaluation.columns:
        measured = set(evaluation["weights"].dropna().astype(str))
        current = model.weights_fingerprint()
        if measured and measured != {current}:
            raise ValueError(
                f"the evaluation table was measured on other weights ({', '.join(sorted(measured))}) "
                f"than the model's ({current}): evaluate this model (zsr_lab.evaluate_robustness) and "
                f"pass that table as evaluation=, or pass evaluation=pd.DataFrame() to export without "
                f"results"
            )
    if protocol is None and config is not None:
        protocol = _protocol_of(config)
    return model, config, evaluation, protocol


def _protocol_of(config: TrainConfig) -> Protocol | None:
    """The final evaluation's protocol of a (resolved) config; ``None`` when it has none."""
    if not config.eval_datasets or config.eval_attacks is None:
        return None
    try:
        return config.protocol
    except (TypeError, ValueError):
        return None


def _check_targets(out_dir: Path, targets: dict[str, Path], overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"out_dir {out_dir} is a file: pass a folder (it is created if missing)")
    for fmt, path in targets.items():
        if fmt == "hub":
            if path.exists() and not path.is_dir():
                raise FileExistsError(
                    f"{path} is a file, where the hub folder goes: remove it or choose another out_dir"
                )
            if path.is_dir() and any(path.iterdir()) and not overwrite:
                raise FileExistsError(
                    f"the hub folder {path} is not empty: pass overwrite=True to replace it, or "
                    f"choose another out_dir (nothing was written)"
                )
        elif path.exists():
            if path.is_dir():
                raise FileExistsError(
                    f"{path} is a folder, where the state dict file goes: remove it or choose another out_dir"
                )
            if not overwrite:
                raise FileExistsError(
                    f"{path} exists: pass overwrite=True to replace it, or choose another out_dir (nothing was written)"
                )


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "_orig_mod", module)  # a torch.compile'd CLIP saves under _orig_mod.


def _model_config(model: ZeroShotCLIP) -> dict:
    """open_clip's architecture config of the model, corrected to what the model object actually is."""
    cfg = open_clip.get_model_config(model.model_name)
    if cfg is None:
        raise ValueError(
            f"open_clip has no architecture config for {model.model_name!r}: register it with "
            f"open_clip.add_model_config(...) before exporting"
        )
    clip = _unwrap(model.clip)
    quick_gelu = any(isinstance(m, open_clip.transformer.QuickGELU) for m in clip.modules())
    if quick_gelu != bool(cfg.get("quick_gelu", False)):
        cfg["quick_gelu"] = quick_gelu  # e.g. "ViT-B-32" with the OpenAI tag: open_clip builds it with nn.GELU
    size = cfg.get("vision_cfg", {}).get("image_size")
    if size is not None and tuple(_pair(size)) != tuple(model.image_size):
        cfg["vision_cfg"]["image_size"] = list(model.image_size)  # created with force_image_size
    return cfg


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _preprocess_cfg(model: ZeroShotCLIP) -> dict:
    """open_clip's preprocessing of the base model, with the normalisation this model is used with."""
    base = dict(getattr(_unwrap(model.clip).visual, "preprocess_cfg", {}) or {})
    size = model.image_size

    def stats(key: str, buffer: torch.Tensor) -> list[float]:
        used = buffer.detach().flatten().cpu().double()
        known = base.get(key)  # the base model's constants, when the float32 buffer holds them
        if (
            known is not None
            and len(known) == len(used)
            and torch.allclose(torch.tensor(known).double(), used, rtol=0, atol=1e-6)
        ):
            return [float(v) for v in known]
        return [float(v) for v in used.tolist()]

    return {
        "size": size[0] if size[0] == size[1] else list(size),
        "mode": base.get("mode", "RGB"),
        "mean": stats("mean", model.pixel_mean),
        "std": stats("std", model.pixel_std),
        "interpolation": base.get("interpolation", "bicubic"),
        "resize_mode": base.get("resize_mode", "shortest"),
        "fill_color": base.get("fill_color", 0),
    }


def _replace(staged: Path, target: Path) -> None:
    """Move ``staged`` to ``target`` (a file: atomically; a folder: the old one is moved aside first)."""
    if staged.is_dir() and target.exists():
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)


def _features(clip: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor):
    pooled = clip.visual(images)
    pooled = pooled[0] if isinstance(pooled, tuple) else pooled  # ZeroShotCLIP turns output_tokens on
    return pooled.float(), clip.encode_text(tokens).float()


@torch.no_grad()
def _check_loaded(loaded: torch.nn.Module, model: ZeroShotCLIP, what: str, *, check_preprocess: bool) -> None:
    """``loaded`` (built by open_clip from the staged files) must compute what ``model`` computes."""
    device = model.device
    loaded = loaded.to(device).eval()
    generator = torch.Generator().manual_seed(0)
    images = model.preprocess(torch.rand((2, 3, *model.image_size), generator=generator).to(device))
    tokens = model.tokenizer(list(_CHECK_TEXTS)).to(device)
    expected = _features(_unwrap(model.clip), images.to(model.clip.logit_scale.dtype), tokens)
    got = _features(loaded, images, tokens)
    exact = all(p.dtype == torch.float32 for p in model.clip.parameters())
    tolerance = 1e-4 if exact else 2e-2
    for kind, a, b in zip(("image", "text"), expected, got):
        if a.shape != b.shape or not torch.allclose(a, b, rtol=tolerance, atol=tolerance):
            difference = (a - b).abs().max().item() if a.shape == b.shape else f"shapes {a.shape} vs {b.shape}"
            raise RuntimeError(
                f"open_clip's model from {what} gives other {kind} features than the exported model "
                f"(max difference {difference}); nothing was written. Is the open_clip config of "
                f"{model.model_name!r} the architecture the model was built with?"
            )
    if check_preprocess:
        cfg = loaded.visual.preprocess_cfg
        for stat, buffer in (("mean", model.pixel_mean), ("std", model.pixel_std)):
            if not torch.allclose(torch.tensor(cfg[stat], dtype=torch.float32), buffer.flatten().cpu().float()):
                raise RuntimeError(
                    f"open_clip reads preprocessing {stat} {cfg[stat]} from {what}, but the model "
                    f"normalises with {buffer.flatten().tolist()}; nothing was written"
                )


def _default_name(model: ZeroShotCLIP, config: TrainConfig | None) -> str:
    parts = [model.model_name] + ([config.method] if config is not None else [])
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts).replace("_", "-")).strip("-")


def _method_summary(method: str) -> str:
    cls = METHODS.get(method)
    doc = inspect.getdoc(cls) if cls is not None else None
    if not doc:
        return f"`{method}` (a method registered outside zsr_lab's registry)."
    return " ".join(doc.split("\n\n")[0].split())


def _method_label(method: str) -> str:
    return _method_summary(method).split(":")[0].strip("`") if method in METHODS else method


def _version() -> str:
    from . import __version__

    return __version__


def _value(value) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False) if not isinstance(value, str) else value
    return text.replace("|", "\\|")


def _yaml(text: str) -> str:
    return json.dumps(str(text))  # a JSON string is a YAML scalar


def _markdown(rows: list[tuple]) -> list[str]:
    header, *body = [[str(cell).replace("|", "\\|") if i else str(cell) for i, cell in enumerate(row)] for row in rows]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in body),
    ]


def _pct(value) -> str:
    return f"{float(value):.2f}"


def _interval(row, value: str, prefix: str) -> str:
    """``55.20 [52.10, 58.30]``: an accuracy with its 95 % interval (the value alone where none is known)."""
    low, high = getattr(row, f"{prefix}_low", None), getattr(row, f"{prefix}_high", None)
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return _pct(getattr(row, value))
    return f"{_pct(getattr(row, value))} [{_pct(low)}, {_pct(high)}]"


def _results(evaluation: pd.DataFrame) -> list[str]:
    table = evaluation[evaluation["dataset"] != "mean"] if "dataset" in evaluation.columns else evaluation
    if "n" in table.columns:
        table = with_intervals(table)
    lines = []
    if "robust_accuracy" in table.columns:
        summary = summarize(table, by=("attack", "eps"))
        datasets = table["dataset"].nunique()
        lines += [
            f"Mean over the {datasets} evaluation dataset(s), accuracy in % with its 95 % interval in brackets "
            f"(image sampling: Wilson per dataset; the mean with each dataset as a stratum):",
            "",
        ]
        lines += _markdown(
            [("Attack", "ε (/255)", "Clean", "Robust")]
            + [
                (
                    row.attack,
                    f"{row.eps:g}",
                    _interval(row, "clean_accuracy", "clean"),
                    _interval(row, "robust_accuracy", "robust"),
                )
                for row in summary.itertuples()
            ]
        )
        lines += ["", "Per dataset:", ""]
        lines += _markdown(
            [("Dataset", "Attack", "ε (/255)", "Images", "Clean", "Robust")]
            + [
                (
                    row.dataset,
                    row.attack,
                    f"{row.eps:g}",
                    str(int(row.n)),
                    _interval(row, "clean_accuracy", "clean"),
                    _interval(row, "robust_accuracy", "robust"),
                )
                for row in table.itertuples()
            ]
        )
    elif "accuracy" in table.columns:  # a clean zero-shot table (evaluate_zero_shot)
        lines += ["Clean zero-shot accuracy in % with its 95 % interval (no attack was evaluated):", ""]
        lines += _markdown(
            [("Dataset", "Images", "Accuracy")]
            + [(row.dataset, str(int(row.n)), _interval(row, "accuracy", "accuracy")) for row in table.itertuples()]
        )
        lines += ["", f"Mean: {_pct(table['accuracy'].mean())}"]
    else:
        lines += ["The evaluation table has no accuracy columns."]
    return lines + [""]


__all__ = [
    "CARD_FILE",
    "FORMATS",
    "HUB_CONFIG_FILE",
    "HUB_DIR",
    "HUB_WEIGHTS_FILE",
    "STATE_DICT_FILE",
    "export_encoder",
    "model_card",
]
