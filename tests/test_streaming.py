"""Streaming from shards on local disk (no store): the epoch plan's guarantees over ranks and
loader workers, exact resume from any batch, items made exactly as the file dataset makes them,
shard patterns, and the extras named when a URL needs one."""
from __future__ import annotations

import itertools
import subprocess
import sys
from collections import Counter
from functools import partial

import numpy as np
import pytest
import torch
from _engine_data import CLASSES, make_videos

from tanet.apps.shard import parse_size, run_shard
from tanet.data.annotations import Record
from tanet.data.dataset import VideoDataset, build_loader
from tanet.data.shards import ShardError, StreamPlan, buffer_order, open_shards, read_records
from tanet.data.streaming import ShardStream
from tanet.data.transforms import build_train_transform
from tanet.engine.checkpointing import check_position
from tanet.engine.seeding import seeded_item
from tanet.geometry import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    data = make_videos(tmp_path_factory.mktemp("videos"), val_per_class=0)
    out = tmp_path_factory.mktemp("shards")
    manifest, _ = run_shard(str(data / "train"), str(out), shard_size="12KB", workers=1,
                            quiet=True)
    return out, manifest


def _records(plan: StreamPlan) -> list[tuple[int, int]]:
    """(shard, member) of every item of this rank, batch by batch as DataLoader takes them."""
    nw = max(plan.workers, 1)
    per_worker = []
    for j in range(nw):
        order = plan.order(j)
        s, m = plan.locate(j, order)
        per_worker.append(list(zip(s.tolist(), m.tolist())))
    out = []
    for b in range(plan.batches):  # batch b comes from worker b % nw, its (b // nw)-th batch
        k = b // nw
        out += per_worker[b % nw][k * plan.batch_size:(k + 1) * plan.batch_size]
    return out


@pytest.mark.parametrize("counts", [(4, 3, 5), (1,), (7, 7), (2, 9, 1, 4)])
def test_plan_reads_every_record_once_per_epoch_across_ranks_and_workers(counts):
    n = sum(counts)
    for world, workers, batch, train in itertools.product((1, 2, 3, 5), (0, 1, 3), (1, 2, 4),
                                                          (True, False)):
        plans = [StreamPlan(counts, 3, 1, world, r, workers, batch, 4, train)
                 for r in range(world)]
        got = Counter(x for p in plans for x in _records(p))
        assert set(got) == {(s, m) for s, c in enumerate(counts) for m in range(c)}
        if not train:
            assert sum(got.values()) == n and set(got.values()) == {1}  # evaluation: once
            continue
        assert len({p.batches for p in plans}) == 1  # every rank takes the same steps
        pad = -n % world  # P * W - N < W reads again: the first records of the epoch's stream
        assert sum(v - 1 for v in got.values()) == pad
        assert max(got.values()) <= 1 + -(-pad // n)  # twice at most, unless N < W


def test_plan_order_depends_on_seed_and_epoch_only_through_the_plan():
    a = StreamPlan((5, 5, 5), 0, 0, 1, 0, 2, 2, 4, True)
    assert _records(a) == _records(StreamPlan((5, 5, 5), 0, 0, 1, 0, 2, 2, 4, True))
    assert _records(a) != _records(StreamPlan((5, 5, 5), 1, 0, 1, 0, 2, 2, 4, True))
    assert _records(a) != _records(StreamPlan((5, 5, 5), 0, 1, 1, 0, 2, 2, 4, True))


def test_buffer_order_is_a_permutation_within_the_buffer():
    rng = np.random.default_rng(0)
    for count, size in [(0, 4), (1, 4), (10, 1), (10, 3), (50, 8), (7, 20)]:
        order = buffer_order(count, size, rng)
        assert sorted(order.tolist()) == list(range(count))
        # an item comes out no earlier than size - 1 places before it went in: memory bound
        if count > size > 1:
            assert all(step >= x - size + 1 for step, x in enumerate(order.tolist()))
    assert buffer_order(5, 0, rng).tolist() == list(range(5))


def _stream(shards, workers: int, *, batch: int = 2, **kw) -> ShardStream:
    out, _ = shards
    items = VideoDataset([], num_segments=4, train=True,
                         transform=build_train_transform(size=32, scales=(1.0, 0.875),
                                                         mean=IMAGENET_MEAN, std=IMAGENET_STD))
    return ShardStream(open_shards(out / "shards.json"), items, workers=workers,
                       batch_size=batch, seed=3, buffer=4, item_context=partial(seeded_item, 3),
                       **kw)


def _batches(stream: ShardStream, epoch: int, start: int) -> list[tuple[list[int], torch.Tensor]]:
    stream.set_epoch(epoch, start)
    loader = build_loader(stream, batch_size=stream.batch_size, workers=stream.workers,
                          persistent_workers=False)
    out = [(b["index"].tolist(), b["video"]) for b in loader]
    assert len(out) == len(loader)
    return out


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers, resume_at", [(0, (1, 2, 3, 4, 5)), (2, (1, 3)), (3, (4,))])
def test_resumed_epoch_continues_exactly(shards, workers, resume_at):
    """From any batch, the rest of the epoch (records and their clips, bit for bit) is the
    uninterrupted epoch's, whatever the number of loader workers."""
    stream = _stream(shards, workers)
    full = _batches(stream, 1, 0)
    assert sorted(i for ids, _ in full for i in ids) == list(range(12))
    for m in resume_at:
        tail = _batches(stream, 1, m * stream.batch_size)
        assert [ids for ids, _ in tail] == [ids for ids, _ in full[m:]]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(tail, full[m:]))


def test_stream_items_are_the_file_datasets_items(shards):
    """A record's item: the same reader, clip policy and transform as VideoDataset on the
    original file, with the same per-item seed."""
    stream = _stream(shards, 0, batch=1)
    stream.set_epoch(2)
    item = next(iter(stream))
    ss = stream.shards
    metas = {r.id: r.meta for s, first in zip(ss.shards, ss.first_ids.tolist())
             for r in read_records(s, first, 0, s.records)}
    meta = metas[item["index"]]
    files = VideoDataset([Record(meta["path"], meta["label"])], num_segments=4, train=True,
                         transform=stream.items.transform)
    with seeded_item(3, 2, item["index"]):
        ref = files.make_item(item["index"], meta["path"], meta["label"])
    assert torch.equal(item["video"], ref["video"]) and item["label"] == ref["label"]
    assert item["path"].startswith(str(shards[0])) and "#" in item["path"]


def test_shard_patterns_and_manifest_errors(shards, tmp_path):
    out, manifest = shards
    names = [e["name"] for e in manifest["shards"]]
    two = open_shards(out / "shard-{000000..000001}.tar")
    assert [s.url.rsplit("/", 1)[-1] for s in two.shards] == names[:2]
    assert len(two) == sum(e["records"] for e in manifest["shards"][:2])
    assert open_shards(out / "shards.json").class_names == CLASSES
    with pytest.raises(ShardError, match=r"shard-0000\d\d.tar is not in .*shards.json \(\d+ of "
                                         r"100 names missing\)"):
        open_shards(out / "shard-{000000..000099}.tar")
    (tmp_path / "shards.json").write_text('{"format": "other"}')
    with pytest.raises(ShardError, match="not a shards manifest"):
        open_shards(tmp_path / "shards.json")


def test_mid_epoch_resume_refuses_a_changed_plan(tmp_path):
    from tanet.config import Config

    plan = {"data": "shards", "shards": "abc", "train.workers": 2, "data.shuffle_buffer": 64}
    state = {"micro": 3, "world_size": 1, "batch_size": 8, "accumulate": 1, "plan": plan}
    check_position(tmp_path, state, 1, Config(), plan=plan)
    with pytest.raises(ValueError, match="train.workers: saved 2, now 4"):
        check_position(tmp_path, state, 1, Config(), plan={**plan, "train.workers": 4})
    check_position(tmp_path, {**state, "micro": 0}, 1, Config(),  # an epoch end: any change
                   plan={**plan, "train.workers": 4})


def test_sizes():
    assert parse_size("500MB") == 500 * 10**6 and parse_size("1GB") == 10**9
    assert parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("2000") == 2000
    with pytest.raises(ValueError, match="500MB"):
        parse_size("big")


def test_without_the_extras_tanet_works_and_names_them():
    code = (
        "import sys\n"
        "for m in ('fsspec', 's3fs', 'gcsfs', 'webdataset', 'braceexpand'):\n"
        "    sys.modules[m] = None\n"
        "import tanet, tanet.data, tanet.engine, tanet.apps.shard\n"
        "from tanet import remote\n"
        "from tanet.data.decode import VideoReader\n"
        "for url in ('s3://b/clip.mp4', 'gs://b/x.json', 'k/train-{0..3}.tar'):\n"
        "    try:\n"
        "        VideoReader(url) if url.endswith('mp4') else remote.read_bytes(url) "
        "if '{' not in url else remote.expand(url)\n"
        "    except remote.RemoteError as e:\n"
        "        print(e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert "s3://b/clip.mp4: reading s3:// URLs needs fsspec: pip install 'tanet[s3]'" in lines
    assert "gs://b/x.json: reading gs:// URLs needs fsspec: pip install 'tanet[gcs]'" in lines
    assert any("brace patterns need braceexpand: pip install 'tanet[shards]'" in x for x in lines)
