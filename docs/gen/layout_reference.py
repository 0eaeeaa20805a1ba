"""The layout rules for the Contributing page, read from the test that enforces them
(``tests/test_packaging.py``) with ``ast``, without importing it: the import rules between the
package's layers (``RULES``), the size limits of modules and functions, and the names that must
be defined in exactly one module. What the page says is what the test checks."""
from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["packaging_rules", "layout_markdown"]


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def packaging_rules(test_file: Path) -> dict:
    """``{"imports": {layer: [forbidden layers]}, "module_lines": N, "function_lines": M,
    "single": {name: [module]}}`` as ``test_file`` states them."""
    tree = ast.parse(test_file.read_text(encoding="utf-8"))
    rules = next(n for n in tree.body if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "RULES" for t in n.targets))
    imports = {k: sorted(v) for k, v in ast.literal_eval(rules.value).items()}
    sizes = [n.comparators[0].value for n in ast.walk(_function(tree, "test_module_and_function_sizes"))
             if isinstance(n, ast.Compare) and isinstance(n.ops[0], ast.Gt)
             and isinstance(n.comparators[0], ast.Constant)]
    single = {}
    for node in ast.walk(_function(tree, "test_one_definition_of_each_shared_rule")):
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.Eq) \
                and isinstance(node.left, ast.Subscript) \
                and isinstance(node.left.slice, ast.Constant) \
                and isinstance(node.comparators[0], ast.List):
            value = ast.literal_eval(node.comparators[0])
            if value:
                single[node.left.slice.value] = value
    return {"imports": imports, "module_lines": max(sizes), "function_lines": min(sizes),
            "single": single}


def layout_markdown(test_file: Path) -> str:
    """The rules as Markdown (included in the Contributing page)."""
    r = packaging_rules(test_file)
    out = ["| package or module | never imports |", "| --- | --- |"]
    out += [f"| `tanet.{layer}` | " + ", ".join(f"`{x}`" for x in forbidden) + " |"
            for layer, forbidden in r["imports"].items()]
    out += ["", f"Nothing outside `tanet.cli` imports `tanet.cli`; the library never imports "
                f"`tanet.testing`; there are no import cycles, function-level imports included. "
                f"A module has at most {r['module_lines']} lines, a function at most "
                f"{r['function_lines']}.", "",
            "Each of these is defined in exactly one module:", "",
            "| name | the one module |", "| --- | --- |"]
    out += [f"| `{name.removesuffix(' literal')}`"
            + (" (the literal)" if name.endswith(" literal") else "")
            + f" | {', '.join(f'`{m}`' for m in mods)} |"
            for name, mods in r["single"].items()]
    return "\n".join(out) + "\n"
