"""Point the book at another repository: the one setting is `repository.url` in _config.yml.

Launch buttons and the repository button read that setting; the chapters' Colab install cells and the README
must name the same repository as literal text (a notebook opened in Colab runs before anything is installed),
so this script rewrites them to match, and tests/test_repository.py fails while any of them names another.

Usage: python .ci/set_repository.py https://github.com/OWNER/NAME [--branch BRANCH]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GITHUB = re.compile(r"^https://github\.com/[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$")


def current_repository(root: Path = ROOT) -> tuple[str, str]:
    """The repository URL and branch set in _config.yml."""
    text = (root / "_config.yml").read_text()
    url = re.search(r"^repository:\n(?:  .*\n)*?  url: (\S+)", text, flags=re.M)
    branch = re.search(r"^repository:\n(?:  .*\n)*?  branch: (\S+)", text, flags=re.M)
    return url.group(1), branch.group(1)


def colab_url(url: str, branch: str, notebook: str) -> str:
    """The Colab address of a notebook of the repository at ``url`` (GitHub)."""
    return (
        f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/{branch}/{notebook}"
    )


def set_repository(url: str, branch: str, root: Path = ROOT) -> list[Path]:
    """Rewrite every mention of the current repository (and branch) to ``url`` (``branch``); the files changed."""
    old_url, old_branch = current_repository(root)
    changed = []
    config = root / "_config.yml"
    text = config.read_text()
    new = re.sub(r"^(  url: )\S+$", lambda m: m.group(1) + url, text, count=1, flags=re.M)
    new = re.sub(r"^(  branch: )\S+$", lambda m: m.group(1) + branch, new, count=1, flags=re.M)
    for path, before in [
        (config, text),
        *((p, p.read_text()) for p in [root / "README.md", *sorted((root / "book").glob("*.ipynb"))]),
    ]:
        after = (
            new
            if path == config
            else before.replace(colab_url(old_url, old_branch, ""), colab_url(url, branch, "")).replace(
                f"git+{old_url}", f"git+{url}"
            )
        )
        if path.suffix == ".ipynb":
            json.loads(after)  # still a notebook
        if after != before:
            path.write_text(after)
            changed.append(path)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="https://github.com/OWNER/NAME")
    parser.add_argument("--branch", default=None, help="the branch the launch buttons open (default: unchanged)")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/").removesuffix(".git")
    if not GITHUB.match(url):
        print(
            f"set_repository: {args.url!r} is not a GitHub repository address; write https://github.com/OWNER/NAME "
            f"(Colab opens notebooks from GitHub)",
            file=sys.stderr,
        )
        return 2
    for path in set_repository(url, args.branch or current_repository()[1]):
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
