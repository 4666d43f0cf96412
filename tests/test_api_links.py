"""book/_ext/api_links.py: a page's first mention of a documented ``zl.`` name links to the API reference."""

import re
from pathlib import Path

from sphinx.application import Sphinx

EXTENSIONS = Path(__file__).resolve().parents[1] / "book" / "_ext"

API = """API
===

.. autofunction:: zsr_lab.compare
.. autofunction:: zsr_lab.rank_groups
"""

CHAPTER = """Chapter
=======

The heading aside, ``zl.compare(a, b)`` pairs two evaluations; ``zl.compare`` again stays plain text.
``zl.uncertainty.rank_groups`` is documented as ``zl.rank_groups``; ``zl.not_a_name`` and ``len(x)`` are not.
"""


def _build(tmp_path: Path) -> str:
    source = tmp_path / "source"
    source.mkdir()
    (source / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(EXTENSIONS)!r})\n"
        "extensions = ['sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'api_links']\n"
    )
    (source / "index.rst").write_text("Index\n=====\n\n.. toctree::\n\n   api\n   chapter\n")
    (source / "api.rst").write_text(API)
    (source / "chapter.rst").write_text(CHAPTER)
    out = tmp_path / "html"
    app = Sphinx(
        str(source), str(source), str(out), str(tmp_path / "doctrees"), "html", status=None, warningiserror=True
    )
    app.build()
    return (out / "chapter.html").read_text()


def test_the_first_mention_of_each_documented_name_links_to_its_entry(tmp_path):
    page = _build(tmp_path)
    links = re.findall(r'<a class="api-link reference internal" href="([^"]+)"><code[^>]*>(.*?)</code></a>', page)
    texts = [re.sub(r"<[^>]+>", "", text) for _, text in links]
    assert texts == ["zl.compare(a, b)", "zl.uncertainty.rank_groups"]  # once each; the alias by the object it names
    assert [href for href, _ in links] == ["api.html#zsr_lab.compare", "api.html#zsr_lab.rank_groups"]
    assert "zl.not_a_name" in page and page.count("api-link") == 2  # undocumented names and repeats stay text
