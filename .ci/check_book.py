"""Open every page of the built book in headless Chromium and check what a reader would see.

For each page of the table of contents, laid out at a desktop width: the page loads and has its title, every image
of it has loaded in the browser (a figure whose file is missing shows as a broken image), the executed chapters
show as many figures as their executed notebook produced, no page shows an execution error (a traceback in an
output) or a stderr block, every notebook page has a Colab launch link to its own notebook, no script comes from
the network or runs twice, MathJax comes from the book itself and has typeset every formula (none is left as
TeX), and no code cell, line of printed output, table or displayed formula is wider than the text column or its
box (clipped, or behind a scroll bar).

Usage: python .ci/check_book.py [BOOK_ROOT]   (after `jupyter-book build`; needs the `chromium` command)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HARNESS = """<!doctype html><html><body><pre id="result">pending</pre><script>
const pages = PAGES;
const report = {};
let left = pages.length;
const wide = e => e.scrollWidth > e.clientWidth + 1;
function inspect(frame, page) {
  // MathJax typesets after the page has loaded: wait for it (a MathJax that never loaded leaves the TeX)
  const mathjax = frame.contentWindow.MathJax;
  const typeset = mathjax && mathjax.startup && mathjax.startup.promise ? mathjax.startup.promise : Promise.resolve();
  typeset.then(() => collect(frame, page), () => collect(frame, page));
}
function collect(frame, page) {
  const doc = frame.contentDocument;
  const images = Array.from(doc.querySelectorAll("img"));
  report[page] = {
    stderr: Array.from(doc.querySelectorAll(".cell_output .stderr")).map(e => e.textContent.slice(0, 200)),
    mathjax: Array.from(doc.querySelectorAll("script[src*='mathjax' i]")).map(s => s.getAttribute("src")),
    // scripts from the network fail offline; an inline script twice re-declares its constants (a SyntaxError)
    remoteScripts: Array.from(doc.querySelectorAll("script[src]")).map(s => s.getAttribute("src"))
      .filter(src => /^(https?:)?[/][/]/.test(src)),
    repeatedScripts: Array.from(doc.querySelectorAll("script:not([src])")).map(s => s.textContent.trim())
      .filter((text, i, all) => /(const|let|class) /.test(text) && all.indexOf(text) !== i)
      .map(text => text.slice(0, 80)),
    untypeset: Array.from(doc.querySelectorAll(".math")).filter(m => !m.querySelector("mjx-container"))
      .map(m => m.textContent.trim().slice(0, 80)),
    wideCode: Array.from(doc.querySelectorAll(".cell_input pre")).filter(wide)
      .map(p => p.textContent.split("\\n").reduce((a, b) => (b.length > a.length ? b : a), "").slice(0, 100)),
    wideMath: Array.from(doc.querySelectorAll("div.math")).filter(wide).map(m => m.textContent.trim().slice(0, 80)),
    // printed output (sentences, banners, verdicts): every line inside its box, none cut off or behind a scroll bar
    wideOutput: Array.from(doc.querySelectorAll(".cell_output pre")).filter(wide)
      .map(p => p.textContent.split("\\n").reduce((a, b) => (b.length > a.length ? b : a), "").slice(0, 100)),
    // tables, in the prose or printed by a cell: every column inside the text column
    wideTables: Array.from(doc.querySelectorAll("table")).filter(t => {
      const column = t.closest(".cell_output") || t.closest("article") || doc.body;
      let box = t.parentElement, clipped = false;
      for (; box && box !== column; box = box.parentElement) clipped = clipped || wide(box);  // scrolled
      return clipped || t.getBoundingClientRect().width > column.clientWidth + 1;
    }).map(t => `${Math.round(t.getBoundingClientRect().width)} px: ` + Array.from(t.querySelectorAll("th"))
      .map(h => h.textContent.trim()).filter(Boolean).join(" | ").slice(0, 100)),
    title: doc.querySelector("h1") ? doc.querySelector("h1").textContent.trim() : "",
    outputImages: doc.querySelectorAll(".cell_output img").length,
    brokenImages: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src")),
    // a figure drawn wider than the column is scaled down, and its text with it
    shrunkFigures: Array.from(doc.querySelectorAll(".cell_output img")).filter(i => i.clientWidth > 0
      && i.clientWidth < 0.97 * parseFloat(i.style.width || i.getAttribute("width") || i.naturalWidth))
      .map(i => `${i.getAttribute("src")} (${i.style.width || i.getAttribute("width") || i.naturalWidth} shown `
        + `at ${i.clientWidth}px)`),
    errors: Array.from(doc.querySelectorAll(".cell_output .traceback, .cell_output .error"))
      .map(e => e.textContent.slice(0, 300)),
    colab: Array.from(doc.querySelectorAll('a[href*="colab.research.google.com"]')).map(a => a.href),
  };
  if (--left === 0) document.getElementById("result").textContent = JSON.stringify(report);
}
for (const page of pages) {
  const frame = document.createElement("iframe");
  frame.style.width = "1280px";  // a desktop window: the theme's text column at its usual width
  frame.style.height = "900px";
  frame.onload = () => setTimeout(() => inspect(frame, page), 500);  // let the page's scripts settle
  frame.src = page;
  document.body.appendChild(frame);
}
</script></body></html>"""


def chapters(root: Path) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))  # this repository's reader
    from book_order import toc_files

    return toc_files(root / "_toc.yml")


def figures_in_executed_notebook(root: Path, chapter: str) -> int | None:
    """The figures of the chapter's execution the pages show: jupyter-cache's, which a build that finds a chapter
    there renders without writing its outputs into ``_build/jupyter_execute``."""
    import nbformat
    from jupyter_cache import get_cache

    source = root / f"{chapter}.ipynb"
    if not source.exists():
        return None  # not a notebook
    try:
        notebook = get_cache(str(root / "_build" / ".jupyter_cache")).merge_match_into_notebook(
            nbformat.read(source, 4)
        )[1]
    except KeyError:
        return None  # not executed by this build
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


def main(root: Path) -> int:
    html = root / "_build" / "html"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("check_book: no chromium command; install the Debian package 'chromium'")
        return 2
    pages = {chapter: html / f"{chapter}.html" for chapter in chapters(root)}
    missing = [str(path) for path in pages.values() if not path.exists()]
    if missing:
        print("check_book: pages missing from the build:", ", ".join(missing))
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        harness = Path(tmp) / "harness.html"
        harness.write_text(HARNESS.replace("PAGES", json.dumps([p.resolve().as_uri() for p in pages.values()])))
        dom = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--allow-file-access-from-files",
                "--window-size=1400,1000",
                "--virtual-time-budget=120000",
                "--dump-dom",
                harness.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        ).stdout
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, flags=re.S)
    if not found or found.group(1) == "pending":
        print("check_book: the browser did not finish inspecting the pages")
        return 1
    report = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    failures = []
    for chapter, path in pages.items():
        seen = report[path.resolve().as_uri()]
        expected = figures_in_executed_notebook(root, chapter)
        problems = []
        if not seen["title"]:
            problems.append("no title")
        if seen["brokenImages"]:
            problems.append(f"images that did not load: {seen['brokenImages']}")
        if expected is not None and seen["outputImages"] != expected:
            problems.append(f"{seen['outputImages']} figures shown, the executed notebook made {expected}")
        if seen["shrunkFigures"]:
            problems.append(
                f"{len(seen['shrunkFigures'])} figure(s) wider than the column, scaled down with their "
                f"text, e.g. {seen['shrunkFigures'][0]}"
            )
        if seen["errors"]:
            problems.append(f"execution errors: {seen['errors']}")
        if seen["stderr"]:
            problems.append(f"{len(seen['stderr'])} stderr block(s), e.g. {seen['stderr'][0]!r}")
        remote = [src for src in seen["mathjax"] if "://" in src and not src.startswith("file:")]
        if remote:
            problems.append(f"MathJax loaded from the network ({remote[0]}): formulas need a connection")
        elif seen["remoteScripts"]:
            problems.append(f"{len(seen['remoteScripts'])} script(s) from the network, e.g. {seen['remoteScripts'][0]}")
        if seen["repeatedScripts"]:
            problems.append(f"an inline script twice (its constants declared again): {seen['repeatedScripts'][0]!r}")
        if seen["untypeset"]:
            problems.append(f"{len(seen['untypeset'])} formula(s) shown as TeX, e.g. {seen['untypeset'][0]!r}")
        if seen["wideCode"]:
            problems.append(f"{len(seen['wideCode'])} code cell(s) wider than the column, e.g. {seen['wideCode'][0]!r}")
        if seen["wideOutput"]:
            problems.append(
                f"{len(seen['wideOutput'])} printed output(s) with a line wider than its box, e.g. "
                f"{seen['wideOutput'][0]!r}"
            )
        if seen["wideMath"]:
            problems.append(f"{len(seen['wideMath'])} formula(s) wider than the column, e.g. {seen['wideMath'][0]!r}")
        if (root / f"{chapter}.ipynb").exists() and not any(
            link.endswith(f"/{chapter}.ipynb") for link in seen["colab"]
        ):
            problems.append(f"no Colab launch link to {chapter}.ipynb (found {seen['colab']})")
        if seen["wideTables"]:
            problems.append(
                f"{len(seen['wideTables'])} table(s) wider than the column, its last columns hidden, e.g. "
                f"{seen['wideTables'][0]!r}"
            )
        status = "; ".join(problems) or "ok"
        print(f"{chapter}: {seen['title'][:60]!r}, {seen['outputImages']} figures — {status}")
        failures += problems
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()))
