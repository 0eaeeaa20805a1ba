"""The table of benchmark scripts for the Benchmarks page: one row per ``benchmarks/*.py``, with
the first paragraph of its docstring (read with ``ast``, not imported), so a new benchmark
appears on the page by itself and one without a docstring fails the build."""
from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["benchmarks_markdown"]


def benchmarks_markdown(folder: Path) -> str:
    rows = ["| script | measures |", "| --- | --- |"]
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if not doc:
            raise ValueError(f"{path}: no module docstring; say what it measures in its first "
                             f"paragraph (the Benchmarks page shows it)")
        first = " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")
        rows.append(f"| `benchmarks/{path.name}` | {first} |")
    return "\n".join(rows) + "\n"
