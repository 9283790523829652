"""One set of defaults: the shipped config/specialize.yaml is the dataclass defaults."""
from pathlib import Path

import yaml

from tst_ros import config
from tst_ros.cli import main

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "specialize.yaml"


def test_shipped_yaml_is_generated_from_the_dataclass_defaults():
    assert SHIPPED.read_text() == config.default_yaml(), \
        "regenerate it: tst-ros config dump --out config/specialize.yaml"
    assert config.load(SHIPPED) == config.Config()
    assert SHIPPED.read_text().startswith("# tst_ros: the one configuration")


def test_config_dump_prints_the_resolved_config(capsys):
    assert main(["config", "dump"]) == 0
    assert capsys.readouterr().out == config.default_yaml()
    assert main(["config", "dump", "--set", "pretrain.steps=7"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["pretrain"]["steps"] == 7
