from __future__ import annotations

from pathlib import Path

import pytest

from configs.paths import DEFAULT_CONFIG, Workspace
from configs.settings import ConfigError, load_config


def test_config_default_yaml_loads() -> None:
    cfg = load_config(DEFAULT_CONFIG, environ={})
    assert cfg.data.source == "synthetic"
    assert cfg.synthetic.rows == 20000
    assert cfg.economics.customer_value.column == "monthly_charges_usd"


def test_config_unknown_key_fails_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("economics:\n  contact_cost: 15\n")
    with pytest.raises(ConfigError, match=r"economics\.contact_cost: unknown key"):
        load_config(path, environ={})


def test_config_wrong_type_fails_naming_key() -> None:
    with pytest.raises(ConfigError, match=r"synthetic\.rows"):
        load_config(None, overrides=["synthetic.rows=many"], environ={})


def test_config_unknown_override_section_fails() -> None:
    with pytest.raises(ConfigError, match=r"nosuch: unknown key"):
        load_config(None, overrides=["nosuch.key=1"], environ={})


def test_config_precedence_set_over_env_over_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("synthetic:\n  rows: 111\n  seed: 1\n")
    env = {"BAYESPILOT__SYNTHETIC__ROWS": "222", "BAYESPILOT__SYNTHETIC__SEED": "5"}
    cfg = load_config(path, overrides=["synthetic.rows=333"], environ=env)
    assert cfg.synthetic.rows == 333  # --set wins
    assert cfg.synthetic.seed == 5  # environment beats the file
    assert load_config(path, environ={}).synthetic.rows == 111  # file beats defaults


def test_config_set_parses_yaml_lists() -> None:
    cfg = load_config(None, overrides=["data.segment_columns=[a, b]"], environ={})
    assert cfg.data.segment_columns == ["a", "b"]


def test_config_home_env_sets_workspace(tmp_path: Path) -> None:
    cfg = load_config(None, environ={"BAYESPILOT_HOME": str(tmp_path)})
    assert Workspace.from_setting(cfg.paths.workspace).root == tmp_path.resolve()


def test_config_split_fractions_must_sum_to_one() -> None:
    with pytest.raises(ConfigError, match="sum to 1"):
        load_config(None, overrides=["split.test_fraction=0.5"], environ={})


def test_config_file_source_requires_path() -> None:
    with pytest.raises(ConfigError, match="data.path is required"):
        load_config(None, overrides=["data.source=file"], environ={})


def test_config_hash_changes_with_content() -> None:
    a = load_config(None, environ={})
    b = load_config(None, overrides=["economics.contact_cost_usd=16"], environ={})
    assert a.sha256() != b.sha256()
    assert a.sha256() == load_config(None, environ={}).sha256()
