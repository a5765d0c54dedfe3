import pytest
import yaml

from uld.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    override,
    parse_override,
    save_config,
)


def test_defaults_are_the_papers_settings():
    c = load_config()
    assert c.model.backbone == "densenet121"
    assert (c.data.num_slices, c.data.slice_spacing_mm) == (9, 2.0)
    assert c.data.window_hu == (-1024.0, 3071.0)
    assert (c.mining.tau, c.mining.gt_nms_iou, c.mining.ema_momentum) == (0.9, 0.7, 0.999)
    assert (c.train.lr, c.train.iterations, c.train.resize_range) == (0.02, 80_000, (0.8, 1.2))


def test_preset_and_overrides_apply_in_order():
    c = load_config("demo", ["train.lr=0.01", "mining.policy=none", "data.window_hu=[-100, 200]"])
    assert c.name == "demo" and c.model.backbone == "small"
    assert c.train.lr == 0.01 and c.mining.policy == "none"
    assert c.data.window_hu == (-100.0, 200.0)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="train.lrr"):
        load_config(None, ["train.lrr=1"])


def test_wrong_type_and_literal_are_named():
    with pytest.raises(ConfigError, match="train.iterations"):
        load_config(None, ["train.iterations=abc"])
    with pytest.raises(ConfigError, match="mining.policy"):
        load_config(None, ["mining.policy=maybe"])


def test_override_needs_equals():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("train.lr")


def test_round_trip_through_yaml(tmp_path):
    c = override(load_config("demo"), "train.seed=3")
    save_config(c, tmp_path / "config.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == c
    assert config_to_dict(again)["train"]["seed"] == 3


def test_config_is_frozen():
    c = load_config()
    with pytest.raises(AttributeError):
        c.train.lr = 1.0  # type: ignore[misc]


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="presets"):
        load_config("nope")


def test_a_config_saved_by_0_1_keeps_its_meaning():
    from uld.config import config_from_dict, upgrade_saved_config

    old = {"data": {"window_hu": [-400, 600]}, "model": {"backbone": "small"},
           "infer": {"batch_size": 8, "link_iou": 0.4, "link_max_gap": 2}}
    config = config_from_dict(upgrade_saved_config(old))
    assert config.data.pixel_spacing_mm == 0.0        # 0.1 never resampled
    assert config.model.pretrained == ""               # 0.1 started from random weights by default
    assert (config.infer.overlap.iou_threshold, config.infer.overlap.max_gap) == (0.4, 2)
    assert config.infer.kalman.max_gap == 2
    assert old["infer"]["link_iou"] == 0.4             # the input is not changed
    fresh = load_config(None)
    assert fresh.data.pixel_spacing_mm == 0.8 and fresh.model.pretrained == "imagenet"


def test_the_repository_configs_folder_holds_the_presets():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert load_config(root / "configs" / "deeplesion.yaml") == load_config("deeplesion")
    paper = load_config("deeplesion")
    assert (paper.data.format, paper.data.pixel_spacing_mm, paper.data.num_slices) == ("deeplesion", 0.8, 9)
    assert (paper.model.backbone, paper.model.pretrained) == ("densenet121", "imagenet")
    assert (paper.mining.tau, paper.mining.gt_nms_iou, paper.mining.ema_momentum) == (0.9, 0.7, 0.999)
    assert (paper.train.lr, paper.train.iterations, paper.train.resize_range) == (0.02, 80_000, (0.8, 1.2))
