"""Sphinx extension: read (and so execute) the book's pages in table-of-contents order.

Sphinx reads pages in alphabetical order, and myst-nb executes a notebook when its page is read, so without this
"Attacking CLIP" would be the chapter that pre-trains the classroom CLIP and the comparison chapter would train
every method before the chapters that introduce them. Pages outside the table of contents keep their order, last.
"""

from __future__ import annotations

from pathlib import Path

from sphinx_external_toc.api import FileItem
from sphinx_external_toc.parsing import parse_toc_yaml


def toc_order(site_map) -> list[str]:
    """The docnames of a sphinx-external-toc site map, depth first, in reading order."""
    order: list[str] = []

    def visit(docname: str) -> None:
        if docname in order or docname not in site_map:
            return
        order.append(docname)
        for subtree in site_map[docname].subtrees:
            for item in subtree.items:
                if isinstance(item, FileItem):
                    visit(str(item))

    visit(site_map.root.docname)
    return order


def toc_files(toc_path: Path) -> list[str]:
    """The pages of a ``_toc.yml`` (root first), in reading order: what the build, the tests and the browser
    check all follow."""
    return toc_order(parse_toc_yaml(str(toc_path)))


def _read_in_toc_order(app, env, docnames: list[str]) -> None:
    site_map = getattr(app.config, "external_site_map", None) or getattr(env, "external_site_map", None)
    if site_map is None:
        return
    rank = {name: position for position, name in enumerate(toc_order(site_map))}
    docnames.sort(key=lambda name: rank.get(name, len(rank)))  # stable: the rest stay alphabetical, last


def setup(app):
    app.connect("env-before-read-docs", _read_in_toc_order)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
