"""The format pages: docs/formats/<format>.md, <format>.svg and index.md,
rendered from each spec module's ``FORMAT``, docstring and bit map."""

from __future__ import annotations


def render_docs() -> dict[str, str]:
    """Every file under docs/formats/, path -> text."""
    return {}
