"""Config: YAML recipes, --set overrides, type errors, unknown-key suggestions."""
from pathlib import Path

import pytest

from tanet.config import (Config, ConfigError, all_keys, apply_overrides, config_from_dict,
                          config_to_dict, dump_config, list_recipes, load_config)

REPO = Path(__file__).resolve().parents[1]
STABLE = ["model.name", "model.num_segments", "model.pretrained", "data.root", "data.train",
          "data.val", "data.labels", "data.sampling", "data.flip", "train.epochs",
          "train.batch_size", "train.lr", "train.workers", "output"]


def test_stable_keys_exist():
    keys = all_keys()
    for k in STABLE:
        assert k in keys


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("model:\n  name: tsn_tiny\n  num_segments: 4\ntrain:\n  lr: 1e-3\n"
                 "  lr_steps: [3, 6]\noutput: runs/x\n")
    cfg = load_config(f, ["train.epochs=7", "data.flip=false", "train.lr=0.5",
                          "model.pretrained=null", "data.scales=[1, 0.5]"])
    assert cfg.model.name == "tsn_tiny" and cfg.model.num_segments == 4
    assert cfg.train.epochs == 7 and cfg.data.flip is False
    assert cfg.train.lr == 0.5 and isinstance(cfg.train.lr, float)
    assert cfg.train.lr_steps == [3, 6] and cfg.data.scales == [1.0, 0.5]
    assert cfg.output == "runs/x"
    cfg2 = load_config(f)
    assert cfg2.train.lr == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string
    assert cfg2.train.epochs == Config().train.epochs


def test_roundtrip(tmp_path):
    cfg = apply_overrides(Config(), ["data.flip_label_map={a: b, b: a}", "train.clip_grad=null"])
    dump_config(cfg, tmp_path / "c.yaml")
    back = load_config(tmp_path / "c.yaml")
    assert config_to_dict(back) == config_to_dict(cfg)
    assert back.data.flip_label_map == {"a": "b", "b": "a"} and back.train.clip_grad is None


def test_unknown_key_suggests_and_names_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'train\.epoch'; did you mean "
                                          r"'train\.epochs'"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"--set trian\.lr: unknown key 'trian\.lr'; did you "
                                          r"mean 'train\.lr'"):
        apply_overrides(Config(), ["trian.lr=0.1"])
    with pytest.raises(ConfigError, match="unknown key 'model.name.x'"):
        apply_overrides(Config(), ["model.name.x=1"])


@pytest.mark.parametrize("item, msg", [
    ("train.epochs=ten", "train.epochs expects int"),
    ("train.epochs=2.5", "train.epochs expects int"),
    ("data.flip=3", "data.flip expects bool"),
    ("train.lr=[1]", "train.lr expects float"),
    ("train.lr_steps=[1, x]", r"train.lr_steps\[1\] expects int"),
    ("model=3", "model is a section"),
    ("train.epochs", "expected KEY=VALUE"),
])
def test_type_errors(item, msg):
    with pytest.raises(ConfigError, match=msg):
        apply_overrides(Config(), [item])


def test_validate_choices(tmp_path):
    with pytest.raises(ConfigError, match="data.sampling must be one of segment, dense"):
        load_config(None, ["data.sampling=random"])
    with pytest.raises(ConfigError, match="data.test_crops must be 1, 3 or 10"):
        load_config(None, ["data.test_crops=2"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="top level"):
        config_from_dict([1, 2], source="x.yaml")  # type: ignore[arg-type]


def test_recipes_are_shipped_in_the_package():
    assert {"synthetic_tanet_tiny", "synthetic_tsn_tiny", "kinetics400_tanet_r50_8f"} <= set(
        list_recipes())
    assert not (REPO / "configs").exists()  # one place for recipes: tanet/configs


@pytest.mark.parametrize("recipe", sorted((REPO / "tanet" / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_recipes_load(recipe):
    cfg = load_config(recipe)
    from tanet.models import list_models

    assert cfg.model.name in list_models()
    by_name = load_config(recipe.stem)  # --config NAME finds the shipped recipe
    assert config_to_dict(by_name) == config_to_dict(cfg)


def test_unknown_recipe_name_suggests():
    with pytest.raises(ConfigError, match="did you mean 'synthetic_tanet_tiny'"):
        load_config("synthetic_tanet_tnyi")


def test_authors_recipes():
    k400 = load_config("kinetics400_tanet_r50_8f")
    assert k400.data.sampling == "dense" and k400.data.flip
    assert k400.train.epochs == 100 and k400.train.lr_steps == [50, 75, 90]
    sth1 = load_config("configs/sthv1_tanet_r50_8f.yaml")  # an old path finds the recipe too
    assert sth1.data.sampling == "segment" and not sth1.data.flip and sth1.train.epochs == 50
    for cfg in (k400, sth1):
        assert cfg.train.lr == 0.01 and cfg.train.lr_batch == 8 and cfg.train.clip_grad == 20
        assert cfg.train.fc_lr_mult == 5 and cfg.model.dropout == 0.5


def test_cli_set_takes_several_pairs_and_repeats():
    from tanet.cli import build_parser

    args = build_parser().parse_args(["train", "--config", "c.yaml", "--set", "train.lr=0.1",
                                      "train.epochs=3", "--set", "output=x", "--resume"])
    assert args.overrides == ["train.lr=0.1", "train.epochs=3", "output=x"] and args.resume


def test_frame_template_is_checked():
    from tanet.config import Config, ConfigError, apply_overrides

    cfg = apply_overrides(Config(), ["data.frame_template={:05d}.jpg"]).validate("x")
    assert cfg.data.frame_template.format(3) == "00003.jpg"
    for bad in ("img.jpg", "img_{name}.jpg", "img_{:05d"):
        with pytest.raises(ConfigError, match="data.frame_template"):
            apply_overrides(Config(), [f"data.frame_template={bad}"]).validate("x")


def test_yaml_escape_past_the_last_code_point_is_a_config_error(tmp_path):
    """Found by the fuzz test: PyYAML raises OverflowError for a \\U escape above 0x10FFFF."""
    path = tmp_path / "bad.yaml"
    path.write_text('output: "\\U99999999"\n')
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(None, ['train.epochs="\\U99999999"'])
