"""Long-tail tools against references: the class samplers' frequencies over many draws, the
losses against their formulas written out here, AP/mAP against scikit-learn, the F1-optimal
threshold against a brute-force search, the per-class table, the multi-label list readers and
the long-tailed synthetic benchmark."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tanet.config import Config, ConfigError, apply_overrides
from tanet.data.annotations import AnnotationError
from tanet.data.multilabel import read_charades_csv, read_multilabel_csv
from tanet.data.sources import resolve_videos
from tanet.engine.losses import build_loss, class_counts, class_weights
from tanet.engine.reports import per_class_rows
from tanet.engine.samplers import ClassSampler, build_sampler, clip_weights
from tanet.metrics import (average_precision, best_f1_threshold, mean_average_precision,
                           precision_recall_f1)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


# ------------------------------------------------------------------------------ samplers
LABELS = [0] * 200 + [1] * 50 + [2] * 10 + [3] * 2  # a long tail: 200, 50, 10, 2


@pytest.mark.parametrize("mode", ["balanced", "sqrt"])
def test_class_sampler_frequencies_over_many_draws(mode):
    """Over 200 epochs (52,400 draws) each class comes up in proportion to 1 (balanced) or to
    sqrt(n_c) (sqrt), within 3 standard deviations of a multinomial count."""
    s = ClassSampler(clip_weights(LABELS, mode), seed=3)
    counts = np.zeros(4)
    for epoch in range(200):
        s.set_epoch(epoch)
        for _, i in s:
            counts[LABELS[i]] += 1
    n = np.bincount(LABELS).astype(float)
    target = np.ones(4) if mode == "balanced" else np.sqrt(n)
    p = target / target.sum()
    total = counts.sum()
    assert total == 200 * len(LABELS)  # an epoch is as many clips as the list
    sd = np.sqrt(total * p * (1 - p))
    assert np.all(np.abs(counts - total * p) < 3 * sd), (counts / total, p)


def test_class_sampler_is_seeded_resumable_and_sharded():
    """One global draw per (seed, epoch): a resume from item `start` continues it, and W ranks
    interleave to exactly the one-process draw (padded by wrapping, as TrainSampler)."""
    w = clip_weights(LABELS, "balanced")
    one = ClassSampler(w, seed=1)
    one.set_epoch(5)
    full = [i for _, i in one]
    again = ClassSampler(w, seed=1)
    again.set_epoch(5, start=100)
    assert [i for _, i in again] == full[100:] and len(again) == len(full) - 100
    other = ClassSampler(w, seed=2)
    other.set_epoch(5)
    assert [i for _, i in other] != full
    for world in (2, 3, 5):
        shares = []
        for r in range(world):
            s = ClassSampler(w, world_size=world, rank=r, seed=1)
            s.set_epoch(5)
            shares.append([i for _, i in s])
        assert len({len(x) for x in shares}) == 1  # equal shares: the same number of steps
        merged = [x for step in zip(*shares) for x in step]
        assert merged[:len(full)] == full
        assert merged[len(full):] == full[:len(merged) - len(full)]


def test_multilabel_clip_weights_follow_the_rarest_class():
    labels = [(0,), (0,), (0,), (0, 1), (1,), (), ()]
    w = clip_weights(labels, "balanced").tolist()
    # class 0 is on 4 clips, class 1 on 2, "no class" on 2: weights 1/4, 1/2, 1/2
    assert w == [0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 0.5]
    assert type(build_sampler("uniform", LABELS, world_size=1, rank=0, seed=0)).__name__ \
        == "TrainSampler"


# ------------------------------------------------------------------------------ losses
def _logits_targets(seed=0, b=7, k=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, k, (b,), generator=g)
    multi = (torch.rand(b, k, generator=g) < 0.35).double()
    return logits, y, multi


COUNTS = torch.tensor([40.0, 20.0, 8.0, 3.0, 1.0], dtype=torch.float64)


def test_class_weights_formulas():
    """Normalised to a mean of 1 over the training clips: sum_c n_c w_c = sum_c n_c."""
    n = COUNTS.sum()
    inv = class_weights(COUNTS, "inverse").double()
    assert torch.allclose(inv, n / (len(COUNTS) * COUNTS), atol=1e-6)  # N / (K n_c)
    beta = 0.99
    eff = class_weights(COUNTS, "effective", beta).double()
    e = (1 - beta) / (1 - beta ** COUNTS)  # Cui et al. 2019: 1 / effective number
    assert torch.allclose(eff, e * n / (e * COUNTS).sum(), atol=1e-6)
    assert float((eff * COUNTS).sum()) == pytest.approx(float(n)) and eff[0] < eff[-1]
    assert class_counts([0, 0, 2, (1, 2)], 3).tolist() == [2, 1, 2]


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_losses_equal_their_formulas(eps):
    """Every loss against the formula written out with plain tensor ops (float64)."""
    logits, y, multi = _logits_targets()
    b, k = logits.shape
    logp = logits.log_softmax(1)
    p = logp.exp()
    q = F.one_hot(y, k).double() * (1 - eps) + eps / k  # smoothed one-hot
    w = class_weights(COUNTS, "effective", 0.999).double()

    ce = build_loss("ce", multilabel=False, counts=COUNTS, label_smoothing=eps)[0](logits, y)
    assert torch.allclose(ce, (-(q * logp).sum(1)).mean())
    # weighted CE: mean_i [(1-eps) w_yi (-log p_iyi) + eps/K sum_c w_c (-log p_ic)] (a mean
    # over the clips, not torch's division by sum_i w_yi: exact across processes)
    wce = build_loss("weighted_ce", multilabel=False, counts=COUNTS, label_smoothing=eps)[0]
    nll = -logp.gather(1, y[:, None])[:, 0]
    ref = ((1 - eps) * w[y] * nll + eps / k * (-(logp * w).sum(1))).mean()
    assert torch.allclose(wce(logits, y), ref)
    # softmax focal: mean_i -sum_c q_ic (1 - p_ic)^gamma log p_ic (gamma 0: CE)
    for gamma in (0.0, 2.0):
        fl = build_loss("focal", multilabel=False, counts=COUNTS, gamma=gamma,
                        label_smoothing=eps)[0](logits, y)
        assert torch.allclose(fl, (-(q * (1 - p) ** gamma * logp).sum(1)).mean())
    # ... with class weights: w_c inside the sum
    flw = build_loss("focal", multilabel=False, counts=COUNTS, weights="inverse",
                     label_smoothing=eps)[0](logits, y)
    wi = class_weights(COUNTS, "inverse").double()
    assert torch.allclose(flw, (-(wi * q * (1 - p) ** 2 * logp).sum(1)).mean())
    # BCE, multi-label: mean_i sum_c -[t log s + (1 - t) log(1 - s)], t smoothed to eps/2
    s = torch.sigmoid(logits)
    t = multi * (1 - eps) + eps / 2
    bce_ref = (-(t * s.log() + (1 - t) * (1 - s).log())).sum(1).mean()
    bce = build_loss("bce", multilabel=True, counts=COUNTS, label_smoothing=eps)[0]
    assert torch.allclose(bce(logits, multi), bce_ref)
    assert build_loss("auto", multilabel=True, counts=COUNTS)[0](logits, multi).item() == \
        pytest.approx(build_loss("bce", multilabel=True, counts=COUNTS)[0](logits, multi).item())
    # BCE on single-label targets: one-hot
    t1 = F.one_hot(y, k).double() * (1 - eps) + eps / 2
    assert torch.allclose(bce(logits, y), (-(t1 * s.log() + (1 - t1) * (1 - s).log())).sum(1)
                          .mean())
    # sigmoid focal (Lin et al.): -[t (1-s)^g log s + (1-t) s^g log(1-s)], weights w_c
    for gamma in (0.0, 2.0):
        sf = build_loss("focal", multilabel=True, counts=COUNTS, gamma=gamma,
                        weights=[1.0, 2.0, 3.0, 4.0, 5.0], label_smoothing=eps)[0]
        per = -(t * (1 - s) ** gamma * s.log() + (1 - t) * s ** gamma * (1 - s).log())
        wl = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
        assert torch.allclose(sf(logits, multi), (per * wl).sum(1).mean())


def test_loss_and_weight_choices_are_checked():
    with pytest.raises(ValueError, match="softmax loss"):
        build_loss("weighted_ce", multilabel=True, counts=COUNTS)
    with pytest.raises(ValueError, match="3 weights for 5 classes"):
        build_loss("bce", multilabel=False, counts=COUNTS, weights=[1.0, 2.0, 3.0])
    assert build_loss("focal", multilabel=False, counts=COUNTS)[1] is None  # auto: unweighted
    assert build_loss("weighted_ce", multilabel=False, counts=COUNTS)[1] is not None
    for bad, match in (("train.loss=hinge", "train.loss must be one of"),
                       ("data.sampler=oversample", "data.sampler must be one of"),
                       ("train.class_weights=square", "train.class_weights must be one of"),
                       ("train.focal_gamma=-1", "focal_gamma"),
                       ("train.class_weight_beta=1.0", "class_weight_beta")):
        with pytest.raises(ConfigError, match=match):
            apply_overrides(Config(), [bad]).validate("test")
    with pytest.raises(ConfigError, match="multi-label model"):
        apply_overrides(Config(), ["model.multilabel=true", "train.loss=ce"]).validate("t")
    cfg = apply_overrides(Config(), ["train.class_weights=[1, 2.5]"]).validate("t")
    assert cfg.train.class_weights == [1.0, 2.5]


# ------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize("seed", range(6))
def test_average_precision_equals_scikit_learn(seed):
    """Random scores with many ties (few distinct values) and a class without positives: per
    class AP equals scikit-learn's; mAP is the macro mean over the classes that have positives
    (a class without any has no AP: NaN, left out of the mean, as scikit-learn's
    average_precision_score over those columns)."""
    rng = np.random.default_rng(seed)
    n, k = 60, 8
    scores = rng.integers(0, 7, (n, k)) / 6.0 if seed % 2 else rng.random((n, k))
    targets = (rng.random((n, k)) < rng.uniform(0.05, 0.5, k)).astype(int)
    targets[:, 2] = 0  # no positives
    ap = average_precision(torch.tensor(scores), torch.tensor(targets))
    has = targets.sum(0) > 0
    ref = sklearn_metrics.average_precision_score(targets[:, has], scores[:, has], average=None)
    np.testing.assert_allclose(ap.numpy()[has], ref, atol=1e-12)
    assert torch.isnan(ap[~torch.tensor(has)]).all()
    macro = sklearn_metrics.average_precision_score(targets[:, has], scores[:, has],
                                                    average="macro")
    assert mean_average_precision(torch.tensor(scores), torch.tensor(targets)) == \
        pytest.approx(macro, abs=1e-12)
    # single-label labels: one-vs-rest columns
    labels = rng.integers(0, k, n)
    one = average_precision(torch.tensor(scores), torch.tensor(labels))
    for c in set(labels.tolist()):
        assert one[c].item() == pytest.approx(
            sklearn_metrics.average_precision_score(labels == c, scores[:, c]), abs=1e-12)


def test_best_f1_threshold_is_the_brute_force_optimum():
    rng = np.random.default_rng(1)
    scores = torch.tensor(rng.integers(0, 20, (40, 5)) / 19.0)
    targets = torch.tensor(rng.random((40, 5)) < 0.3)
    t, f1 = best_f1_threshold(scores, targets)

    def micro_f1(th):
        pred = scores >= th
        tp = (pred & targets).sum().item()
        return 2 * tp / (pred.sum().item() + targets.sum().item())

    best = max(micro_f1(th) for th in scores.unique().tolist())
    assert f1 == pytest.approx(best) and micro_f1(t) == pytest.approx(best)
    ref = sklearn_metrics.f1_score(targets.numpy().ravel(), (scores >= t).numpy().ravel())
    assert f1 == pytest.approx(ref)
    p, r, f, support = precision_recall_f1(scores >= t, targets)
    ref_p, ref_r, ref_f, ref_s = sklearn_metrics.precision_recall_fscore_support(
        targets.numpy(), (scores >= t).numpy(), zero_division=0)
    np.testing.assert_allclose(p.numpy(), ref_p)
    np.testing.assert_allclose(r.numpy(), ref_r)
    np.testing.assert_allclose(f.numpy(), ref_f)
    assert support.tolist() == ref_s.tolist()


def test_per_class_rows_sorted_by_support():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.5, 0.1, 0.4]])
    labels = torch.tensor([0, 1, 0, 0])
    rows = per_class_rows(scores, labels, ["a", "b", "c"], multilabel=False)
    assert [r["class"] for r in rows] == ["a", "b", "c"]
    assert [r["support"] for r in rows] == [3, 1, 0]
    assert rows[0]["recall"] == 1.0 and rows[0]["precision"] == 1.0
    assert math.isnan(rows[2]["ap"]) and rows[2]["f1"] == 0.0


# ------------------------------------------------------------------------------ formats
def test_multilabel_csv_and_charades_through_the_resolver(tmp_path):
    for name in ("a.mp4", "b.mp4", "c.mp4", "x1.mp4", "x2.mp4"):
        (tmp_path / name).write_bytes(b"")
    ml = tmp_path / "train.csv"
    ml.write_text("path,labels\na.mp4,walk;phone\nb.mp4,sit\nc.mp4,\n")
    src = resolve_videos(ml)
    assert src.format == "multilabel" and src.multilabel and src.labels is None
    assert src.class_names == ["phone", "sit", "walk"]  # sorted union
    assert [v.labels for v in src.videos] == [(0, 2), (1,), ()]
    given = resolve_videos(ml, labels=["walk", "sit", "phone", "run"])
    assert [v.labels for v in given.videos] == [(0, 2), (1,), ()]
    from tanet.apps.check import write_fixed_list  # `tanet check --fix-list` keeps the format

    write_fixed_list(src, [True, False, True], tmp_path / "fixed.csv")
    assert (tmp_path / "fixed.csv").read_text() == "path,labels\na.mp4,walk;phone\nc.mp4,\n"
    ml.write_text("path,labels\na.mp4,walk;swim\n")
    with pytest.raises(AnnotationError, match=r"train.csv:2: class 'swim' is not"):
        read_multilabel_csv(ml, labels=["walk"])
    ch = tmp_path / "Charades_v1_train.csv"
    ch.write_text('id,subject,scene,actions,length\nx1,S,Kitchen,"c092 11.90 21.20;c001 0.00 '
                  '12.60;c092 30.0 31.5",32\nx2,S,Hall,,10\n')
    src = resolve_videos(ch)
    assert src.format == "charades" and src.class_names == ["c001", "c092"]
    assert [(v.listed, v.labels) for v in src.videos] == [("x1.mp4", (0, 1)), ("x2.mp4", ())]
    (tmp_path / "Charades_v1_classes.txt").write_text(
        "c000 Holding some clothes\nc001 Putting clothes somewhere\n" +
        "".join(f"c{i:03d} action {i}\n" for i in range(2, 157)))
    records, names = read_charades_csv(ch)
    assert names[1] == "Putting clothes somewhere" and len(names) == 157
    assert records[0].labels == (1, 92)
    ch.write_text("id,actions\nx1,c092 oops 2\n")
    with pytest.raises(AnnotationError, match=r":2: action 'c092 oops 2'"):
        read_charades_csv(ch)


def test_synth_longtail_and_multilabel(tmp_path):
    """`tanet synth --longtail`: power-law counts (validation balanced); `--multilabel`: two
    classes of different families per clip, in a path,labels CSV the resolver reads."""
    out = tmp_path / "lt"
    run = [sys.executable, "-m", "tanet", "synth", str(out), "--classes", "6",
           "--videos-per-class", "12", "--val-per-class", "2", "--frames", "6", "--size", "16",
           "--longtail", "1.0", "--workers", "1", "--quiet"]
    p = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "synth.json").read_text())
    assert meta["train_counts"] == [12, 6, 4, 3, 2, 2]
    train = resolve_videos(out / "train.txt")
    assert np.bincount(train.labels).tolist() == [12, 6, 4, 3, 2, 2]
    assert np.bincount(resolve_videos(out / "val.txt").labels).tolist() == [2] * 6
    assert "move_right 12, move_left 6" in p.stdout
    ml = tmp_path / "ml"
    p = subprocess.run(run[:4] + [str(ml)] + run[5:] + ["--multilabel"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    src = resolve_videos(ml / "train.csv", labels=ml / "classes.txt")
    assert src.format == "multilabel" and all(len(v.labels) == 2 for v in src.videos)
    assert all(a // 2 != b // 2 for a, b in (v.labels for v in src.videos))  # two families
    from tanet.data.decode import open_video

    with open_video(src.videos[0].path) as r:
        assert r.info.num_frames == 6
