"""The documentation site cannot rot: it builds with ``mkdocs build --strict``, its generated
reference pages say what the code says, every Python example in ``docs/`` runs, every ``tanet``
command in its shell examples parses with the real parser (the get-started walk-through runs for
real, on fewer videos), and the built site is looked at in headless Chromium (screenshots at
desktop and phone width in ``build/test-artifacts/``, and a search). README.md, the front page,
stays short (at most 200 lines), its examples get the same checks, its relative links exist,
and its results are the benchmarks page's."""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
README_MAX_LINES = 200
ARTIFACTS = REPO / "build" / "test-artifacts"
sys.path.insert(0, str(DOCS))

from gen import config_reference, fences, layout_reference  # noqa: E402

from tanet.testing.browser import console_errors, headless_chrome  # noqa: E402
from tanet.testing.browser import missing as browser_missing  # noqa: E402

# The walk-through's numbers, lowered so that it runs in seconds: (page, text, replacement).
# Each must match its page (a test fails when one no longer does, so this cannot drift).
SMALLER = [
    ("get-started/fine-tune.md", "--videos-per-class 200 --val-per-class 40",
     "--videos-per-class 3 --val-per-class 1"),
    ("get-started/fine-tune.md", '(("train", 60), ("val", 20))', '(("train", 3), ("val", 2))'),
]
# every `tanet train` of a walk-through also gets these: one epoch, no loader processes
TRAIN_EXTRA = ["train.epochs=1", "train.workers=0", "test.workers=0"]


def _nav_pages() -> list[str]:
    """Pages in the order of mkdocs.yml's navigation."""
    out: list[str] = []

    def walk(node):
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, list):
            for n in node:
                walk(n)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)

    walk(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    return out


def _all_fences() -> list[fences.Fence]:
    return [f for p in fences.docs_pages(DOCS) for f in fences.read_fences(p, DOCS)]


# ----------------------------------------------------------------------------- the build
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built as `make docs` builds it (strict), into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    print(f"mkdocs build --strict: {time.perf_counter() - started:.1f} s")
    return out


def test_strict_build_has_every_page_and_generated_reference(site):
    """Every nav page is built; the generated pages hold every command, key and weights name,
    the API pages rendered docstrings, the figures are PNGs."""
    from tanet.config import all_keys
    from tanet.models import hub
    from gen.cli_reference import subcommands

    for page in _nav_pages():
        html = site / (page.removesuffix(".md").removesuffix("index") + "/index.html").lstrip("/")
        assert html.is_file(), page
    cli = (site / "reference/cli/index.html").read_text()
    for name, (parser, _) in subcommands().items():
        assert f'id="tanet-{name}"' in cli, name
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in cli, f"tanet {name} {flag}"
    config = (site / "reference/config/index.html").read_text()
    assert all(f"<code>{k}</code>" in config for k in all_keys())
    weights = (site / "reference/weights/index.html").read_text()
    assert all(w.name in weights for w in hub.list_weights())
    api = (site / "reference/api/models/index.html").read_text()
    assert "Temporal Adaptive Module" in api and "create_model" in api
    assert ":func:" not in api and ":class:" not in api  # Sphinx roles of docstrings dropped
    assert "Predictor" in (site / "reference/api/predict/index.html").read_text()
    assert "tests/test_packaging.py" in (site / "architecture/index.html").read_text()
    contributing = (site / "contributing/index.html").read_text()
    assert "<code>tanet.models</code>" in contributing and "benchmarks" in contributing
    for png in ("tam", "tanet", "tam_adaptive", "clip_policy"):
        assert (site / f"assets/figures/{png}.png").read_bytes()[:4] == b"\x89PNG", png


def test_strict_validation_fails_on_a_broken_link_and_anchor(tmp_path):
    """The validation settings of mkdocs.yml turn a broken link or anchor into a failed build."""
    settings = yaml.safe_load((REPO / "mkdocs.yml").read_text())["validation"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n## Here\n\n[ok](#here)\n")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(
        {"site_name": "t", "strict": True, "validation": settings}))
    build = [sys.executable, "-m", "mkdocs", "build", "--strict"]  # not -q: it hides warnings
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    ok = subprocess.run(build, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    for broken in ("[gone](missing.md)", "[gone](#nowhere)"):
        (tmp_path / "docs" / "index.md").write_text(f"# Home\n\n{broken}\n")
        bad = subprocess.run(build, cwd=tmp_path, capture_output=True, text=True, env=env)
        assert bad.returncode != 0 and ("missing.md" in bad.stderr or "nowhere" in bad.stderr), \
            (broken, bad.stderr)


# ----------------------------------------------------------------------------- generators
def test_every_config_key_has_its_default_and_a_comment():
    """The configuration page's rows come from the schema: each key's default is the dataclass
    default, and each has the comment that documents it (a new key without one fails here)."""
    from tanet.config import Config, all_keys

    rows = {r["key"]: r for r in config_reference.config_rows()}
    assert list(rows) == all_keys()
    undocumented = [k for k, r in rows.items() if not r["doc"]]
    assert not undocumented, f"config keys without a comment in tanet/config/schema.py: " \
                             f"{undocumented}"
    cfg = Config()
    for key, row in rows.items():
        value = functools.reduce(getattr, key.split("."), cfg)
        assert yaml.safe_load(row["default"]) == (list(value) if isinstance(value, tuple)
                                                  else value), key


def test_field_comments_are_read_as_tokens():
    """A '#' inside a string is not a comment; a field over several lines takes the comment of
    its last line; a field without one gets ''."""
    source = ('class A:\n    x: str = "a # b"  # the x\n    y: list[int] = field(\n'
              '        default_factory=list)  # the y\n    z: int = 0\n'
              'class B:\n    w: int = 1  # w # with a hash\n')
    assert config_reference.field_comments(source) == {
        "A": {"x": "the x", "y": "the y", "z": ""}, "B": {"w": "w # with a hash"}}


def test_layout_rules_are_those_the_packaging_test_checks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_packaging", REPO / "tests/test_packaging.py")
    packaging = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(packaging)
    rules = layout_reference.packaging_rules(REPO / "tests/test_packaging.py")
    assert rules["imports"] == {k: sorted(v) for k, v in packaging.RULES.items()}
    assert (rules["module_lines"], rules["function_lines"]) == (500, 80)
    assert rules["single"]["clip_indices"] == ["tanet.data.sampling"]


# ----------------------------------------------------------------------------- examples
def test_fence_reader_and_command_splitter(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("text\n<!-- needs: gpu (CUDA) -->\n```python\nimport x\n```\n\n"
                    "- item\n\n    ```bash\n    tanet train --config a.yaml \\\n"
                    "        --set train.epochs=1  # a comment\n    ```\n"
                    "<!-- run -->\n```console\n$ FOO=1 tanet models | head\n"
                    "$ torchrun --nproc_per_node=2 -m tanet predict v/ --checkpoint c && ls\n"
                    "$ python -m tanet recipes; echo done\n"
                    "$ tanet check v/ 2>&1 > log.txt | tee x\n```\n")
    fs = fences.read_fences(page, tmp_path)
    assert [(f.lang, f.needs, f.run, f.line) for f in fs] == [
        ("python", "gpu", False, 3), ("bash", None, False, 9), ("console", None, True, 14)]
    assert fences.commands(fs[1]) == [["train", "--config", "a.yaml", "--set", "train.epochs=1"]]
    assert fences.commands(fs[2]) == [["models"], ["predict", "v/", "--checkpoint", "c"],
                                      ["recipes"], ["check", "v/"]]
    quoted = fences.Fence("q.md", 1, "bash", 'curl -d "{\\"a\\": 1,\n  \\"b\\": 2}" x # c\n'
                                             "tanet check 'v/\nw/' --deep\n")
    assert fences.commands(quoted) == [["check", "v/\nw/", "--deep"]]  # a quoted string spans lines
    with pytest.raises(ValueError, match=r"docs/q.md:1: cannot split"):
        fences.commands(fences.Fence("q.md", 1, "bash", "tanet check 'v/\n"))
    page.write_text("<!-- needs: cuda -->\n```python\npass\n```\n")
    with pytest.raises(ValueError, match=r"p.md:1: unknown marker 'needs: cuda'"):
        fences.read_fences(page, tmp_path)


def test_check_command_rejects_what_the_cli_would():
    ok = fences.check_command(["train", "--config", "synthetic_tanet_tiny", "--set",
                               "train.epochs=2", "model.tam.branches=local"])
    assert ok is None
    assert "invalid choice" in fences.check_command(["trian", "--config", "x.yaml"])
    assert "unrecognized arguments: --epochs" in fences.check_command(
        ["train", "--config", "x.yaml", "--epochs", "3"])
    assert "did you mean 'train.epochs'" in fences.check_command(
        ["train", "--config", "x.yaml", "--set", "train.epoch=3"])
    assert "expects int" in fences.check_command(
        ["train", "--config", "x.yaml", "--set", "train.epochs=many"])
    assert "not a shipped recipe" in fences.check_command(["train", "--config", "nosuch"])


def test_every_cli_example_parses():
    """Every `tanet` command of every shell example in docs/: the command and flags exist,
    --set keys are config keys with values of their type, --config names a recipe or a file."""
    checked, bad = 0, []
    for fence in _all_fences():
        for argv in fences.commands(fence):
            checked += 1
            problem = fences.check_command(argv)
            if problem:
                bad.append(f"{fence.where}: tanet {' '.join(argv)}\n    {problem}")
    assert not bad, "\n".join(bad)
    assert checked >= 30, checked


def _smaller(fence: fences.Fence, used: set[int]) -> str:
    code = fence.code
    for i, (page, text, new) in enumerate(SMALLER):
        if page == fence.page and text in code:
            code = code.replace(text, new)
            used.add(i)
    return code


def _run_walkthrough_commands(fence: fences.Fence, code: str) -> None:
    from tanet.cli import main

    for argv in fences.commands(fences.Fence(fence.page, fence.line, fence.lang, code)):
        if argv[0] == "train":
            argv = argv + ["--set", *TRAIN_EXTRA]
        rc = main(argv + ["--quiet"])
        assert rc == 0, f"{fence.where}: tanet {' '.join(argv)} exited with {rc}"


def test_examples_run(tmp_path, capsys):
    """Every Python example of docs/ runs (one namespace per page, pages in navigation order, in
    one temporary folder, so the get-started pages continue each other), and the walk-through's
    `<!-- run -->` commands run between them; examples marked `needs:` are compiled only."""
    import torch

    threads = torch.get_num_threads()
    by_page: dict[str, list[fences.Fence]] = {}
    for f in _all_fences():
        by_page.setdefault(f.page, []).append(f)
    order = [p for p in _nav_pages() if p in by_page] + sorted(set(by_page) - set(_nav_pages()))
    used: set[int] = set()
    ran, compiled, timings = 0, 0, []
    try:
        with contextlib.chdir(tmp_path):
            for page in order:
                started, namespace = time.perf_counter(), {"__name__": "__docs__"}
                for fence in by_page[page]:
                    code = _smaller(fence, used)
                    if fence.lang == "python":
                        compiled_code = compile(code, fence.where, "exec")
                        compiled += 1
                        if fence.needs is None:
                            exec(compiled_code, namespace)
                            ran += 1
                    elif fence.run:
                        _run_walkthrough_commands(fence, code)
                timings.append((time.perf_counter() - started, page))
    finally:
        torch.set_num_threads(threads)
    assert used == set(range(len(SMALLER))), \
        [SMALLER[i] for i in set(range(len(SMALLER))) - used]  # a page changed: update SMALLER
    assert ran >= 15 and compiled > ran, (ran, compiled)
    with capsys.disabled():
        slow = ", ".join(f"{p} {s:.1f} s" for s, p in sorted(timings, reverse=True)[:4])
        print(f"\ndocs examples: {ran} run, {compiled - ran} compiled only; slowest: {slow}")


# ----------------------------------------------------------------------------- the README
def _readme_fences() -> list[fences.Fence]:
    return fences.read_fences(README, REPO, prefix="")


def test_readme_is_a_front_page():
    """README.md fits on a few screens; the rest of what it used to say is in the site. It keeps
    the two commands first (`.ci/run` runs exactly the README's test command, `make test`)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, \
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the new section " \
        f"into a page of docs/ and link it"
    first = next(f for f in _readme_fences() if f.lang in fences.SHELLS)
    assert [ln.split("#")[0].split() for ln in first.code.splitlines()] == [["make", "demo"],
                                                                           ["make", "test"]]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_readme_examples_parse_and_run(tmp_path):
    """README's fences get the docs' checks: every `tanet` command parses with the real parser,
    every Python example runs (in a temporary folder) unless marked `<!-- needs: ... -->`."""
    import torch

    found = _readme_fences()
    commands = [(f, argv) for f in found for argv in fences.commands(f)]
    bad = [f"{f.where}: tanet {' '.join(argv)}\n    {problem}" for f, argv in commands
           if (problem := fences.check_command(argv))]
    assert not bad, "\n".join(bad)
    assert len(commands) >= 5, commands  # predict by name, train on a folder, serve, ...
    threads, ran, namespace = torch.get_num_threads(), 0, {"__name__": "__readme__"}
    try:
        with contextlib.chdir(tmp_path):
            for fence in (f for f in found if f.lang == "python"):
                code = compile(fence.code, fence.where, "exec")
                if fence.needs is None:
                    exec(code, namespace)
                    ran += 1
    finally:
        torch.set_num_threads(threads)
    assert ran >= 1


_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]"
                   r"\(\s*(?:<(?P<angled>[^>]+)>|(?P<plain>[^)\s]+))(?:\s+\"[^\"]*\")?\s*\)")


def readme_links(text: str) -> list[str]:
    """The targets of the Markdown links and images of ``text``, outside code fences and spans."""
    text = re.sub(r"^(`{3,}|~{3,}).*?^\1\s*$", "", text, flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [m["angled"] or m["plain"] for m in _LINK.finditer(text)]


def test_readme_link_reader():
    text = ("[a](docs/a.md) ![pic](docs/p.png \"t\") [b](https://x.org) [c](#top)\n"
            "[d](docs/b.md#part) `[e](no.md)`\n```\n[f](no.md)\n```\n[[g]](<docs/c d.md>)\n")
    assert readme_links(text) == ["docs/a.md", "docs/p.png", "https://x.org", "#top",
                                  "docs/b.md#part", "docs/c d.md"]


def test_readme_links_point_to_files():
    """Every relative link and picture of README.md names a file of the repository (GitHub shows
    the docs' Markdown pages; the site is built from them), and it links every part of the site."""
    links = readme_links(README.read_text(encoding="utf-8"))
    local = [t for t in links if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", t)]
    missing = [t for t in local if not (REPO / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
    targets = {t.split("#")[0] for t in local}
    for part in ("docs/get-started/", "docs/how-to/", "docs/concepts/", "docs/reference/"):
        assert any(t.startswith(part) for t in targets), part
    assert any(t.endswith((".png", ".svg", ".gif", ".jpg")) for t in targets), "a picture"


def test_readme_results_are_the_benchmarks_pages():
    """The README's demo table is the benchmarks page's, row for row, and every ratio or
    percentage of its headline table is quoted on the page that measured it."""
    readme = README.read_text(encoding="utf-8")
    bench = (DOCS / "reference" / "benchmarks.md").read_text(encoding="utf-8")
    pages = bench + "".join(p.read_text(encoding="utf-8") for p in (DOCS / "how-to").glob("*.md"))
    rows = [ln for ln in readme.splitlines() if ln.startswith(("| tanet_tiny |", "| tsn_tiny |"))]
    assert len(rows) == 2 and all(row in bench for row in rows), rows
    results = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    figures = re.findall(r"\d+\.\d+|\d+(?:×| %)", results)  # 1.052, 0.42(×), 100 %, 6×
    assert len(figures) >= 10, figures
    missing = [f for f in set(figures) if f not in pages]
    assert not missing, f"README figures not on the benchmarks or how-to pages: {missing}"


# ----------------------------------------------------------------------------- the browser
def _chrome(width: int = 1280, height: int = 900):
    """Headless Chromium (``tanet.testing.browser``) as a context manager, or a skip saying
    what is missing."""
    why = browser_missing()
    if why:
        pytest.skip(f"browser test skipped: {why}")
    return headless_chrome(width, height)


@contextlib.contextmanager
def _http(folder: Path):
    """The built site on http://127.0.0.1:PORT/ (the search index is fetched, not file://)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_browser_site_screenshots_and_search(site, capsys):
    """Headless Chromium on the built site: the home page, a tutorial and an API page at 1280 and
    390 px (nothing wider than a phone's screen), screenshots into build/test-artifacts/, and
    Material's search finds "resume"."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chrome()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pages = {"home": "", "tutorial": "get-started/fine-tune/", "api": "reference/api/models/"}
    with browser as driver:
        with _http(site) as base:
            wait = WebDriverWait(driver, 30)
            for width, height in ((1280, 900), (390, 844)):
                driver.set_window_size(width, height)
                for name, path in pages.items():
                    driver.get(f"{base}/{path}")
                    wait.until(lambda d: d.execute_script("return document.readyState")
                               == "complete")
                    assert driver.find_element(By.CSS_SELECTOR, "article h1").text, path
                    wait.until(lambda d: d.execute_script(
                        "return [...document.images].every(i => i.complete)"))
                    wide = driver.execute_script("return document.documentElement.scrollWidth")
                    assert wide <= width, (path, width, wide)
                    driver.save_screenshot(str(ARTIFACTS / f"docs-{name}-{width}.png"))
            driver.set_window_size(1280, 900)
            driver.get(f"{base}/")
            box = driver.find_element(By.CSS_SELECTOR, "input.md-search__input")
            box.click()  # the header's search box (desktop width)
            box.send_keys("resume")
            hits = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR,
                                                        ".md-search-result__item"))
            text = " ".join(h.text.lower() for h in hits)
            assert "resume" in text and "command line" in text, text[:500]  # `train --resume`
            driver.save_screenshot(str(ARTIFACTS / "docs-search-1280.png"))
            errors = console_errors(driver)
            assert not errors, errors
    with capsys.disabled():
        print(f"\ndocs screenshots: {ARTIFACTS}/docs-*.png ({len(hits)} search results)")
