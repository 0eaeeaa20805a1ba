"""The generated parts of the configuration page (``docs/reference/config.md``, hand-written
around two ``<!-- gen: NAME -->`` blocks): every key (``tanet.config.all_keys()``), its type,
its default (from the dataclasses themselves) and its documentation, which is the comment at the
end of the field's line in ``tanet/config/schema.py`` (read with ``tokenize``, so a ``#`` inside
a string is not a comment), one table per section under the section's class docstring; and the
shipped recipes with their first comment line."""
from __future__ import annotations

import ast
import dataclasses
import io
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

__all__ = ["field_comments", "config_rows", "keys_markdown", "recipes_markdown"]

def field_comments(source: str) -> dict[str, dict[str, str]]:
    """``{class name: {field name: comment}}`` for the annotated fields of every class in
    ``source``: the comment on the last line of the field's statement, without ``#``."""
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = out.setdefault(node.name, {})
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                fields[stmt.target.id] = comments.get(stmt.end_lineno or stmt.lineno, "")
    return out


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix(
        "\n...").removesuffix("...").strip()


def config_rows() -> list[dict[str, Any]]:
    """One row per key, in ``all_keys()`` order: ``key``, ``section`` (its dataclass),
    ``type``, ``default`` (YAML), ``doc`` (the schema's comment)."""
    from tanet.config import Config, all_keys
    from tanet.config import schema

    comments = field_comments(Path(schema.__file__).read_text(encoding="utf-8"))
    rows = []
    for key in all_keys():
        cls: Any = Config
        *parents, leaf = key.split(".")
        for part in parents:
            cls = typing.get_type_hints(cls)[part]
        f = {x.name: x for x in dataclasses.fields(cls)}[leaf]
        rows.append(dict(key=key, section=cls, type=_type_name(typing.get_type_hints(cls)[leaf]),
                         default=_yaml(_default(f)), doc=comments.get(cls.__name__, {}).get(leaf, "")))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    """A code span in a table cell; a '|' (which a code span cannot escape) as an entity
    outside it."""
    return " &#124; ".join(f"`{part.strip()}`" for part in text.split("|"))


def recipes_markdown() -> str:
    """The shipped recipes (``tanet recipes``), each with the first line of its comment."""
    from tanet.config import find_config, list_recipes

    out = ["| recipe | what |", "| --- | --- |"]
    for name in list_recipes():
        first = find_config(name).read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        out.append(f"| `{name}` | {_cell(first)} |")
    return "\n".join(out) + "\n"


def keys_markdown() -> str:
    """Every key: one ``## `section` `` heading per section (its class docstring, then a table of
    key, type, default and comment)."""
    out: list[str] = []
    by_section: dict[str, list[dict[str, Any]]] = {}
    for row in config_rows():
        prefix = row["key"].rsplit(".", 1)[0] if "." in row["key"] else ""
        by_section.setdefault(prefix, []).append(row)
    for prefix, rows in by_section.items():
        cls = rows[0]["section"]
        title = f"`{prefix}`" if prefix else "Top level"
        doc = " ".join((cls.__doc__ or "").split())
        out += [f"## {title}", "", doc, "", "| key | type | default | what |",
                "| --- | --- | --- | --- |"]
        out += [f"| `{r['key']}` | {_cell(r['type'])} | {_code(r['default'])} | "
                f"{_cell(r['doc'])} |" for r in rows]
        out.append("")
    return "\n".join(out) + "\n"
