"""Strategy settings are declared with their defaults and checked before training."""
import pytest

from bench import config as cfg
from bench import registry
from bench.settings import Setting, SettingError, resolve_settings


def test_defaults_fill_in_and_values_are_checked():
    schema = {"lambda": Setting(5000.0, low=0.0), "mode": Setting("separate", choices=("separate", "online"))}
    assert resolve_settings("ewc", schema, {"lambda": 10}) == {"lambda": 10.0, "mode": "separate"}
    for bad in ({"lambda": "abc"}, {"lambda": -1.0}, {"lambda": float("nan")}, {"mode": "x"}, {"lamda": 1.0},
                {"lambda": True}):
        with pytest.raises(SettingError):
            resolve_settings("ewc", schema, bad)


def test_every_strategy_section_of_every_protocol_is_valid():
    for path in cfg.PROTOCOL_DIR.glob("*.toml"):
        dataset, scenario = path.stem.split("-", 1)
        protocol = cfg.load_protocol(dataset, scenario)
        for name in protocol.get("strategies", {}):
            info = registry.get(name)
            config = cfg.resolve(protocol, dataset, scenario, name, 0, 0, schema=info.settings)
            assert set(config["params"]) == set(info.settings)


def test_resolve_names_the_bad_setting():
    protocol = cfg.apply_overrides(cfg.load_protocol("mnist", "task-il"), ["strategies.ewc.lamda=100"])
    with pytest.raises(cfg.ConfigError, match="lamda"):
        cfg.resolve(protocol, "mnist", "task-il", "ewc", 0, 0, schema=registry.get("ewc").settings)
