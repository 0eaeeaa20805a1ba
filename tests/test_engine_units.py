"""Engine pieces without data: samplers, lr schedule, parameter groups, RNG state round trip."""
import random

import numpy as np
import pytest
import torch

from tanet.config import Config, ConfigError, apply_overrides
from tanet.data.views import parse_views
from tanet.engine import (ShardSampler, TrainSampler, build_model, build_optimizer, lr_factor,
                          rng_state, set_rng_state)
from tanet.geometry import Geometry


def test_train_sampler_shards_one_permutation():
    single = list(TrainSampler(10, seed=3))
    assert sorted(i for _, i in single) == list(range(10))
    shards = [list(TrainSampler(10, world_size=3, rank=r, seed=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded by wrap-around to 12
    order = [i for _, i in single]
    for r, s in enumerate(shards):
        assert [i for _, i in s] == (order + order)[:12][r::3]
    s = TrainSampler(10, seed=3)
    s.set_epoch(1)
    assert [i for _, i in s] != order and all(e == 1 for e, _ in s)


def test_shard_sampler_no_duplicates_no_drops():
    got = [i for r in range(3) for _, i in ShardSampler(10, world_size=3, rank=r)]
    assert sorted(got) == list(range(10))


def test_lr_factor_step_cosine_warmup():
    cfg = apply_overrides(Config(), ["train.epochs=10", "train.lr_steps=[4, 8]",
                                     "train.warmup_epochs=1"])
    spe = 5
    assert lr_factor(0, spe, cfg) == pytest.approx(0.2)
    assert lr_factor(4, spe, cfg) == pytest.approx(1.0)
    assert lr_factor(19, spe, cfg) == 1.0 and lr_factor(20, spe, cfg) == pytest.approx(0.1)
    assert lr_factor(40, spe, cfg) == pytest.approx(0.01)
    apply_overrides(cfg, ["train.schedule=cosine"])
    assert lr_factor(5, spe, cfg) == pytest.approx(1.0)
    assert lr_factor(5 + 9 * spe // 2, spe, cfg) == pytest.approx(0.5 * (1 + np.cos(np.pi * 22 / 45)))
    assert lr_factor(50, spe, cfg) == pytest.approx(0.0, abs=1e-12)


def test_param_groups_fc_lr_and_no_decay():
    cfg = apply_overrides(Config(), ["model.name=tanet_tiny", "model.num_segments=4"])
    model = build_model(cfg, ["a", "b", "c"])
    opt = build_optimizer(model, cfg, lr=0.1)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["fc_w"]["lr"] == pytest.approx(0.5) and groups["fc_b"]["lr"] == pytest.approx(0.5)
    assert groups["fc_b"]["weight_decay"] == 0 and groups["no_decay"]["weight_decay"] == 0
    assert groups["decay"]["weight_decay"] == 1e-4
    n = sum(len(g["params"]) for g in opt.param_groups)
    assert n == len(list(model.parameters()))
    assert model.card.class_names == ["a", "b", "c"]


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal()  # leave a cached gaussian
    state = rng_state()
    torch.save({"rng": [state]}, tmp_path / "s.pt")
    a = (torch.rand(3), np.random.rand(3), random.random())
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["rng"][0]
    set_rng_state(loaded)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_parse_views():
    assert parse_views("10x3") == (10, 3) and parse_views("2X1") == (2, 1)
    for bad in ("3", "2x2", "0x3", "ax3"):
        with pytest.raises(ValueError, match="--views"):
            parse_views(bad)


def _tiny_cfg(*overrides: str) -> Config:
    cfg = Config()
    apply_overrides(cfg, ["model.name=tanet_tiny", "model.num_segments=4", *overrides])
    return cfg.validate()


def test_one_override_rule_for_the_card():
    """Training builds the card with the config's values through Geometry.with_overrides; `tanet
    test` applies the same rule, so a run's own config changes nothing and another one wins."""
    from tanet.models.registry import default_card

    base = default_card("tanet_tiny")  # 64 px crops of a 72 px short side
    assert (base.input_size, base.short_side, base.sampling) == ((3, 64, 64), 72, "segment")
    card = build_model(_tiny_cfg("model.input_size=32"), ["a", "b"]).card
    assert (card.input_size, card.short_side, card.sampling) == ((3, 32, 32), 36, "segment")
    cfg = _tiny_cfg("model.input_size=32", "data.short_side=40", "data.sampling=dense")
    card = build_model(cfg, ["a", "b"]).card
    assert (card.num_segments, card.input_size, card.short_side, card.sampling) == (
        4, (3, 32, 32), 40, "dense")
    assert card.geometry.with_overrides(**cfg.geometry_overrides()) == card.geometry
    assert card.geometry.with_overrides(**Config().geometry_overrides()) == card.geometry
    other = card.geometry.with_overrides(**_tiny_cfg("data.sampling=segment").geometry_overrides())
    assert (other.sampling, other.short_side) == ("segment", 40)
    assert type(card.with_overrides(sampling="segment")) is type(card)  # a card stays a card
    with pytest.raises(ValueError, match="sampling must be one of segment, dense"):
        card.with_overrides(sampling="uniform")
    with pytest.raises(ConfigError, match="data.sampling must be one of segment, dense"):
        _tiny_cfg("data.sampling=uniform")
    with pytest.raises(ConfigError, match="model.input_size must be >= 1"):
        _tiny_cfg("model.input_size=0")


def test_card_names_old_keys_and_misspellings():
    """One name per field: old keys are read (``resize``), never written; a misspelt field is an
    error, not a silent new attribute."""
    from tanet.models.recognizer import ModelCard

    card = ModelCard(name="tanet_tiny", num_classes=3, short_side=40, sampling="dense")
    d = card.to_dict()
    assert "resize" not in d and d["short_side"] == 40 and ModelCard.from_dict(d) == card
    old = {k: v for k, v in d.items() if k != "short_side"} | {"resize": 44}
    assert ModelCard.from_dict(old).short_side == 44
    assert ModelCard.from_dict({**d, "resize": 44}).short_side == 40  # the current name wins
    assert card.copy(resize=48).short_side == 48
    with pytest.raises(TypeError, match="no field 'smapling'"):
        card.copy(smapling="segment")
    with pytest.raises(AttributeError):
        card.resize = 48
    assert card.geometry == Geometry(short_side=40, sampling="dense")
    assert type(card.geometry) is Geometry


def test_epoch_log_flush_gathers_once_and_writes_every_list(tmp_path, monkeypatch):
    """The three lists (skipped, non-finite, warnings) travel in one collective, as the
    docstring promises; every rank's entries land in their files."""
    from types import SimpleNamespace

    import importlib

    st = importlib.import_module("tanet.engine.state")
    from tanet.engine.distributed import DistInfo

    calls = []
    other_rank = {"skipped.txt": ["b.mp4"], "nonfinite.txt": [], "warnings.txt": ["c.mp4\tcut"]}

    def gather(info, obj):
        calls.append(obj)
        return [obj, other_rank]

    monkeypatch.setattr(st, "all_gather", gather)
    log = st.EpochLog(skipped=["a.mp4"], nonfinite=["n.mp4"], warned=[])
    run = SimpleNamespace(info=DistInfo(rank=0, world_size=2, local_rank=0,
                                        device=torch.device("cpu")), out=tmp_path)
    log.flush(run, epoch=0)
    assert len(calls) == 1
    assert (tmp_path / "skipped.txt").read_text() == "epoch 1\ta.mp4\nepoch 1\tb.mp4\n"
    assert (tmp_path / "nonfinite.txt").read_text() == "epoch 1\tn.mp4\n"
    assert (tmp_path / "warnings.txt").read_text() == "epoch 1\tc.mp4\tcut\n"
    assert not log.skipped and not log.nonfinite and not log.warned


def test_resume_checks_live_with_the_run_files(tmp_path):
    """check_position refuses a mid-epoch state saved with another processes x batch x
    accumulation, naming both; an epoch-end state resumes with any."""
    from tanet.engine.checkpointing import check_position

    cfg = Config()
    cfg.train.batch_size, cfg.train.accumulate = 4, 1
    state = {"micro": 3, "world_size": 2, "batch_size": 4, "accumulate": 1}
    check_position(tmp_path, state, 2, cfg)
    with pytest.raises(ValueError, match=r"2 process\(es\) x train.batch_size=4.*now 1 x 4"):
        check_position(tmp_path, state, 1, cfg)
    check_position(tmp_path, {**state, "micro": 0}, 1, cfg)
