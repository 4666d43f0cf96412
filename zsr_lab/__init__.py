"""zsr_lab: zero-shot adversarial robustness of CLIP — the companion package of the book.

One import gives the flat API the chapters build up::

    import zsr_lab as zl
    scale = zl.get_scale("classroom")            # or "full"
    clip = zl.load_clip(scale.model_name, scale.pretrained)
    table = zl.evaluate_zero_shot(clip, scale.eval_datasets)

Names are imported on first use (PEP 562), so ``python -m zsr_lab.train`` and ``python -m zsr_lab.evaluate`` run
their module once, as ``__main__``, instead of after the package has already imported it.
"""

from importlib import import_module

__version__ = "0.1.0"

SUBMODULES = (
    "adaptive",
    "apgd",
    "attack_base",
    "attacks",
    "attention",
    "attention_measures",
    "board",
    "challenge",
    "checkpoints",
    "claims",
    "classifier",
    "classroom",
    "classroom_data",
    "datasets",
    "defences",
    "distributed",
    "engine",
    "evaluate",
    "explorer",
    "export",
    "grader",
    "ledger",
    "methods",
    "models",
    "plots",
    "precision",
    "pretrained",
    "progress",
    "protocol",
    "recipes",
    "registry",
    "reported",
    "sanity",
    "scales",
    "scenes",
    "settings",
    "speed",
    "speed_suites",
    "speed_training",
    "suites",
    "sweeps",
    "tima",
    "train",
    "uncertainty",
    "weights",
)

# name → the module that defines it
_EXPORTS = {
    **dict.fromkeys(("dataset_classifier", "zero_shot_classifier"), "classifier"),
    **dict.fromkeys(
        (
            "BENCHMARK_DATASETS",
            "CLASSROOM_DATASETS",
            "DatasetNotFoundError",
            "get_spec",
            "list_datasets",
            "load_dataset",
        ),
        "datasets",
    ),
    **dict.fromkeys(
        (
            "evaluate_robustness",
            "evaluate_zero_shot",
            "member_table",
            "summarize",
            "summary_table",
            "with_mean",
            "zero_shot_accuracy",
        ),
        "evaluate",
    ),
    **dict.fromkeys(
        ("localisation_table", "measure_attention_drift", "measure_attention_localisation"), "attention_measures"
    ),
    "AttentionExplorer": "explorer",
    "grade_model": "challenge",
    "export_encoder": "export",
    **dict.fromkeys(("ImageFeatures", "ZeroShotCLIP", "freeze", "frozen_copy", "train_image_tower_only"), "models"),
    **dict.fromkeys(("WeightsUnavailableError", "load_clip"), "pretrained"),
    "Protocol": "protocol",
    **dict.fromkeys(("Scale", "get_scale", "localisation_scale"), "scales"),
    **dict.fromkeys(("Runs", "TrainConfig", "config_from_parameters", "recipe"), "recipes"),
    **dict.fromkeys(("TrainResult", "evaluate_pretrained", "fit"), "engine"),
    **dict.fromkeys(("launch", "sensitivity", "sensitivity_table"), "sweeps"),
    "UnknownNameError": "registry",
    **dict.fromkeys(("compare", "rank_groups", "stratified_interval", "wilson_interval"), "uncertainty"),
    **dict.fromkeys(("Ledger", "read_ledger"), "ledger"),
    "CheckpointError": "weights",
}

__all__ = [*SUBMODULES, *_EXPORTS]


def __getattr__(name: str):
    if name in SUBMODULES:
        return import_module(f".{name}", __name__)
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'zsr_lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
