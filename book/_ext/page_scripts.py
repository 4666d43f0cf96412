"""Sphinx extension: each page's scripts once, and none from the network.

Two of the theme's extensions register their inline set-up scripts twice (Jupyter Book loads them in two steps);
sphinx-thebe's declares a ``const``, so the second copy stops with a SyntaxError on every page. Pages keep each
script once. The widget scripts myst-nb adds from CDNs (require.js, the ipywidgets embedder) fail offline and
draw nothing the static page can use (the explorers need a running kernel), so ``nb_ipywidgets_js`` is empty in
``_config.yml``; ``.ci/check_book.py`` checks both.
"""

from __future__ import annotations


def script_key(script) -> tuple:
    """What makes two of a page's scripts the same: the file, or the inline text, and the attributes."""
    filename = getattr(script, "filename", script) or ""  # an inline script is registered with None or ""
    attributes = getattr(script, "attributes", {})
    return str(filename), tuple(sorted(attributes.items()))


def _each_script_once(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    kept = []
    for script in scripts:
        key = script_key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _each_script_once, priority=900)  # after the extensions that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
