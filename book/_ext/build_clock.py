"""Sphinx extension: log the book build's time to zsr_lab's work log (kind ``rendering``), so that
``.ci/time_account.py`` can say how much of a build is executing chapters and how much is rendering pages."""

from __future__ import annotations

import time


def _start(app) -> None:
    app.zsr_lab_build_start = time.time()


def _finish(app, exception) -> None:
    start = getattr(app, "zsr_lab_build_start", None)
    if start is None or exception is not None:
        return
    from zsr_lab import worklog

    edition = "student edition" if getattr(app.config, "student_edition", False) else "book"
    worklog.record_span("rendering", f"{edition} ({app.builder.name})", start, time.time() - start)


def setup(app):
    app.connect("builder-inited", _start)
    app.connect("build-finished", _finish)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
