"""``tanet ablate STUDY.yaml``: a grid of model variants x seeds trained and tested with one recipe.

A study file (shipped ones: ``tanet/studies/*.yaml``, loadable by name) names

* ``data``: ``synthetic: {classes, videos_per_class, val_per_class, frames, size, seed}`` (the
  synthetic temporal benchmark, generated under ``dir`` if missing; the default) or a real
  dataset as ``data.*`` config keys (``root``, ``train``, ``val``, ``labels``);
* ``recipe``: a shipped recipe name or YAML file, with ``overrides`` (a mapping of dotted keys, or
  a list of ``KEY=VALUE`` strings as ``--set`` takes);
* ``variants``: name -> ``{model, tam: {switches}, overrides}``;
* ``seeds``: ``train.seed`` values; every variant is trained once per seed on the same videos.

Each run trains in ``<output>/runs/<variant>/seed<k>`` (:func:`tanet.engine.train`), is tested on
the validation split (:func:`tanet.engine.test`, last checkpoint) and leaves ``result.json``: a
run with one is finished and skipped on the next invocation; a run without one resumes from its
last checkpoint. Runs go to a process pool sized to the cores and each run's threads. The
report (:mod:`tanet.apps.ablate_report`) is rewritten after every invocation.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tanet.io import find_yaml, shipped_yaml

__all__ = ["Study", "Variant", "Run", "StudyError", "load_study", "list_studies", "find_study",
           "run_study", "plan_runs", "run_one", "default_jobs"]

_STUDY_KEYS = {"name", "description", "data", "recipe", "overrides", "variants", "seeds", "output"}
_VARIANT_KEYS = {"model", "tam", "overrides", "label"}
# config keys that change how fast a run goes or where it lives, not what it computes
_NOT_DEFINING = {"output", "train.threads", "train.workers", "test.workers", "test.batch_size"}
_SYNTH_DEFAULTS = dict(classes=12, videos_per_class=50, val_per_class=20, frames=16, size=64,
                       seed=0)


class StudyError(ValueError):
    """A study file that cannot be run; the message names the file and the key."""


@dataclass
class Variant:
    """One model of the grid: a registered model, TAM switches and config overrides."""

    name: str
    model: str | None = None  # None: the recipe's model
    tam: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] | list[str] = field(default_factory=dict)
    label: str | None = None  # a longer description for the report


@dataclass
class Study:
    """A parsed study file (see the module docstring)."""

    name: str
    source: str
    recipe: str
    variants: list[Variant]
    seeds: list[int]
    data: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] | list[str] = field(default_factory=dict)
    description: str = ""
    output: str | None = None
    ref: str = ""  # how it was named: a shipped study's name, or the file given

    @property
    def synthetic(self) -> dict[str, Any] | None:
        """Parameters of :func:`tanet.data.synthetic.generate`, or None for a real dataset."""
        if any(k in self.data for k in ("train", "val")):
            return None
        return {**_SYNTH_DEFAULTS, **(self.data.get("synthetic") or {})}


def list_studies() -> list[str]:
    """Names of the studies shipped in ``tanet/studies``."""
    return shipped_yaml("tanet.studies")


def find_study(path_or_name: str | os.PathLike) -> Path:
    """A study file: ``path_or_name`` itself if it exists, else the shipped study of that name."""
    found = find_yaml(path_or_name, "tanet.studies")
    if found is not None:
        return found
    path = Path(path_or_name)
    raise StudyError(f"{path}: no such study file or shipped study (shipped: "
                     f"{', '.join(list_studies())})")


def load_study(path_or_name: str | os.PathLike) -> Study:
    """Parse and check a study file; errors name the file and the key."""
    import yaml

    from tanet.io import read_text

    path = find_study(path_or_name)
    try:
        raw = yaml.safe_load(read_text(path))
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as e:
        raise StudyError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: expected a mapping with recipe, variants and seeds")
    unknown = sorted(set(raw) - _STUDY_KEYS)
    if unknown:
        raise StudyError(f"{path}: unknown key {unknown[0]!r}; a study has "
                         f"{', '.join(sorted(_STUDY_KEYS))}")
    for key in ("recipe", "variants"):
        if not raw.get(key):
            raise StudyError(f"{path}: missing {key!r}")
    variants = _variants(path, raw["variants"])
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or \
            not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise StudyError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    data = raw.get("data") or {}
    if not isinstance(data, dict):
        raise StudyError(f"{path}: data must be a mapping (synthetic: {{...}}, or root/train/val)")
    overrides = raw.get("overrides") or {}
    _check_overrides(path, "overrides", overrides)
    return Study(name=str(raw.get("name") or path.stem), source=str(path),
                 recipe=str(raw["recipe"]), variants=variants, seeds=list(dict.fromkeys(seeds)),
                 data=data, overrides=overrides, description=str(raw.get("description") or ""),
                 output=raw.get("output"), ref=str(path_or_name))


def _variants(path: Path, raw: Any) -> list[Variant]:
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: variants must be a mapping name -> {{model, tam, overrides}}")
    out = []
    for name, spec in raw.items():
        name = str(name)
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise StudyError(f"{path}: variant name {name!r} must be letters, digits, _.+- "
                             "(it names a folder)")
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - _VARIANT_KEYS:
            bad = sorted(set(spec) - _VARIANT_KEYS) if isinstance(spec, dict) else spec
            raise StudyError(f"{path}: variants.{name}: unknown {bad!r}; a variant has "
                             f"{', '.join(sorted(_VARIANT_KEYS))}")
        if not isinstance(spec.get("tam") or {}, dict):
            raise StudyError(f"{path}: variants.{name}.tam must be a mapping of TAM switches")
        _check_overrides(path, f"variants.{name}.overrides", spec.get("overrides") or {})
        out.append(Variant(name=name, model=spec.get("model"), tam=dict(spec.get("tam") or {}),
                           overrides=spec.get("overrides") or {}, label=spec.get("label")))
    return out


def _check_overrides(path: Path, key: str, value: Any) -> None:
    if isinstance(value, dict) or (isinstance(value, list) and
                                   all(isinstance(v, str) for v in value)):
        return
    raise StudyError(f"{path}: {key} must be a mapping of dotted config keys "
                     f"(train.epochs: 8) or a list of KEY=VALUE strings")


# ------------------------------------------------------------------------------------ the grid
@dataclass
class Run:
    """One cell of the grid: its config (as a dict) and folder."""

    variant: Variant
    seed: int
    dir: Path
    cfg: dict[str, Any]

    @property
    def done(self) -> bool:
        return (self.dir / "result.json").is_file()


def _apply(cfg, overrides: dict[str, Any] | list[str], source: str):
    from tanet.config import apply_overrides, config_from_dict

    if isinstance(overrides, list):
        return apply_overrides(cfg, overrides)
    return config_from_dict(overrides, source=source, base=cfg)


def _data_overrides(study: Study, data_dir: Path) -> dict[str, Any]:
    if study.synthetic is None:
        return {f"data.{k}": v for k, v in study.data.items()}
    return {"data.root": str(data_dir), "data.train": str(data_dir / "train.txt"),
            "data.val": str(data_dir / "val.txt"), "data.labels": str(data_dir / "classes.txt")}


def plan_runs(study: Study, out: Path) -> list[Run]:
    """The grid in report order (variant-major), each run's config resolved and validated."""
    from tanet.config import ConfigError, config_to_dict, load_config
    from tanet.models.registry import is_registered, list_models

    unknown = [v for v in study.variants if v.model and not is_registered(v.model)]
    if unknown:
        raise StudyError(f"{study.source}: variants.{unknown[0].name}.model: unknown model "
                         f"{unknown[0].model!r} (models: {', '.join(list_models())})")
    data_dir = Path(study.data.get("dir") or out / "data")
    runs = []
    for v in study.variants:
        for seed in study.seeds:
            run_dir = out / "runs" / v.name / f"seed{seed}"
            src = f"{study.source} (variant {v.name})"
            try:
                cfg = load_config(study.recipe)
                cfg = _apply(cfg, _data_overrides(study, data_dir), src)
                cfg = _apply(cfg, study.overrides, f"{study.source} (overrides)")
                if v.model:
                    cfg.model.name = v.model
                cfg = _apply(cfg, {f"model.tam.{k}": x for k, x in v.tam.items()}, src)
                cfg = _apply(cfg, v.overrides, src)
                cfg.train.seed, cfg.output = seed, str(run_dir)
                cfg.validate(src)
            except ConfigError as e:
                raise StudyError(str(e)) from None
            runs.append(Run(v, seed, run_dir, config_to_dict(cfg)))
    return runs


def _check_unchanged(run: Run) -> None:
    """Refuse to keep or resume a run folder made with other settings than the study's now."""
    import yaml

    saved_file = run.dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text())
    now = json.loads(json.dumps(_train_config(run.cfg)))
    keys = [k for k in _diff_keys(saved, now) if k not in _NOT_DEFINING]
    if keys:
        raise StudyError(f"{run.dir}: trained with other settings than the study now gives "
                         f"({', '.join(keys[:4])}); delete the folder or give variant "
                         f"{run.variant.name!r} another name")


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b))
                for k in _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _train_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The training config of a run: no validation during training (the run is tested once,
    after training, by :func:`tanet.engine.test` on the same videos)."""
    return {**cfg, "data": {**cfg["data"], "val": None}}


def run_one(run: Run, quiet: bool = True) -> dict[str, Any]:
    """Train (or resume) and test one run; write and return its ``result.json`` record."""
    import torch

    from tanet.apps.demo import pair_accuracy
    from tanet.config import config_from_dict
    from tanet.data.synthetic import reversal_pairs
    from tanet.engine import read_metrics, test, train
    from tanet.io import atomic_write_text
    from tanet.models.cost import model_cost
    from tanet.models.factory import load_model

    cfg = config_from_dict(run.cfg, source=str(run.dir)).validate(str(run.dir))
    (run.dir / "error.txt").unlink(missing_ok=True)  # an earlier failure, now retried
    train(config_from_dict(_train_config(run.cfg), source=str(run.dir)), resume=True, quiet=quiet)
    ckpt = run.dir / "last.safetensors"
    res = test(ckpt, cfg, out=run.dir / "test", quiet=quiet)
    ev = res.pop("eval")
    model = load_model(ckpt)
    card = model.card
    pairs = reversal_pairs(list(card.class_names or []))
    cost = model_cost(model, frames=card.num_segments, size=card.input_size[-1])
    records = read_metrics(run.dir / "metrics.jsonl")
    result = {"variant": run.variant.name, "seed": run.seed, "model": card.name,
              "tam": card.kwargs.get("tam_kwargs", {}), "top1": res["top1"], "top5": res["top5"],
              "mean_class_acc": res["mean_class_acc"],
              "pair_acc": pair_accuracy(ev.scores, ev.labels, pairs) if pairs else None,
              "num_videos": res["num_videos"], "params": cost.params, "macs": cost.macs,
              "train_s": sum(r.get("epoch_time", 0.0) for r in records),
              "epochs": len(records), "threads": torch.get_num_threads()}
    atomic_write_text(run.dir / "result.json", json.dumps(result, indent=1) + "\n")
    return result


def _run_in_child(run: Run) -> dict[str, Any]:
    """Pool entry point: one run, its failure written beside it instead of lost."""
    try:
        return run_one(run)
    except BaseException as e:  # the parent reports it; the folder keeps what was saved
        from tanet.io import atomic_write_text

        atomic_write_text(run.dir / "error.txt", f"{type(e).__name__}: {e}\n")
        raise


def default_jobs(cfg: dict[str, Any]) -> int:
    """Runs side by side: the usable cores over each run's compute threads + loader workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_run = (cfg["train"].get("threads") or cores or 1) + cfg["train"].get("workers", 0)
    return max(1, (cores or 1) // max(per_run, 1))


def _prepare_data(study: Study, out: Path, quiet: bool) -> None:
    """Generate the synthetic benchmark if the study uses it and it is missing (a no-op if a
    complete copy with the same parameters is there)."""
    if study.synthetic is None:
        return
    from tanet.data.synthetic import generate

    data_dir = Path(study.data.get("dir") or out / "data")
    if not quiet:
        print(f"synthetic benchmark in {data_dir} ...", file=sys.stderr)
    gen = generate(data_dir, **study.synthetic)
    if not quiet and not gen["reused"]:
        print(f"  {gen['train_videos']} train / {gen['val_videos']} val videos "
              f"({gen['seconds']:.1f} s)", file=sys.stderr)


def run_study(study: Study | str | os.PathLike, out: str | os.PathLike | None = None, *,
              jobs: int | None = None, seeds: list[int] | None = None, dry_run: bool = False,
              quiet: bool = False) -> dict[str, Any]:
    """Run every unfinished run of ``study`` and write the report; returns a summary
    (``out``, ``report``, ``ran``, ``kept``, ``failed``: run folder -> error)."""
    from tanet.apps.ablate_report import write_report

    study = study if isinstance(study, Study) else load_study(study)
    if seeds:
        study.seeds = list(dict.fromkeys(seeds))
    out = Path(out or study.output or Path("runs/ablate") / study.name)
    runs = plan_runs(study, out)
    for run in runs:
        _check_unchanged(run)
    todo = [r for r in runs if not r.done]
    jobs = max(1, min(jobs or default_jobs(runs[0].cfg), len(todo) or 1))
    summary: dict[str, Any] = {"out": str(out), "runs": len(runs), "kept": len(runs) - len(todo),
                               "ran": 0, "failed": {}, "jobs": jobs}
    if not quiet:
        print(f"{study.name}: {len(study.variants)} variants x {len(study.seeds)} seeds = "
              f"{len(runs)} runs; {summary['kept']} finished, {len(todo)} to run, {jobs} at a "
              f"time -> {out}", file=sys.stderr)
    if dry_run:
        for r in runs:
            state = "done" if r.done else ("partial" if r.dir.exists() else "todo")
            print(f"  {r.variant.name:<16} seed {r.seed:<4} {state}")
        return summary
    if todo:
        _prepare_data(study, out, quiet)
        t0 = time.perf_counter()
        _execute(todo, jobs, summary, quiet)
        summary["seconds"] = time.perf_counter() - t0
    summary["report"] = str(write_report(study, runs, out, failed=summary["failed"]))
    return summary


def _execute(todo: list[Run], jobs: int, summary: dict[str, Any], quiet: bool) -> None:
    """Run ``todo`` (in this process if ``jobs`` is 1, else in a spawned process pool)."""
    from tqdm import tqdm

    from tanet.engine.signals import TrainingInterrupted

    bar = tqdm(total=len(todo), desc="ablate", unit="run", disable=quiet, dynamic_ncols=True)

    def finished(run: Run, result: dict[str, Any] | None, err: BaseException | None) -> None:
        bar.update(1)
        if err is not None:
            summary["failed"][str(run.dir)] = f"{type(err).__name__}: {err}"
            bar.write(f"FAILED {run.variant.name} seed {run.seed}: {err}")
            return
        summary["ran"] += 1
        if not quiet:
            pair = result["pair_acc"]
            bar.write(f"{run.variant.name} seed {run.seed}: top-1 {100 * result['top1']:.1f} %"
                      + (f", within pairs {100 * pair:.1f} %" if pair is not None else "")
                      + f" ({result['train_s']:.0f} s training)")

    try:
        if jobs == 1:
            for run in todo:
                try:
                    finished(run, _run_in_child(run), None)
                except TrainingInterrupted:
                    raise  # Ctrl-C / SIGTERM: the run saved its place; stop the grid
                except Exception as e:  # noqa: BLE001 - reported, the grid goes on
                    finished(run, None, e)
            return
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_run_in_child, run): run for run in todo}
            try:
                for fut in as_completed(futures):
                    err = fut.exception()
                    finished(futures[fut], None if err else fut.result(), err)
            except KeyboardInterrupt:
                pool.shutdown(wait=True, cancel_futures=True)  # running ones save and stop
                raise
    finally:
        bar.close()
