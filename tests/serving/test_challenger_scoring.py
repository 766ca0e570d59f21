"""The challenger scored in batch on stored champion decisions (``serving.challenger_scoring``,
``tasks.challenger_scoring``, ``flows.challenger.run_challenger_scoring``): the same evidence
as the shadow sidecar it replaced, idempotent over windows, and the loop from stored decisions
through monitoring to ``promote-challenger``."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from configs.paths import Workspace
from configs.settings import BayesPilotConfig, build_config
from flows.challenger import promote_challenger, run_challenger_scoring
from flows.cli import main as cli_main
from flows.monitoring import ingest_outcomes, run_monitoring
from flows.promotion import run_direct
from serving.challenger_scoring import challenger_decisions
from serving.loader import Champion, load_challenger, load_champion
from serving.predlog import hash_id
from serving.scoring import score_customers
from serving.settings import ServingSettings
from tasks.decision_store import DecisionWriter, read_decisions
from tasks.load_data import load_data
from tasks.monitor import challenger_comparison
from tasks.records import RecordStore
from tasks.select_policy import Policy

from ..conftest import small_layers

START = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
N_REQUESTS = 120


def _layers(ws: Path, **extra: Any) -> dict[str, Any]:
    return small_layers(ws, monitoring={"min_rows": 10}, **extra)


@pytest.fixture(scope="module")
def challenged_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Champion v1, then v2 registered as the challenger."""
    ws = tmp_path_factory.mktemp("challenged") / "ws"
    assert run_direct(build_config(_layers(ws))).outcome.decision == "promoted"
    cfg = build_config(_layers(ws, promotion={"register_as": "challenger"}, candidates={"seed": 8}))
    out = run_direct(cfg).outcome
    assert out.decision == "challenger", out.reasons
    return ws


@pytest.fixture
def ws(challenged_workspace: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ws"
    shutil.copytree(challenged_workspace, dst)
    return dst


def _config(ws: Path) -> BayesPilotConfig:
    return build_config(_layers(ws))


def _loaded(ws: Path) -> tuple[Champion, Champion]:
    settings = ServingSettings.from_config(_config(ws), environ={})
    challenger = load_challenger(settings)
    assert challenger is not None and challenger.model_version == "2"
    return load_champion(settings, pin=False), challenger


def _customers(config: BayesPilotConfig, n: int) -> list[dict[str, Any]]:
    """Validated-request-like customers: raw feature values as JSON would carry them (ints,
    floats, text; some features left out, so the models impute them)."""
    frame = load_data(config).frame.head(n)
    rows = []
    for i, rec in enumerate(frame.to_dict("records")):
        row: dict[str, Any] = {
            str(k): (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()
        }
        row.pop("churned", None)
        row["customer_id"] = f"K{i}"
        if i % 7 == 3:
            row["tenure_months"] = None
        if i % 11 == 5:
            row["contract"] = None
        rows.append(row)
    return rows


def _requests(champ: Champion, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The champion's decisions on ``customers`` as HTTP requests of 1-4 customers (a few
    requests share a millisecond), as sidecar-era log lines: request id, time, inputs,
    probability, action. The actions follow a plain cutoff on the probability (0.25), not
    the policy: the two models rank alike here, so this makes them disagree on some
    customers and the evidence has something to measure."""
    lines: list[dict[str, Any]] = []
    i = req = 0
    rng = np.random.default_rng(3)
    while i < len(customers):
        size = int(rng.integers(1, 5))
        batch = customers[i : i + size]
        scored = score_customers(champ, batch)
        time = START + timedelta(milliseconds=37 * (req - req % 5 // 4))  # some ties
        for j, row in enumerate(batch):
            lines.append(
                {
                    "request_id": f"req-{req:04d}",
                    "time": time.isoformat(timespec="milliseconds"),
                    "model_version": champ.model_version,
                    "policy_id": champ.policy_id,
                    "inputs": row,
                    "inputs_mode": "full",
                    "probability": float(scored.probability[j]),
                    "action": "contact" if scored.probability[j] > 0.25 else "no_contact",
                    "expected_value_usd": float(scored.expected_value[j]),
                }
            )
        i += size
        req += 1
    return lines


def _store_frame(lines: list[dict[str, Any]], source: str = "http") -> pd.DataFrame:
    """The same decisions as decision-store rows (inputs as ``input.<feature>`` columns; the
    id in ``customer_id``)."""
    inputs = pd.DataFrame([x["inputs"] for x in lines]).drop(columns=["customer_id"])
    inputs = inputs.add_prefix("input.")
    fixed = pd.DataFrame(
        {
            "time": pd.to_datetime([x["time"] for x in lines], utc=True),
            "source": source,
            "request_id": [x["request_id"] for x in lines],
            "model_version": [x["model_version"] for x in lines],
            "policy_id": [x["policy_id"] for x in lines],
            "customer_id": [str(x["inputs"]["customer_id"]) for x in lines],
            "probability": [x["probability"] for x in lines],
            "action": [x["action"] for x in lines],
            "expected_value_usd": [x["expected_value_usd"] for x in lines],
            "would_contact": [x["action"] == "contact" for x in lines],
            "holdout": False,
            "experiment_id": None,
            "champion_action": None,
        }
    )
    return pd.concat([fixed, inputs], axis=1)


def _store(ws: Path, frame: pd.DataFrame, source: str = "http") -> None:
    writer = DecisionWriter(
        Workspace(ws).decisions,
        source=source,
        writer_id="test",
        flush_rows=10_000,
        flush_interval_s=60.0,
        file_mode=0o600,
    )
    writer.append(frame)
    writer.close()


def _sidecar_rows(challenger: Champion, lines: list[dict[str, Any]]) -> pd.DataFrame:
    """What the shadow sidecar logged: each request's customers scored with
    ``score_customers`` on the logged inputs, keyed to the champion's line."""
    out = []
    by_request: dict[str, list[dict[str, Any]]] = {}
    for x in lines:
        by_request.setdefault(x["request_id"], []).append(x)
    for group in by_request.values():
        s = score_customers(challenger, [x["inputs"] for x in group])
        for j, x in enumerate(group):
            out.append(
                {
                    **x["inputs"],  # the sidecar logged them; the comparison reads the value
                    "request_id": x["request_id"],
                    "time": x["time"],
                    "model_version": challenger.model_version,
                    "probability": float(s.probability[j]),
                    "action": "contact" if s.contact[j] else "no_contact",
                    "champion_action": x["action"],
                }
            )
    return pd.DataFrame(out)


def _outcomes(lines: list[dict[str, Any]]) -> pd.DataFrame:
    ids = sorted({str(x["inputs"]["customer_id"]) for x in lines})
    return pd.DataFrame(
        {
            "customer_id": ids,
            "churned": [int(int(i[1:]) % 3 == 0) for i in ids],  # as clean_outcomes gives
            "observed_at": "2026-12-06T00:00:00Z",
        }
    )


@pytest.mark.slow
def test_challenger_scoring_evidence_equals_the_sidecars(ws: Path) -> None:
    """The same champion decisions and outcomes: the evidence computed the sidecar's way
    (per logged request, ``score_customers``) and the batch way (stored decisions, scored by
    window, read back from the store) is equal: flip rate, profit difference, interval."""
    config = _config(ws)
    champ, challenger = _loaded(ws)
    lines = _requests(champ, _customers(config, 400))
    _store(ws, _store_frame(lines))
    # rows the sidecar could not re-score either: logged with hashed inputs
    key = b"k" * 32
    hashed = _store_frame(lines[:5])
    hashed["customer_id"] = [hash_id(key, c) for c in hashed["customer_id"]]
    hashed["request_id"] = "req-hashed"
    _store(ws, hashed)

    done = run_challenger_scoring(config)
    assert done is not None
    assert (done.scored, done.unscorable, done.already_scored) == (len(lines), 5, 0)
    stored = read_decisions(Workspace(ws).decisions, sources=["challenger"])
    assert len(stored) == len(lines) and set(stored["model_version"]) == {"2"}

    old = _sidecar_rows(challenger, lines)
    by_key = old.set_index(["request_id", "customer_id"])
    new = stored.set_index(["request_id", "customer_id"]).loc[by_key.index]
    # equal up to the last bit of float arithmetic (vectorised sums group rows by batch size,
    # as the sidecar's own batches of ~400 customers did); the actions are identical
    np.testing.assert_allclose(new["probability"], by_key["probability"], rtol=1e-12, atol=0)
    assert (new["action"] == by_key["action"]).all()
    assert (new["champion_action"] == by_key["champion_action"]).all()

    outcomes = _outcomes(lines)
    policy_champ = Policy.from_json(champ.policy.to_json())
    policy_chall = Policy.from_json(challenger.policy.to_json())

    def evidence(frame: pd.DataFrame) -> dict[str, Any]:
        return challenger_comparison(
            frame,
            outcomes,
            policy_champ,
            policy_chall,
            id_column="customer_id",
            bootstrap=config.bootstrap,
        )

    before = evidence(old)
    # the sidecar's log order and the store's read order differ: neither changes the evidence
    after = evidence(stored.sample(frac=1.0, random_state=5))
    assert before == after
    assert before["shadow_predictions"] == len(lines) and before["labelled"] == 400
    assert 0.0 < before["action_flip_rate"] < 1.0  # the models disagree on some customers
    low, high = before["profit_difference_interval"]
    assert low <= before["profit_difference_usd_per_customer"] <= high


@pytest.mark.slow
def test_challenger_scoring_is_idempotent_over_windows(ws: Path) -> None:
    config = _config(ws)
    champ, _ = _loaded(ws)
    lines = _requests(champ, _customers(config, 60))
    frame = _store_frame(lines)
    _store(ws, frame)
    batch = _store_frame(lines[:10], source="batch").assign(
        request_id="batch-run-1", time=START + timedelta(hours=2)
    )
    _store(ws, batch, source="batch")
    mid = (START + timedelta(milliseconds=37 * 10)).isoformat()

    first = run_challenger_scoring(config, until=mid)
    assert first is not None and 0 < first.scored < len(lines)
    again = run_challenger_scoring(config, until=mid)
    assert again is not None and (again.scored, again.already_scored) == (0, first.scored)
    rest = run_challenger_scoring(config)  # overlaps the first window
    assert rest is not None
    assert rest.already_scored == first.scored
    assert rest.scored == len(lines) + 10 - first.scored  # batch decisions are scored too
    stored = read_decisions(Workspace(ws).decisions, sources=["challenger"])
    keys = list(zip(stored["request_id"], stored["customer_id"], strict=True))
    assert len(keys) == len(set(keys)) == len(lines) + 10
    late = stored[stored["request_id"] == "batch-run-1"]
    assert (late["time"] == START + timedelta(hours=2)).all()  # the champion's time


@pytest.mark.slow
def test_challenger_scoring_leaves_its_input_unchanged_and_names_missing_columns(
    ws: Path,
) -> None:
    champ, challenger = _loaded(ws)
    frame = _store_frame(_requests(champ, _customers(_config(ws), 8)))
    frame = frame.rename(columns=lambda c: c.removeprefix("input."))
    copy = frame.copy()
    out = challenger_decisions(challenger, frame)
    pd.testing.assert_frame_equal(frame, copy)
    assert len(out.decisions) == 8 and out.unscorable == 0
    assert (out.decisions["champion_action"] == frame["action"]).all()
    with pytest.raises(ValueError, match="action"):
        challenger_decisions(challenger, frame.drop(columns=["action"]))


@pytest.mark.slow
def test_challenger_scoring_feeds_monitoring_and_promote_challenger(ws: Path) -> None:
    """Stored champion decisions -> monitoring (scores the challenger, compares) -> outcomes
    -> monitoring again (no double count) -> promote-challenger gates on that evidence."""
    config = _config(ws)
    champ, _ = _loaded(ws)
    lines = _requests(champ, _customers(config, 45))
    _store(ws, _store_frame(lines))
    first = run_monitoring(config, use_prefect=False).record["monitoring"]["challenger"]
    assert first["shadow_predictions"] == 45 and first["scoring"]["scored"] == 45
    assert first["challenger_versions"] == ["2"]
    labels = _outcomes(lines)
    labels["churned"] = labels["churned"].map({1: "yes", 0: "no"})
    ingest_outcomes(labels, ws=Workspace(ws), config=config)
    again = run_monitoring(config, use_prefect=False).record["monitoring"]["challenger"]
    assert again["shadow_predictions"] == 45 and again["scoring"]["scored"] == 0
    assert again["labelled"] == 45 and len(again["profit_difference_interval"]) == 2
    record = promote_challenger(config)
    gate = next(g for g in record["gates"] if g["gate"] == "champion")
    assert gate["metric"] == "shadow profit difference (USD/customer)"
    shadow = gate["evidence"]["shadow"]
    assert {k: v for k, v in shadow.items() if k != "scoring"} == {
        k: v for k, v in again.items() if k != "scoring"
    }
    margin = gate["evidence"]["margin_usd_per_customer"]
    expect = again["profit_difference_interval"][0] > -margin
    assert record["decision"] == ("promoted" if expect else "rejected")
    assert RecordStore(ws / "promotions").verify().ok


@pytest.mark.slow
def test_challenger_score_command_prints_what_it_scored(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    champ, _ = _loaded(ws)
    _store(ws, _store_frame(_requests(champ, _customers(_config(ws), 12))))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths: {{workspace: {ws}}}\n")
    assert cli_main(["challenger-score", "--config", str(cfg)]) == 0
    assert "challenger v2 over [start, now): 12 scored" in capsys.readouterr().out
    assert cli_main(["challenger-score", "--config", str(cfg)]) == 0
    assert "0 scored, 12 already scored" in capsys.readouterr().out


def test_challenger_scoring_compares_with_the_champion_policys_decision() -> None:
    """A randomized-holdout customer's action is no_contact whatever the policy said: the
    challenger is compared with the policy's decision (``would_contact``), as the sidecar
    was; rows stored without it fall back to the action."""
    from serving.challenger_scoring import champion_policy_action

    rows = pd.DataFrame(
        {
            "action": ["no_contact", "contact", "no_contact", "no_contact"],
            "would_contact": pd.array([True, True, False, None], dtype="boolean"),
        }
    )
    assert champion_policy_action(rows).tolist() == [
        "contact",
        "contact",
        "no_contact",
        "no_contact",
    ]
    assert champion_policy_action(rows.drop(columns=["would_contact"])).tolist() == list(
        rows["action"]
    )


@pytest.mark.slow
def test_challenger_scoring_flow_entry_point_scores_the_window(ws: Path, tmp_path: Path) -> None:
    """The function the ``challenger-scoring`` deployment runs (called without Prefect)."""
    from flows.challenger import churn_challenger_scoring

    champ, _ = _loaded(ws)
    _store(ws, _store_frame(_requests(champ, _customers(_config(ws), 10))))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths: {{workspace: {ws}}}\n")
    until = (START + timedelta(hours=1)).isoformat()
    out = churn_challenger_scoring.fn(config_path=str(cfg), since=START.isoformat(), until=until)
    assert out["challenger"].startswith(f"challenger v2 over [{START.isoformat()}, {until}): 10 ")


@pytest.mark.slow
def test_challenger_scoring_on_decisions_the_service_stored(ws: Path) -> None:
    """The real request path: the service stores the champion's decisions (nothing of the
    challenger on the request path), then the batch pass scores every one of them."""
    from fastapi.testclient import TestClient

    from serving.main import create_app

    from .conftest import customer

    config = _config(ws)
    settings = ServingSettings.from_config(config, environ={})
    rows = [customer(customer_id=f"H{i}", tenure_months=i) for i in range(25)]
    with TestClient(create_app(settings, follow=False)) as c:
        r = c.post("/v1/score", json={"customers": rows}, headers={"x-request-id": "req-h"})
        assert r.status_code == 200
        assert {x["model_version"] for x in r.json()["results"]} == {"1"}
    root = Workspace(ws).decisions
    assert set(read_decisions(root, columns=["source"])["source"]) == {"http"}
    done = run_challenger_scoring(config)
    assert done is not None and (done.champion_decisions, done.scored) == (25, 25)
    stored = read_decisions(root, sources=["challenger"])
    assert sorted(stored["customer_id"]) == sorted(f"H{i}" for i in range(25))
    assert set(stored["request_id"]) == {"req-h"} and set(stored["model_version"]) == {"2"}
    champion = read_decisions(root, sources=["http"]).set_index("customer_id")
    mine = stored.set_index("customer_id").loc[champion.index]
    assert (mine["time"] == champion["time"]).all()
    assert (mine["champion_action"] == champion["action"]).all()  # no holdout running
