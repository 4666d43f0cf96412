"""Progress bars: tqdm's notebook or terminal bar, or, where the output becomes a document, one line of text.

``ZSR_LAB_PROGRESS=text`` selects the text form, which the book's build sets (``book/_ext/text_progress.py``): a
notebook bar is a widget that a static page cannot draw, and a terminal bar's carriage returns pile up in a saved
output. The text form prints a finished bar's last line (what ran, how many steps, how long), and nothing for a bar
that does not stay (``leave=False``).
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm as notebook_or_terminal_bar
from tqdm.std import tqdm as terminal_bar

PROGRESS_ENV = "ZSR_LAB_PROGRESS"


class _Discard:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class TextProgress(terminal_bar):
    """A tqdm bar that draws nothing while it runs and prints its final line once, when it closes."""

    def __init__(self, *args, **kwargs):
        kwargs["file"] = _Discard()
        self._reported = False
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        if not self.disable and self.leave and not self._reported:
            self._reported = True
            print(str(self))
        super().close()


def progress_bar(*args, **kwargs):
    """``tqdm(*args, **kwargs)``: the notebook or terminal bar, or :class:`TextProgress` when
    ``$ZSR_LAB_PROGRESS`` is ``"text"``."""
    bar = TextProgress if os.environ.get(PROGRESS_ENV) == "text" else notebook_or_terminal_bar
    return bar(*args, **kwargs)
