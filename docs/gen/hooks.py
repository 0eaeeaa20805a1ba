"""MkDocs hooks (``hooks:`` in ``mkdocs.yml``): the generated part of the site, made on every
build (``make docs``, ``make docs-serve``, the tests) and never committed.

* ``on_files`` adds the generated pages (``reference/cli.md``, ``reference/weights.md``) and the
  figures (``assets/figures/*.png``) to the site's files, so navigation, links and search see
  them as if they were written by hand.
* ``on_page_content`` drops the Sphinx roles (``:func:``) of docstrings from the API pages.
* ``on_page_markdown`` replaces a ``<!-- gen: NAME -->`` line of a hand-written page by the
  generated block ``NAME`` (``config-keys``, ``config-recipes``: every configuration key and the
  shipped recipes, on ``reference/config.md``; ``layout-rules``: the rules of
  ``tests/test_packaging.py``; ``benchmarks``: the benchmark scripts and what they measure).
"""
from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path
from typing import Callable

from mkdocs.structure.files import File, Files

DOCS = Path(__file__).resolve().parents[1]
REPO = DOCS.parent
if str(DOCS) not in sys.path:
    sys.path.insert(0, str(DOCS))

from gen import (benchmarks_reference, cli_reference, config_reference, figures,  # noqa: E402
                 layout_reference, weights_reference)

PAGES: dict[str, Callable[[], str]] = {
    "reference/cli.md": cli_reference.cli_markdown,
    "reference/weights.md": weights_reference.weights_markdown,
}
BLOCKS: dict[str, Callable[[], str]] = {
    "config-keys": config_reference.keys_markdown,
    "config-recipes": config_reference.recipes_markdown,
    "layout-rules": lambda: layout_reference.layout_markdown(REPO / "tests" / "test_packaging.py"),
    "benchmarks": lambda: benchmarks_reference.benchmarks_markdown(REPO / "benchmarks"),
}
FIGURE_DIR = "assets/figures"
log = logging.getLogger("mkdocs.hooks.tanet")
# Sphinx roles in docstrings (:func:`x`), which mkdocstrings renders as text before the code
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):(?=<code>)")
_BLOCK = re.compile(r"^<!--\s*gen:\s*(?P<name>[\w-]+)\s*-->\s*$", re.M)


def on_files(files: Files, config) -> Files:
    started = time.perf_counter()
    for uri, make in PAGES.items():
        files.append(File.generated(config, uri, content=make()))
    for name, draw in figures.FIGURES.items():
        files.append(File.generated(config, f"{FIGURE_DIR}/{name}", content=draw()))
    log.info(f"generated {len(PAGES)} pages and {len(figures.FIGURES)} figures in "
             f"{time.perf_counter() - started:.1f} s")
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    def block(m: re.Match) -> str:
        if m["name"] not in BLOCKS:
            raise KeyError(f"docs/{page.file.src_uri}: unknown generated block {m['name']!r}; "
                           f"known: {', '.join(BLOCKS)}")
        return BLOCKS[m["name"]]()

    return _BLOCK.sub(block, markdown)


def on_page_content(html: str, page, config, files) -> str:
    """Docstrings use Sphinx roles (:func:`name`); the API pages show just the name."""
    return _ROLE.sub("", html)
