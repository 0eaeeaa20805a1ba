"""The fenced examples of the documentation pages, and the checks that keep them true.

A page's fences are found with their language and the marker on the line before them, if any:

* ``<!-- needs: data -->``, ``<!-- needs: gpu -->`` or ``<!-- needs: network -->`` (a reason may
  follow the word): a Python example that needs files the reader has (their videos, a dataset),
  a GPU, or a download (published weights). It is compiled but not run by the tests.
* ``<!-- run -->`` before a ``bash`` fence: the page's walk-through; the tests run its ``tanet``
  commands, in page order, interleaved with the page's Python examples (on smaller numbers,
  ``tests/test_docs.py`` says which).

Every other Python fence runs in the tests (in a temporary folder, one namespace per page), and
every ``tanet`` command of a ``bash``/``console``/``shell`` fence (also after ``torchrun ... -m``
or ``python -m``) is parsed by ``tanet.cli.build_parser()``: the command and its flags must
exist, ``--set`` keys must be config keys with values of their type, ``--config NAME`` a shipped
recipe or a YAML file.

``README.md`` is read the same way (``read_fences(readme, repo, prefix="")``): its examples get
the same checks as the site's.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Fence", "NEEDS", "read_fences", "commands", "check_command", "docs_pages"]

NEEDS = ("data", "gpu", "network")
SHELLS = ("bash", "sh", "shell", "console")
_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?:needs:\s*(?P<needs>[\w-]+)|(?P<run>run))\b.*-->\s*$")
_OPERATORS = {"|", "||", "&&", ";", "&", "(", ")"}


@dataclass(frozen=True)
class Fence:
    """One fenced block: where it is, its language, its code (dedented) and its marker."""

    page: str  # path relative to docs/, e.g. "get-started/fine-tune.md"
    line: int  # 1-based line of the opening fence
    lang: str  # "python", "bash", ... ("" when none)
    code: str
    needs: str | None = None  # "data" | "gpu" | "network": not run by the tests
    run: bool = False  # a walk-through bash fence: its commands run in the tests
    prefix: str = "docs/"  # where ``page`` is, from the repository root ("" for README.md)

    @property
    def where(self) -> str:
        return f"{self.prefix}{self.page}:{self.line}"


def docs_pages(docs: Path) -> list[Path]:
    """Every hand-written Markdown page under ``docs`` (the generators' folder excluded)."""
    return sorted(p for p in docs.rglob("*.md") if "gen" not in p.relative_to(docs).parts[:1])


def read_fences(path: Path, docs: Path, prefix: str = "docs/") -> list[Fence]:
    """The fences of one page, in order; ``page`` is the path relative to ``docs``, ``prefix``
    what goes before it in messages (``README.md``: ``read_fences(readme, repo, "")``). An
    unknown ``needs:`` word is an error naming the line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(docs).as_posix()
    out: list[Fence] = []
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        info = m["info"].strip()
        lang = re.split(r"[\s{]", info, maxsplit=1)[0].lstrip(".").lower() if info else ""
        body = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$",
                                              lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        needs, run = _marker(lines, i, prefix + page)
        out.append(Fence(page, i + 1, lang, "\n".join(body) + "\n", needs, run, prefix))
        i = j + 1
    return out


def _marker(lines: list[str], i: int, page: str) -> tuple[str | None, bool]:
    """The ``<!-- needs: X -->`` / ``<!-- run -->`` marker on the non-blank line above line i."""
    k = i - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    m = _MARKER.match(lines[k]) if k >= 0 else None
    if not m:
        return None, False
    if m["needs"] and m["needs"] not in NEEDS:
        raise ValueError(f"{page}:{k + 1}: unknown marker 'needs: {m['needs']}'; "
                         f"use one of {', '.join(NEEDS)}")
    return m["needs"], bool(m["run"])


def commands(fence: Fence) -> list[list[str]]:
    """The ``tanet`` command lines of a shell fence as argv lists (without ``tanet``):
    continuation lines joined, comments dropped, pipes and ``&&`` split, ``VAR=x`` prefixes,
    ``torchrun ... -m tanet`` and ``python -m tanet`` understood."""
    if fence.lang not in SHELLS:
        return []
    out = []
    for tokens in _shell_lines(fence):
        segment: list[str] = []
        skip = False
        for tok in tokens + [";"]:
            if skip:  # the target of a redirection
                skip = False
                continue
            if tok and set(tok) <= set("<>&") and tok not in _OPERATORS:  # > out, 2>&1, < in
                if segment and segment[-1].isdigit():
                    segment.pop()  # the 2 of 2>
                skip = not tok.endswith("&") or tok == ">&"
                continue
            if tok in _OPERATORS:
                argv = _tanet_argv(segment)
                if argv is not None:
                    out.append(argv)
                segment = []
            else:
                segment.append(tok)
    return out


def _shell_lines(fence: Fence) -> list[list[str]]:
    """The fence's command lines as shell tokens: ``\\``-continued lines joined, a console
    prompt (``$ ``) dropped, a quoted string that spans lines kept whole, comments dropped."""
    pending = [re.sub(r"^\s*\$\s+", "", line)
               for line in re.sub(r"\\\n", " ", fence.code).splitlines()]
    out: list[list[str]] = []
    while pending:
        line = pending.pop(0)
        while True:
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            lex.commenters = "#"
            try:
                out.append(list(lex))
                break
            except ValueError as e:
                if "closing quotation" not in str(e) or not pending:
                    raise ValueError(f"{fence.where}: cannot split {line!r} as a shell line "
                                     f"({e})") from None
                line += "\n" + pending.pop(0)  # a quoted string goes on
    return out


def _tanet_argv(tokens: list[str]) -> list[str] | None:
    while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    if not tokens:
        return None
    if Path(tokens[0]).name == "tanet":
        return tokens[1:]
    if Path(tokens[0]).name.startswith(("python", "torchrun")):
        for k in range(len(tokens) - 1):
            if tokens[k] == "-m" and tokens[k + 1] == "tanet":
                return tokens[k + 2:]
    return None


def check_command(argv: list[str]) -> str | None:
    """None when ``tanet argv`` parses and its ``--set`` / ``--config`` name real things, else
    what is wrong (argparse's own message for an unknown command or flag)."""
    from tanet.cli import build_parser
    from tanet.config import Config, ConfigError, apply_overrides, list_recipes

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit as e:
        if e.code in (0, None):  # --help, --version
            return None
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else str(e)
    if not getattr(args, "command", None):
        return "no command"
    overrides = getattr(args, "overrides", None) or []
    try:
        apply_overrides(Config(), list(overrides))
    except ConfigError as e:
        return f"--set: {e}"
    config = getattr(args, "config", None)
    if isinstance(config, str) and not config.endswith((".yaml", ".yml")) \
            and config not in list_recipes():
        return f"--config {config}: not a shipped recipe ({', '.join(list_recipes())})"
    return None
