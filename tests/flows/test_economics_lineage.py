"""Economics that stay put, through the CLI: after ``policy-update --set
economics.contact_cost_usd=20`` a challenger + promote-challenger, and a plain run, whose config
file still says 15, keep 20 and say so; an explicit override reverts it and says so.

The tests share one workspace and run in order (each builds on the chain the previous left).
The shadow stage between ``run --as-challenger`` and ``promote-challenger`` (serving, outcomes,
monitoring: tests/serving/test_challenger_scoring.py) is stood in for by a monitoring record
that holds labelled shadow evidence for the challenger."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tasks.record_models import MonitoringBody, body_dict, parse_record, parse_records
from tasks.records import RecordStore

from ..conftest import small_layers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def updated(tmp_path_factory) -> tuple[Path, Path]:
    """A champion (cost 15 from the config file), then a policy update to cost 20."""
    root = tmp_path_factory.mktemp("econ")
    ws, cfg = root / "ws", root / "config.yaml"
    cfg.write_text(yaml.safe_dump(small_layers(ws, rows=3000)))
    assert main(["run", "--no-prefect", "--config", str(cfg)]) == 0
    assert main(
        [
            "policy-update",
            "--no-prefect",
            "--config",
            str(cfg),
            "--set",
            "economics.contact_cost_usd=20",
        ]
    ) == 0
    rec = parse_record(RecordStore(ws / "promotions").head() or {})
    assert rec.decision == "policy-updated" and rec.economics is not None
    assert rec.economics.source == "override" and rec.economics.replaced == {
        "contact_cost_usd": 15.0
    }
    return ws, cfg


def _head(ws: Path):  # type: ignore[no-untyped-def]
    return parse_records(RecordStore(ws / "promotions").records())[-1]


def test_economics_challenger_and_promote_challenger_keep_policy_update(
    updated, capsys
) -> None:
    ws, cfg = updated
    update_id = _head(ws).record_id
    capsys.readouterr()
    assert main(["run", "--no-prefect", "--as-challenger", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "decision: CHALLENGER" in out
    assert "adopted contact_cost_usd=20 (config file has 15)" in out
    chall = _head(ws)
    assert chall.config["economics"]["contact_cost_usd"] == 20.0  # what selected its policy
    assert chall.economics.source == "policy-update"
    assert chall.economics.set_by_record == update_id

    store = RecordStore(ws / "promotions")
    version = chall.challenger.model_version
    shadow = {
        "challenger_versions": [version],
        "labelled": 1000,
        "profit_difference_usd_per_customer": 0.0,
        "profit_difference_interval": [-0.001, 0.001],
    }
    body = MonitoringBody(decision="ok", champion=chall.champion, monitoring={"challenger": shadow})
    store.append(lambda _h: body_dict(body))
    assert main(["promote-challenger", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "decision: PROMOTED" in out and "contact cost 20 USD" in out
    promoted = _head(ws)
    assert promoted.champion.model_version == version
    assert promoted.economics.values["contact_cost_usd"] == 20.0
    assert promoted.economics.set_by_record == update_id

    assert main(["history", "--config", str(cfg)]) == 0
    table = capsys.readouterr().out
    assert "policy-update" in table and "20/0.25 policy-update" in table


def test_economics_plain_run_keeps_policy_update(updated, capsys) -> None:
    ws, cfg = updated
    capsys.readouterr()
    assert main(["run", "--no-prefect", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "adopted contact_cost_usd=20 (config file has 15)" in out
    rec = _head(ws)
    assert rec.config["economics"]["contact_cost_usd"] == 20.0
    assert rec.economics.source == "policy-update" and rec.economics.changed == []


def test_economics_explicit_override_reverts_and_says_so(updated, capsys) -> None:
    ws, cfg = updated
    capsys.readouterr()
    args = ["run", "--no-prefect", "--config", str(cfg)]
    assert main([*args, "--set", "economics.contact_cost_usd=15"]) == 0
    out = capsys.readouterr().out
    assert "REVERTS contact_cost_usd 20 -> 15 (from an override" in out
    rec = _head(ws)
    assert rec.config["economics"]["contact_cost_usd"] == 15.0
    (change,) = rec.economics.changed
    assert (change.key, change.in_force, change.used) == ("contact_cost_usd", 20.0, 15.0)
    assert rec.economics.source == "override" and change.set_by_record is not None
