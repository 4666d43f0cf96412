"""The CI browser check (.ci/check_book.py) fails on what a reader would see as broken."""

import importlib.util
import shutil
from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="needs the chromium command (CI installs it)")
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def _checker():
    spec = importlib.util.spec_from_file_location("check_book", ROOT / ".ci" / "check_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _book(tmp_path, body, figures_made=1):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/chapter\n")
    html = tmp_path / "_build" / "html"
    (html / "book").mkdir(parents=True)
    (html / "_images").mkdir()
    (html / "_images" / "figure.png").write_bytes(PNG)
    (html / "book" / "intro.html").write_text("<html><body><h1>Intro</h1></body></html>")
    colab = '<a href="https://colab.research.google.com/github/o/r/blob/main/book/chapter.ipynb">Colab</a>'
    (html / "book" / "chapter.html").write_text(f"<html><body><h1>Chapter</h1>{colab}{body}</body></html>")
    (tmp_path / "book").mkdir()
    chapter = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("plot()")])
    nbformat.write(chapter, tmp_path / "book" / "chapter.ipynb")
    # the build's execution, as jupyter-cache keeps it (a rebuild renders from it without writing jupyter_execute)
    chapter.cells[0].outputs = [nbformat.v4.new_output("display_data", {"image/png": ""})] * figures_made
    get_cache(str(tmp_path / "_build" / ".jupyter_cache")).cache_notebook_bundle(
        CacheBundleIn(chapter, str(tmp_path / "book" / "chapter.ipynb")), check_validity=False
    )
    return tmp_path


def test_a_page_with_its_figure_passes(tmp_path):
    book = _book(tmp_path, '<div class="cell_output"><img src="../_images/figure.png"></div>')
    assert _checker().main(book) == 0


FIGURE = '<div class="cell_output"><img src="../_images/figure.png"></div>'
WIDE = "clean_accuracy_clean_low_clean_high_robust_accuracy_robust_low_robust_high"  # a header that cannot wrap
SENTENCE = "At 4/255, in points: alpha from 0.08 to 0.64: +1.6 clean, -0.2 robust; " * 3


@pytest.mark.parametrize(
    "body, figures_made, problem",
    [
        ('<div class="cell_output"><img src="../_images/missing.png"></div>', 1, "images that did not load"),
        (FIGURE, 2, "1 figures shown, the executed notebook made 2"),  # a figure lost in the build
        (
            FIGURE + '<div class="cell_output"><div class="output traceback">ValueError: boom</div></div>',
            1,
            "execution errors",
        ),
        (
            FIGURE
            + '<div class="cell_output"><div class="output stderr">UserWarning: initialized randomly</div></div>',
            1,
            "1 stderr block(s)",
        ),
        (
            FIGURE + '<p><span class="math notranslate nohighlight">\\(\\epsilon = 1/255\\)</span></p>',
            1,
            "1 formula(s) shown as TeX",
        ),  # MathJax never ran
        (
            FIGURE + '<script defer src="https://mathjax.invalid/tex-chtml.js"></script>',
            1,
            "MathJax loaded from the network",
        ),
        (
            FIGURE + '<script src="https://cdn.invalid/embed-amd.js"></script>',
            1,
            "1 script(s) from the network, e.g. https://cdn.invalid/embed-amd.js",
        ),
        (
            FIGURE + '<script>const THEBE_JS_URL = "x";</script><script>const THEBE_JS_URL = "x";</script>',
            1,
            "an inline script twice",
        ),
        (
            FIGURE
            + '<div class="cell_input"><pre style="width: 600px; overflow: auto">'
            + "x = 1  " * 120
            + "</pre></div>",
            1,
            "1 code cell(s) wider than the column",
        ),
        (
            '<div class="cell_output" style="width: 300px"><img src="../_images/figure.png" style="width: 600px; '
            'max-width: 100%"></div>',
            1,
            "1 figure(s) wider than the column, scaled down",
        ),
        (
            FIGURE + '<div class="cell_output"><pre style="width: 300px; overflow: auto">' + SENTENCE + "</pre></div>",
            1,
            "1 printed output(s) with a line wider than its box",
        ),  # a generated sentence behind a scroll bar
    ],
)
def test_what_a_reader_would_see_as_broken_fails(tmp_path, capsys, body, figures_made, problem):
    assert _checker().main(_book(tmp_path, body, figures_made)) == 1
    assert problem in capsys.readouterr().out


@pytest.mark.parametrize(
    "table",
    [
        f'<article style="width: 300px"><table><tr><th>{WIDE}</th><th>accuracy</th></tr>'
        "<tr><td>1.4</td><td>0.7</td></tr></table></article>",
        # a table that scrolls inside its output hides its columns too
        f'<div class="cell_output" style="width: 300px"><div style="overflow: auto"><table><tr><th>{WIDE}</th></tr>'
        "<tr><td>1.4</td></tr></table></div></div>",
    ],
)
def test_a_table_wider_than_the_column_fails(tmp_path, capsys, table):
    assert _checker().main(_book(tmp_path, FIGURE + table)) == 1
    assert "1 table(s) wider than the column, its last columns hidden, e.g. '" in capsys.readouterr().out


def test_a_repeated_var_is_harmless_and_passes(tmp_path):
    script = "<script>var selector = '.toggle';</script>"
    assert _checker().main(_book(tmp_path, FIGURE + script + script)) == 0


def test_a_sentence_that_wraps_in_the_column_and_a_table_that_fits_pass(tmp_path):
    css = (ROOT / "book" / "_static" / "zsr_lab.css").as_uri()  # the book's own style: printed output wraps
    body = (
        f'<link rel="stylesheet" href="{css}">{FIGURE}<article style="width: 300px"><div class="cell_output">'
        f"<pre>{SENTENCE}</pre></div><table><tr><th>lift</th></tr><tr><td>1.4</td></tr></table></article>"
    )
    assert _checker().main(_book(tmp_path, body)) == 0


def test_a_formula_typeset_by_the_books_own_mathjax_passes(tmp_path):
    import importlib.util

    mathjax = Path(importlib.util.find_spec("sphinx-mathjax-offline").origin).parent / "static" / "mathjax"
    script = f'<script defer src="{(mathjax / "tex-chtml.js").as_uri()}"></script>'
    formula = '<p><span class="math notranslate nohighlight">\\(\\epsilon = 1/255\\)</span></p>'
    assert _checker().main(_book(tmp_path, FIGURE + formula + script)) == 0
