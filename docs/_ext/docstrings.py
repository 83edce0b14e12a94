"""Griffe extension: render exactflow's reStructuredText-flavoured docstrings as Markdown.

exactflow's docstrings are Google style with two habits griffe's Markdown output does not
understand:

- doctests headed ``Example:`` (griffe knows only ``Examples:`` as a section of code; any other
  title becomes an admonition of plain Markdown, where ``>>>`` prompts turn into quotes);
- Sphinx roles such as ``:class:`~exactflow.nn.SpectralConv2d``` and ``:func:`certificate```.

Both are rewritten before griffe parses a docstring, so the sources stay as they are: the
heading becomes ``Examples:``, and each role becomes an optional cross-reference (a link when
the object is rendered on some page, plain code otherwise) whose target is the role's full
path, or the name resolved in the scope of the object that holds the docstring.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([\w.]+)(\(\))?`")


def _target(obj: griffe.Object, name: str) -> str | None:
    """The full path of ``name`` as written in ``obj``'s docstring, or None if unknown."""
    if name.startswith("exactflow"):
        return name
    head, _, rest = name.partition(".")
    try:
        path = obj.resolve(head)
    except (griffe.NameResolutionError, ValueError):
        return None
    return f"{path}.{rest}" if rest else path


class DocstringMarkup(griffe.Extension):
    """Rename ``Example:`` headings and turn Sphinx roles into optional cross-references."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring before it is parsed."""
        if obj.docstring is None:
            return

        def reference(match: re.Match[str]) -> str:
            short, name, call = match.group(1), match.group(2), match.group(3) or ""
            title = f"<code>{name.rsplit('.', 1)[-1] if short else name}{call}</code>"
            target = _target(obj, name)
            if target is None:
                return title
            return f'<autoref identifier="{target}" optional>{title}</autoref>'

        text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
        obj.docstring.value = _ROLE.sub(reference, text)
