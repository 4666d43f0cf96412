"""Sphinx extension: a page's first mention of each ``zl.`` name links to its entry in the API reference.

The prose names the package's functions as inline code (```zl.compare(a, b)```); the first time a page names one
that ``book/api.md`` documents, the code becomes a link to that entry, so a reader meets the full signature and
docstring one click away, and no link is kept by hand. A name is matched by the object it reaches, so
``zl.uncertainty.rank_groups`` finds the entry documented as ``zsr_lab.rank_groups``. Names the reference does not
document, headings and code that already links stay as they are.
"""

from __future__ import annotations

import importlib
import re

from docutils import nodes

MENTION = re.compile(r"^zl\.([A-Za-z_][\w.]*)")


def resolve(dotted: str):
    """The object ``zsr_lab.<dotted>`` names, or None."""
    target = importlib.import_module("zsr_lab")
    for part in dotted.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


def documented_entries(env) -> dict[int, tuple[str, str]]:
    """id of each object the API reference documents → (its page, its anchor)."""
    entries = {}
    for name, entry in env.get_domain("py").objects.items():
        if not name.startswith("zsr_lab.") or entry.aliased:
            continue
        target = resolve(name.removeprefix("zsr_lab."))
        if target is not None:
            entries.setdefault(id(target), (entry.docname, entry.node_id))
    return entries


def mentioned_entry(text: str, entries: dict[int, tuple[str, str]]) -> tuple[str, str] | None:
    """The API entry an inline-code text such as ``zl.compare(a, b)`` names, or None."""
    match = MENTION.match(text)
    if not match:
        return None
    target = resolve(match.group(1).rstrip("."))
    return entries.get(id(target)) if target is not None else None


def _link_first_mentions(app, doctree, docname: str) -> None:
    entries = documented_entries(app.env)
    linked: set[tuple[str, str]] = set()
    for literal in list(doctree.findall(nodes.literal)):
        if isinstance(literal.parent, (nodes.reference, nodes.title)):
            continue
        entry = mentioned_entry(literal.astext(), entries)
        if entry is None or entry in linked or entry[0] == docname:
            continue
        linked.add(entry)
        page, anchor = entry
        link = nodes.reference("", "", internal=True, classes=["api-link"])
        link["refuri"] = f"{app.builder.get_relative_uri(docname, page)}#{anchor}"
        literal.replace_self(link)
        link.append(literal)


def setup(app):
    app.connect("doctree-resolved", _link_first_mentions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
