"""`tanet ablate`: a tiny study end to end (real training, a real process pool), kept runs,
resume of a lost result, refusal of a changed study, and clear errors for bad study files."""
import csv
import json
import subprocess
import sys

import pytest
import yaml

from tanet.apps.ablate import StudyError, list_studies, load_study, plan_runs, run_study

STUDY = {
    "name": "tiny",
    "description": "two variants, two seeds, one epoch",
    "data": {"synthetic": {"classes": 4, "videos_per_class": 4, "val_per_class": 2,
                           "frames": 8, "size": 32, "seed": 0}},
    "recipe": "synthetic_tanet_tiny",
    "overrides": {"train.epochs": 1, "model.input_size": 32, "data.short_side": 36,
                  "train.workers": 0, "test.workers": 0, "train.threads": 1},
    "seeds": [0, 1],
    "variants": {"both": {"model": "tanet_tiny"},
                 "local": {"tam": {"branches": "local"}, "label": "importance map only"}},
}


def _write(path, study):
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_tiny_study_end_to_end(tmp_path):
    spec = _write(tmp_path / "tiny.yaml", STUDY)
    out = tmp_path / "study"
    r = subprocess.run([sys.executable, "-m", "tanet", "ablate", str(spec), "--out", str(out),
                        "--jobs", "2", "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "4 run(s) now, 0 kept" in r.stdout
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted((x["variant"], x["seed"]) for x in rows) == [
        ("both", "0"), ("both", "1"), ("local", "0"), ("local", "1")]
    for x in rows:
        assert 0 <= float(x["top1"]) <= 1 and 0 <= float(x["pair_acc"]) <= 1
        assert int(x["params"]) > 0 and int(x["macs"]) > 0 and float(x["train_s"]) > 0
    local = [x for x in rows if x["variant"] == "local"]
    assert json.loads(local[0]["tam"]) == {"branches": "local"}
    both_params = {x["params"] for x in rows if x["variant"] == "both"}
    assert len(both_params) == 1 and int(local[0]["params"]) < int(both_params.pop())  # no G
    report = (out / "report.md").read_text()
    assert "| both | tanet_tiny | paper | 2 |" in report
    assert "| local | tanet_tiny | branches=local | 2 |" in report and " ± " in report
    assert (out / "ablation.png").stat().st_size > 1000
    assert (out / "summary.csv").read_text().count("\n") == 3

    # finished runs are kept; a run whose result was lost resumes (its weights are saved)
    result = out / "runs" / "local" / "seed1" / "result.json"
    before = json.loads(result.read_text())
    result.unlink()
    s = run_study(str(spec), out, jobs=1, quiet=True)
    assert (s["ran"], s["kept"], s["failed"]) == (1, 3, {})
    assert json.loads(result.read_text())["top1"] == before["top1"]

    # a changed study does not silently reuse (or resume) runs made with other settings
    changed = dict(STUDY, overrides={**STUDY["overrides"], "train.lr": 0.01})
    with pytest.raises(StudyError, match="other settings.*train.lr"):
        run_study(str(_write(tmp_path / "tiny.yaml", changed)), out, quiet=True)


@pytest.mark.parametrize("change,match", [
    ({"varaints": {}}, "unknown key 'varaints'"),
    ({"seeds": "0,1"}, "seeds must be"),
    ({"variants": {"a b": {}}}, "names a folder"),
    ({"variants": {"x": {"modle": "tanet_tiny"}}}, "variants.x: unknown"),
    ({"variants": {"x": {"model": "tanet_tiyn"}}}, "variants.x.model: unknown model"),
    ({"variants": {"x": {"tam": {"branchs": "local"}}}}, "did you mean 'model.tam.branches'"),
    ({"overrides": {"train.epoch": 1}}, "did you mean 'train.epochs'"),
])
def test_bad_study_files_name_the_key(tmp_path, change, match):
    spec = _write(tmp_path / "bad.yaml", {**STUDY, **change})
    with pytest.raises(StudyError, match=match) as e:
        plan_runs(load_study(spec), tmp_path / "out")
    assert "bad.yaml" in str(e.value)


def test_shipped_studies_resolve(tmp_path):
    assert {"branches", "placement", "kernel"} <= set(list_studies())
    for name in ("branches", "placement", "kernel"):
        study = load_study(name)
        runs = plan_runs(study, tmp_path / name)  # every variant's config is valid
        assert len(runs) == len(study.variants) * len(study.seeds) and len(study.seeds) >= 3
        assert all(r.dir.is_relative_to(tmp_path / name) and not r.done for r in runs)
