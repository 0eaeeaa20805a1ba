"""The package as users install it: a wheel installed outside the checkout runs the demo from
another folder (recipes ship inside the package), and the source tree keeps its shape rules."""
import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tanet"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``tanet`` built as a wheel and installed with ``pip --target`` into a fresh folder."""
    base = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(base / "dist")],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((base / "dist").glob("tanet-*.whl"))
    site = base / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    return site, env


def test_wheel_imports_from_its_install_folder(installed, tmp_path):
    site, env = installed
    where = subprocess.run([sys.executable, "-c", "import tanet; print(tanet.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout
    recipes = subprocess.run([str(site / "bin" / "tanet"), "recipes"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert recipes.returncode == 0 and "synthetic_tanet_tiny" in recipes.stdout, recipes.stderr


def test_demo_quick_from_installed_wheel(installed, tmp_path):
    """`tanet demo --quick` from a folder outside the checkout writes every artifact."""
    site, env = installed
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    proc = subprocess.run([str(site / "bin" / "tanet"), "demo", "--quick", "--quiet",
                           "--out", "demo"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = cwd / "demo"
    report = (out / "report.md").read_text()
    assert "| tanet_tiny |" in report and "| tsn_tiny |" in report
    assert "within reversal pairs" in report and "Total wall time" in report
    for png in ("curves.png", "tam_kernels.png", "tanet/test/confusion.png",
                "tsn/test/confusion.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
        assert f"({png})" in report
    for model in ("tanet", "tsn"):
        assert (out / model / "test" / "results.json").is_file()


# ----------------------------------------------------------------------------- shape rules
def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every tanet module ``name`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this package
                base = name.split(".")[: -node.level or None] if path.name != "__init__.py" \
                    else name.split(".")[: len(name.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    mods = _modules()
    return {m for m in found if m in mods and m != name}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


RULES = {  # layer -> layers it must never import
    "models": {"data", "engine", "config", "cli", "apps"},
    "data": {"models", "engine", "cli", "apps"},
    "engine": {"apps", "cli"},
    "apps": {"cli"},
    "io": {"models", "data", "engine", "config", "cli", "apps"},
    "remote": {"models", "data", "engine", "config", "cli", "apps", "io", "metrics", "geometry"},
    "config": {"models", "data", "engine", "cli", "apps"},
    "metrics": {"models", "data", "engine", "cli", "apps"},
    # the test pipeline's description, shared by the card (models) and the clip policy (data)
    "geometry": {"models", "data", "engine", "config", "cli", "apps", "io", "metrics"},
    # which precision runs (amp: auto): shared by the engine and the apps, imports no tanet
    "precision": {"models", "data", "engine", "config", "cli", "apps", "io", "metrics",
                  "geometry"},
}


def test_dependency_direction():
    bad = []
    for name, path in _modules().items():
        for dep in _imports(name, path):
            if _layer(dep) in RULES.get(_layer(name), set()):
                bad.append(f"{name} imports {dep}")
            if _layer(dep) == "cli" and _layer(name) not in ("cli", "__main__"):
                bad.append(f"{name} imports {dep} (nothing imports cli)")
            if _layer(dep) == "testing" and _layer(name) != "testing":
                bad.append(f"{name} imports {dep} (tanet.testing serves tests and benchmarks "
                           f"only)")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    """No cycle among tanet's modules, function-level imports included (package __init__
    re-exports are edges too)."""
    graph = {name: _imports(name, path) for name, path in _modules().items()}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    # a package importing its own submodules (re-exports) while they import siblings is fine
    real = [c for c in cycles if not all(m.startswith(min(c, key=len) + ".") or
                                         m == min(c, key=len) for m in c)]
    assert not real, real


def test_module_and_function_sizes():
    long_modules, long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > 500:
            long_modules.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long_functions.append(f"{name}.{node.name}: {n} lines")
    assert not long_modules and not long_functions, long_modules + long_functions


def test_one_definition_of_each_shared_rule():
    defs = defaultdict(list)
    for name, path in _modules().items():
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defs[node.name].append(name)
        if "0.485" in text:
            defs["IMAGENET_MEAN literal"].append(name)
    assert defs["parse_views"] == ["tanet.data.views"]
    assert defs["Geometry"] == ["tanet.geometry"] and "test_geometry" not in defs
    assert defs["with_overrides"] == ["tanet.geometry"]  # config vs card: one rule
    assert defs["IMAGENET_MEAN literal"] == ["tanet.geometry"]
    assert defs["clip_indices"] == ["tanet.data.sampling"]
    assert defs["WindowPlan"] == ["tanet.data.sampling"]
    assert "tanet.io" in defs["read_class_names"]
    # which videos a source names: one resolver, one folder walk, no second list reader
    assert defs["resolve_videos"] == ["tanet.data.sources"]  # (data.stream.resolve_source: live)
    assert defs["resolve_path"] == ["tanet.data.sources"]
    assert defs["find_videos"] == ["tanet.data.sources"]
    assert defs["read_video_list"] == [] and defs["read_dataset"] == ["tanet.apps.check"]
    # which precision a run uses: one rule, which the engine and the apps both call
    assert defs["resolve_amp"] == ["tanet.precision"] and defs["native_bf16"] == [
        "tanet.precision"]


def test_shipped_files_cite_the_paper_not_a_private_file():
    """Recipes, studies and docs cite the paper (section, table) or the authors' code; users do
    not have the project's internal reference notes."""
    shipped = [*PACKAGE.rglob("*.yaml"), *PACKAGE.rglob("*.py"), REPO / "README.md",
               REPO / "ARCHITECTURE.md", *(REPO / "docs").rglob("*.md")]
    bad = [str(p.relative_to(REPO)) for p in shipped if "TAM.md" in p.read_text()]
    assert not bad, bad


def test_sampling_names_are_one_constant():
    """``SAMPLINGS`` is assigned once (tanet.geometry); no other module spells the names out as
    a list of choices."""
    assigned, spelt = [], []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "SAMPLINGS" for t in node.targets):
                assigned.append(name)
            elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                words = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if {"segment", "dense"} <= words:
                    spelt.append(name)
    assert assigned == spelt == ["tanet.geometry"], (assigned, spelt)


def test_one_name_per_test_pipeline_concept():
    """The card is a Geometry (it inherits the fields, renames none), and each config key that
    overrides the card has the field's name; nothing but the one rule writes those fields of a
    card or geometry."""
    import dataclasses

    from tanet.config import Config, all_keys
    from tanet.geometry import Geometry
    from tanet.models.recognizer import ModelCard

    fields = {f.name for f in dataclasses.fields(Geometry)}
    assert issubclass(ModelCard, Geometry) and not fields & set(ModelCard.__annotations__)
    overrides = Config().geometry_overrides()
    assert set(overrides) <= fields
    leaves = {k.rsplit(".", 1)[-1]: k for k in all_keys()}
    for field in [*overrides, "num_segments"]:
        assert field in leaves, field  # model.input_size, data.short_side, ... keep the name
    assert {"frames", "size", "resize"}.isdisjoint(fields | set(leaves))
    by_hand = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for t in [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]:
                if isinstance(t, ast.Attribute) and t.attr in overrides and any(
                        w in ast.unparse(t.value) for w in ("card", "geom")):
                    by_hand.append(f"{name}:{node.lineno}: {ast.unparse(t)}")
    assert not by_hand, by_hand
