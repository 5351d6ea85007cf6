"""Config loading: shipped files, inheritance, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from pst.config import (Config, LoopConfig, OptimizerConfig, apply_overrides, config_from_dict, config_to_dict,
                        dump_config, find_config, load_config, shipped_configs)


def test_shipped_configs_load_and_validate():
    names = shipped_configs()
    for required in ("toy", "toy_base", "toy_ccm", "toy_icm", "synthia_cityscapes", "gta5_cityscapes",
                     "synthia_cityscapes_ccm", "synthia_cityscapes_icm", "gta5_cityscapes_ccm", "gta5_cityscapes_icm"):
        assert required in names
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, Config)
    assert load_config("synthia_cityscapes").space.num_classes == 16
    assert load_config("gta5_cityscapes").space.num_classes == 19
    assert load_config("toy_ccm").categories == ["ccm"]
    assert load_config("toy_icm").categories == ["icm"]
    # inherited values survive, own values win
    g = load_config("gta5_cityscapes")
    assert g.data.source.name == "gta5" and g.data.target.name == "cityscapes"
    assert g.selftrain.ema_every == 100 and g.selftrain.ema_momentum == 0.99


def test_defaults_equal_an_empty_file(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert config_to_dict(load_config(p)) == config_to_dict(Config())


def test_round_trip(tmp_path):
    cfg = load_config("toy", ["source.steps=7", "categories=[icm]"])
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert config_to_dict(load_config(p)) == config_to_dict(cfg)
    assert config_to_dict(config_from_dict(config_to_dict(cfg))) == config_to_dict(cfg)


def test_overrides_types():
    cfg = load_config("toy", ["source.steps=12", "selftrain.lr=1e-3", "data.size=[64, 128]",
                              "model.pretrained=null", "selftrain.instances.method=meanshift++",
                              "data.target.style=target_dusk", "source.lr=1"])
    assert cfg.source.steps == 12
    assert cfg.selftrain.lr == pytest.approx(1e-3) and isinstance(cfg.selftrain.lr, float)
    assert cfg.data.size == [64, 128]
    assert cfg.model.pretrained is None
    assert cfg.selftrain.instances.method == "meanshift++"
    assert cfg.data.target.style == "target_dusk"
    assert cfg.source.lr == 1.0 and isinstance(cfg.source.lr, float)  # int accepted for float
    # the nested mapping keeps its other keys
    assert cfg.data.target.seed == load_config("toy").data.target.seed


@pytest.mark.parametrize("override, key", [
    ("source.stepz=3", "source.stepz"),
    ("nope=1", "nope"),
    ("selftrain.instances.bandwith=0.3", "selftrain.instances.bandwith"),
    ("data.target.colour=1", "data.target.colour"),
])
def test_unknown_key_is_named(override, key):
    with pytest.raises(KeyError, match=key.replace(".", r"\.")):
        load_config("toy", [override])


@pytest.mark.parametrize("override, key", [
    ("source.steps=abc", "source.steps"),
    ("source.steps=1.5", "source.steps"),
    ("source.steps=true", "source.steps"),
    ("amp=1", "amp"),
    ("data.size=5", "data.size"),
    ("data.size=[64, x]", r"data.size\[1\]"),
    ("selftrain.lr=fast", "selftrain.lr"),
    ("data.source=3", "data.source"),
    ("name=[1]", "name"),
])
def test_wrong_type_is_named(override, key):
    with pytest.raises(TypeError, match=key):
        load_config("toy", [override])


@pytest.mark.parametrize("override, match", [
    ("model.backbone=resnet9", "model.backbone"),
    ("selftrain.instances.method=kmeans", "selftrain.instances.method"),
    ("categories=[base, foo]", r"categories\[1\]"),
    ("categories=[]", "categories"),
    ("source.steps=-1", "source.steps"),
    ("selftrain.ema_momentum=1.5", "selftrain.ema_momentum"),
    ("selftrain.bn_recalibrate=-1", "selftrain.bn_recalibrate"),
    ("data.size=[4, 4]", "data.size"),
    ("loss.delta_d=0.1", "loss.delta_d"),
    ("data.source.name=cityscapes", "data.source.root"),
    ("model.output_stride=4", "model.output_stride"),
    ("device=tpu", "device"),
    ("source.grad_clip=-1", "source.grad_clip"),
])
def test_bad_value_is_named(override, match):
    with pytest.raises(ValueError, match=match):
        load_config("toy", [override])


def test_override_syntax_errors():
    with pytest.raises(ValueError, match="key=value"):
        load_config("toy", ["source.steps"])
    with pytest.raises(ValueError, match="empty key"):
        load_config("toy", ["source..steps=3"])
    with pytest.raises(TypeError, match="source.steps is not a mapping"):
        apply_overrides({"source": {"steps": 3}}, ["source.steps.x=1"])


def test_inherit_and_errors(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"name": "b", "source": {"steps": 5, "lr": 0.5}}))
    child = tmp_path / "child.yaml"
    child.write_text("inherit: base.yaml\nsource: {steps: 9}\n")
    cfg = load_config(child)
    assert (cfg.name, cfg.source.steps, cfg.source.lr) == ("b", 9, 0.5)
    loop = tmp_path / "loop.yaml"
    loop.write_text("inherit: loop.yaml\n")
    with pytest.raises(ValueError, match="inherit loop"):
        load_config(loop)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(TypeError, match="should be a mapping"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(FileNotFoundError, match="not a shipped config"):
        find_config("no_such_config")


@pytest.mark.parametrize("stage", ["source", "selftrain"])
@pytest.mark.parametrize("override, message", [
    ("steps=-1", "steps should be >= 0"), ("lr=0", "lr should be > 0.0"), ("grad_clip=-1", "grad_clip should be >= 0.0"),
    ("checkpoint_every=0", "checkpoint_every should be >= 1"), ("log_every=0", "log_every should be >= 1"),
])
def test_shared_loop_and_optimizer_settings_are_checked_under_each_stage(stage, override, message):
    with pytest.raises(ValueError, match=re.escape(f"{stage}.{message}")):
        load_config(None, [f"{stage}.{override}"])


def test_shared_settings_keep_each_stage_its_defaults():
    """The stages share the loop and optimiser fields (one declaration) and keep the defaults they had."""
    cfg = Config()
    for st in (cfg.source, cfg.selftrain):
        assert isinstance(st, LoopConfig) and isinstance(st, OptimizerConfig)
        assert (st.optimizer, st.momentum, st.weight_decay, st.head_lr_mult, st.poly_power, st.grad_clip) == (
            "sgd", 0.9, 5e-4, 10.0, 0.9, 0.0)
    assert (cfg.source.steps, cfg.source.lr, cfg.source.checkpoint_every, cfg.source.log_every) == (600, 0.01, 100, 20)
    assert (cfg.selftrain.steps, cfg.selftrain.lr, cfg.selftrain.checkpoint_every, cfg.selftrain.log_every) == (
        400, 0.005, 50, 10)
    assert cfg.source.warmup == 20 and not hasattr(cfg.selftrain, "warmup")


def test_config_is_plain_dataclass():
    cfg = Config()
    assert dataclasses.is_dataclass(cfg)
    # no shared mutable defaults between instances
    a, b = Config(), Config()
    a.categories.append("ccm")
    assert b.categories == ["base"]
