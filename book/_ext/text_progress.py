"""Sphinx extension: the chapters the build executes print their progress as text.

The kernels inherit the build's environment; ``ZSR_LAB_PROGRESS=text`` makes ``zsr_lab``'s progress bars print
one line when they finish instead of drawing a notebook widget, which a static page cannot show.
"""

from __future__ import annotations

import os


def setup(app):
    os.environ.setdefault("ZSR_LAB_PROGRESS", "text")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
