"""A workspace whose champion was trained on one table, run on another table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from configs.paths import Workspace
from configs.settings import build_config
from flows.cli import main
from tasks.records import RecordStore

from ..conftest import small_layers

pytestmark = pytest.mark.slow


def test_cli_run_on_another_table_in_a_used_workspace_exits_2_before_training(
    tmp_path: Path, workspace: Path, telco_layers, monkeypatch, capsys
) -> None:
    import flows.promotion as promotion

    # the champion comes from a run on the generator (explanations are beside the point here)
    layers = small_layers(workspace, explain={"enabled": False})
    first = promotion.run_direct(build_config(layers)).outcome.record
    assert first["decision"] == "promoted", first["reasons"]
    store = RecordStore(*_store_paths(workspace))
    before = [p.name for p in store.paths()]

    trained: list[str] = []

    def must_not_train(*args: Any, **kwargs: Any) -> Any:
        trained.append("called")
        raise AssertionError("trained on a table the champion cannot be compared on")

    monkeypatch.setattr(promotion, "train_baselines", must_not_train)
    monkeypatch.setattr(promotion, "train_candidate", must_not_train)
    config = tmp_path / "telco.yaml"
    config.write_text(yaml.safe_dump(telco_layers))  # same workspace, another table

    # the exception passes through a Prefect flow run unchanged (checked by hand: exit 2 too)
    code = main(["run", "--no-prefect", "--config", str(config)])

    err = capsys.readouterr().err
    assert code == 2, err
    assert "bad input: this workspace's champion" in err
    assert "label column: champion 'churned', this run 'Churn'" in err
    assert "id column: champion 'customer_id', this run 'customerID'" in err
    assert "champion feature(s) missing from this run" in err
    assert "BAYESPILOT_HOME" in err and "KeyError" not in err
    assert trained == []
    assert [p.name for p in store.paths()] == before
    assert store.verify().ok


def _store_paths(workspace: Path) -> tuple[Path, Path]:
    ws = Workspace.from_setting(str(workspace))
    return ws.promotions, ws.promotions_lock
