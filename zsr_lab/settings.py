"""Where zsr_lab reads datasets and keeps its caches, and which device it uses.

Both folders can be set per call or once through an environment variable:

- ``ZSR_LAB_DATA``  — the one data root; every dataset lives in its own sub-folder below it.
- ``ZSR_LAB_CACHE`` — the classroom CLIP checkpoint and the zero-shot classifier cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

DATA_ENV = "ZSR_LAB_DATA"
CACHE_ENV = "ZSR_LAB_CACHE"


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The data root: ``path`` if given, else ``$ZSR_LAB_DATA``, else ``~/.cache/zsr_lab/data``."""
    chosen = path or os.environ.get(DATA_ENV) or Path.home() / ".cache" / "zsr_lab" / "data"
    return Path(chosen).expanduser()


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``path`` if given, else ``$ZSR_LAB_CACHE``, else ``~/.cache/zsr_lab``."""
    chosen = path or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "zsr_lab"
    return Path(chosen).expanduser()


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as a page shows it: inside the cache folder, relative to it (``$ZSR_LAB_CACHE/runs/...`` where the
    variable is set, ``~/.cache/zsr_lab/runs/...`` otherwise), so that a printed run folder names no machine's
    home or build folder; any other path as given."""
    path = Path(path).expanduser()
    cache = cache_dir()
    if not path.is_relative_to(cache):
        return str(path)
    root = f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "~/.cache/zsr_lab"
    return str(Path(root) / path.relative_to(cache))


def default_device() -> torch.device:
    """The first CUDA device when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def loader_workers(device: torch.device, num_workers: int | None = None) -> int:
    """Data-loading processes: as asked, else 0 on CPU (decoding would compete with the model) and up to 8 on GPU."""
    if num_workers is not None:
        return num_workers
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


def temporary_path(path: Path) -> Path:
    """Where a file is written before it is renamed into place (named by the writing process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` through a temporary file and a rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries in ``folder`` left by writers that no longer run (a ``kill -9`` mid-write); a
    temporary of a running process is left alone. Returns what was deleted."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        pid = tmp.name[: -len(".tmp")].rpartition(".")[2]
        if pid.isdigit() and _running(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
