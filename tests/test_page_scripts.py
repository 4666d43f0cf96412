"""book/_ext/page_scripts.py: a page keeps each script once."""

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
import page_scripts  # noqa: E402


def _script(filename, **attributes):
    return SimpleNamespace(filename=filename, priority=500, attributes=attributes)


def test_an_inline_script_registered_twice_is_kept_once_and_files_stay():
    thebe = 'const THEBE_JS_URL = "x"'
    context = {
        "script_files": [
            _script("_static/doctools.js"),
            _script(None, body=thebe),
            _script("", body=thebe),  # the same script, registered by the second step with "" for None
            _script("", body="let other = 1;"),
        ]
    }
    page_scripts._each_script_once(None, "page", "page.html", context, None)
    assert [(s.filename, s.attributes.get("body")) for s in context["script_files"]] == [
        ("_static/doctools.js", None),
        (None, thebe),
        ("", "let other = 1;"),
    ]
