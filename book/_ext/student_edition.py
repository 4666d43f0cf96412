"""Sphinx extension: the student edition, the book without the exercises' solutions (``student_edition: true``).

sphinx-exercise's own ``hide_solutions`` drops a solution written as one directive, but not one written, as this
book's are, between ``solution-start`` and ``solution-end``: its content stays on the page and the end marker
breaks the build. This transform removes every solution after sphinx-exercise has merged the gated ones into
single solution nodes.
"""

from __future__ import annotations

from sphinx.transforms import SphinxTransform
from sphinx_exercise.nodes import solution_node


class RemoveSolutions(SphinxTransform):
    default_priority = 11  # after sphinx-exercise's MergeGatedSolutions (10)

    def apply(self) -> None:
        if not self.config.student_edition:
            return
        for node in list(self.document.findall(solution_node)):
            node.parent.remove(node)


def setup(app):
    app.add_config_value("student_edition", False, "env")
    app.add_transform(RemoveSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
