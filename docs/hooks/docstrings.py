"""Griffe extension for the API reference: docstrings as Python shows them.

* Docstrings that a class builds at import time (``__doc__ = ...``, as the
  scikit-learn estimators do) cannot be read from the source; they are taken
  from the class imported from the same source tree.
* fastnn's docstrings are NumPy style and name other objects with Sphinx
  roles (``:func:`save```, ``:class:`~fastnn.MLP```). Markdown has no such
  roles, so each one is rewritten as inline code showing the name (its last
  part for a ``~`` target), the way Sphinx would print it.
"""

import importlib
import inspect
import re
import sys

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj):`(~?)([^`]+)`")


def _name(match):
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _objects(obj):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class FastnnDocstrings(griffe.Extension):
    """Fill in import-time class docstrings, then rewrite Sphinx roles as code."""

    def on_package(self, *, pkg, loader, **kwargs):
        root = str(pkg.filepath.parent.parent)  # the tree being documented
        for obj in _objects(pkg):
            if obj.is_class and obj.docstring is None and "__doc__" in obj.members:
                sys.path.insert(0, root)
                try:
                    doc = getattr(importlib.import_module(obj.parent.path), obj.name).__doc__
                finally:
                    sys.path.remove(root)
                obj.docstring = griffe.Docstring(
                    inspect.cleandoc(doc),
                    parent=obj,
                    parser=loader.docstring_parser,
                    parser_options=loader.docstring_options,
                )
            if obj.docstring is not None:
                obj.docstring.value = _ROLE.sub(_name, obj.docstring.value)
