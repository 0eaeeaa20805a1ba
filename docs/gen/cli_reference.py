"""The command-line reference page, generated from ``tanet.cli.build_parser()``: every command,
its usage line, description and every argument with its default, choices and help, grouped by
the ``tanet.cli`` module that registers it. Nothing here is typed by hand, so it cannot drift."""
from __future__ import annotations

import argparse
import importlib

__all__ = ["subcommands", "cli_markdown", "anchor"]

_HEADER = """# Command line

Every `tanet` command, its options and their defaults, generated from the argument parser
(`tanet.cli.build_parser()`) on every build of this site. `tanet COMMAND --help` prints the same.
Every command also takes `--quiet` (no progress bars) and `--debug` (tracebacks instead of
one-line errors), before or after its name. Long-running commands show a progress bar; errors
name the file, line or key and say what to do. Where a command takes `--checkpoint`, a tanet
`.safetensors`, the authors' or mmaction2's `.pth`, a published weights name
([Published weights](weights.md)) or an `https://` URL all work.
"""


def subcommands(parser: argparse.ArgumentParser | None = None
                ) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """``{name: (its parser, its help line)}`` in ``tanet --help`` order."""
    if parser is None:
        from tanet.cli import build_parser

        parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in action._choices_actions}
    return {name: (p, helps.get(name, "")) for name, p in action.choices.items()}


def anchor(command: str) -> str:
    """The page anchor of ``tanet COMMAND`` (``#tanet-predict``)."""
    return f"tanet-{command}"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(action: argparse.Action) -> str:
    if action.required or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return "required" if action.required else ""
    d = action.default
    if d is argparse.SUPPRESS or d is None or (isinstance(action, argparse._StoreTrueAction)
                                                and d is False):
        return ""
    if isinstance(d, (list, tuple)) and not d:
        return ""
    return f"`{d}`"


def _name(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    flags = ", ".join(f"`{s}`" for s in action.option_strings)
    if action.nargs == 0:
        return flags
    metavar = action.metavar or (action.dest.upper() if not action.choices else None)
    if action.choices and not action.metavar:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    return f"{flags} `{metavar}`" + (" ..." if action.nargs in ("+", "*") else "")


def _help(action: argparse.Action) -> str:
    text = (action.help or "") % {"default": action.default, "prog": "tanet"} \
        if action.help and "%(" in action.help else (action.help or "")
    if action.choices and action.option_strings and action.metavar:
        text += f" (one of: {', '.join(map(str, action.choices))})"
    return text


def _arguments(p: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | default | what |", "| --- | --- | --- |"]
    for action in p._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings and action.option_strings[0] in ("--quiet", "--debug"):
            continue  # every command's; said once at the top
        rows.append(f"| {_name(action)} | {_default(action)} | {_cell(_help(action))} |")
    return rows


def _group_title(module: str) -> str:
    doc = (importlib.import_module(module).__doc__ or module).strip().splitlines()[0]
    return doc.split(":")[0].rstrip(".")


def cli_markdown() -> str:
    """The whole page."""
    groups: dict[str, list[str]] = {}
    commands = subcommands()
    for name, (p, _) in commands.items():
        func = p.get_default("func")
        groups.setdefault(func.__module__ if func else "tanet.cli", []).append(name)
    out = [_HEADER, "| command | what |", "| --- | --- |"]
    out += [f"| [`tanet {n}`](#{anchor(n)}) | {_cell(h)} |" for n, (_, h) in commands.items()]
    for module, names in groups.items():
        out += ["", f"## {_group_title(module)}", ""]
        for name in names:
            p, help_line = commands[name]
            usage = " ".join(p.format_usage().split()).removeprefix("usage: ")
            sentence = _cell(help_line)[:1].upper() + _cell(help_line)[1:]
            out += [f"### `tanet {name}` {{#{anchor(name)}}}", "", sentence + ".", ""]
            if p.description and p.description != help_line:
                out += [p.description, ""]
            out += ["```text", usage, "```", ""] + _arguments(p) + [""]
    return "\n".join(out) + "\n"
