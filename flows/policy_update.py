"""``churn-policy-update``: re-select the operating policy for the current champion when the
economics change (contact cost, capacity, value), without retraining. The policy gates
(business, threshold, error-cost, segments) decide; a ``policy-update`` record names the same
model and the new policy, and serving picks it up like any new head."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from prefect import flow
from prefect.states import State

from configs.paths import Workspace
from configs.settings import BayesPilotConfig, load_config
from flows import distributed, reports
from flows.promotion import (
    INPUT_ERRORS,
    STAGE_INPUT_ERRORS,
    decision_state,
    prepare_data,
    refused_state,
)
from flows.runner import DirectRunner, PrefectRunner, Runner
from tasks.economics import resolve_for_run
from tasks.gates import GateResult, run_gates
from tasks.outcome_impact import NoEvidence, save_rate_from_outcomes
from tasks.package_model import atomic_write_bytes, file_sha256
from tasks.promote import reconcile_at_start
from tasks.reconcile import run_alive
from tasks.record_models import (
    Calibration,
    DataBlock,
    GateRecord,
    PolicyUpdateBody,
    SaveRateEvidence,
    body_dict,
    parse_record,
    parse_records,
)
from tasks.records import (
    NoChampion,
    RecordStore,
    champion_of,
    git_state,
    load_verified_model,
    load_verified_policy_text,
    now_iso,
)
from tasks.select_policy import Policy, select_policy
from tasks.train_candidates import train_baselines

POLICY_GATES = ("business", "threshold", "segments", "error-cost")
FLOW_NAME = "churn-policy-update"
log = logging.getLogger(__name__)
# what ends the deployment's run in a named failed state instead of a traceback
REFUSALS: tuple[type[Exception], ...] = (*INPUT_ERRORS, NoChampion, NoEvidence)


__all__ = ["NoChampion", "NoEvidence", "policy_update_pipeline", "run_policy_update"]


@dataclass(frozen=True)
class PolicyUpdateResult:
    decision: str
    record: dict[str, Any]
    gates: tuple[GateResult, ...]
    policy: Policy


def policy_update_pipeline(
    config: BayesPilotConfig,
    *,
    runner: Runner,
    from_outcomes: bool = False,
    monitoring_record: str | None = None,
) -> PolicyUpdateResult:
    """Holding a liveness lock on ``models/<run>/`` for the run's life, after reconciling
    what killed runs left (``tasks/reconcile.py``; the report goes to the record's notes).
    ``from_outcomes``: the save rate is the one measured by the randomized holdout (the
    latest monitoring record with impact evidence, or ``monitoring_record`` (an id prefix)),
    made conservative by ``impact.conservative``; ``NoEvidence`` when there is none or too
    little (raised before anything is written)."""
    ws = Workspace.from_setting(config.paths.workspace)
    evidence = None
    if from_outcomes:
        records = parse_records(RecordStore.for_config(config).records())
        evidence = save_rate_from_outcomes(
            records,
            config=config.impact,
            prior_save_rate=config.economics.save_rate,
            record_id=monitoring_record,
        )
        log.info("save rate from outcomes: %s", evidence.reason)
    run_id = runner.flow_run_id or uuid.uuid4().hex
    cleanup = reconcile_at_start(config, ws, own_run=run_id)
    with (
        run_alive(ws.run_models(run_id)),
        distributed.staging_for_run(config, ws.run_staging(run_id)),
    ):
        return _policy_update_run(
            config,
            runner=runner,
            run_id=run_id,
            cleanup=cleanup.notes(),
            save_rate_evidence=evidence,
        )


def _policy_update_run(
    config: BayesPilotConfig,
    *,
    runner: Runner,
    run_id: str,
    cleanup: tuple[str, ...],
    save_rate_evidence: SaveRateEvidence | None = None,
) -> PolicyUpdateResult:
    ws = Workspace.from_setting(config.paths.workspace)
    started = now_iso()
    store = RecordStore.for_config(config)
    head = store.head()
    champ = None if head is None else champion_of(parse_record(head))
    if champ is None:
        raise NoChampion("no champion to re-select a policy for: promote a model first")
    economics = resolve_for_run(
        config,
        parse_records(store.records()),
        policy_update=True,
        measured=None
        if save_rate_evidence is None
        else {"save_rate": save_rate_evidence.save_rate},
        measured_by_record=(
            None if save_rate_evidence is None else save_rate_evidence.monitoring_record
        ),
    )
    log.info("%s", economics.message)
    config = economics.apply(config)
    old = Policy.from_json(load_verified_policy_text(ws.root, champ))
    if old.document.get("kind") == "uplift":  # tasks.uplift: effect x value - cost, no save rate
        raise NoChampion(
            "the champion serves an uplift policy (it decides by the predicted effect, not a "
            "save rate): a new uplift policy comes from `bayespilot challenge-uplift`"
        )
    model = load_verified_model(ws.root, champ)
    loaded, _table, splits, _summary = prepare_data(
        config, runner=runner, reports_dir=ws.run_reports(run_id), staging=ws.run_staging(run_id)
    )
    features = champ.features.columns

    def predict(X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        proba: np.ndarray = model.predict_proba(X[features])[:, 1]
        return proba

    evidence = runner.call(
        "select-policy",
        select_policy,
        predict(splits.X("selection")),
        splits.y("selection"),
        splits.selection,
        economics=config.economics,
        policy=config.policy,
        bootstrap=config.bootstrap,
        calibration_method=old.document["calibration_method"],
        population_rows=splits.table_rows,
    )
    baselines = runner.call("train-baselines", train_baselines, splits, config=config.candidates)
    gates: tuple[GateResult, ...] = runner.call(
        "run-policy-gates",
        run_gates,
        predict,
        baselines,
        splits,
        evidence.policy,
        config=config,
        only=POLICY_GATES,
    )
    new = evidence.policy
    policy_path = ws.run_models(run_id) / "policy.json"
    atomic_write_bytes(policy_path, new.to_json().encode())
    failed = [g for g in gates if not g.passed]

    def build(current_head: dict[str, Any] | None) -> dict[str, Any]:
        current = None if current_head is None else champion_of(parse_record(current_head))
        decision: Literal["policy-updated", "rejected"] = "policy-updated"
        reasons = [f"{g.gate}: {g.reason}" for g in gates]
        if save_rate_evidence is not None:
            reasons.insert(0, f"save rate from outcomes: {save_rate_evidence.reason}")
        if failed:
            decision, reasons = "rejected", [f"{g.gate} failed: {g.reason}" for g in failed]
        elif current != champ:
            decision = "rejected"
            reasons = ["the champion changed while this policy update ran; re-run it"]
        after = current
        if decision == "policy-updated":
            after = champ.model_copy(
                update={
                    "policy_id": new.policy_id,
                    "policy_path": str(policy_path.relative_to(ws.root)),
                    "policy_sha256": file_sha256(policy_path),
                    "updated_by_run": run_id,
                }
            )
        body = PolicyUpdateBody(
            decision=decision,
            reasons=reasons,
            champion=after,
            previous_champion=current,
            run_id=run_id,
            flow_run_id=runner.flow_run_id,
            **git_state(),
            config=config.redacted(),  # no password or token enters the chain
            config_sha256=config.sha256(),
            data=DataBlock(
                source=loaded.source,
                sha256=loaded.sha256,
                split_hashes=splits.hashes,
                split_rows=splits.rows,
            ),
            gates=[GateRecord.model_validate(g.as_dict()) for g in gates],
            policy=new.document,
            policy_id=new.policy_id,
            previous_policy_id=old.policy_id,
            calibration=Calibration(method=old.document["calibration_method"]),
            economics=economics.lineage,
            **({} if save_rate_evidence is None else {"save_rate_evidence": save_rate_evidence}),
            notes=list(cleanup),
            started_at=started,
            finished_at=now_iso(),
        )
        return body_dict(body)

    _, record = store.append(build, timeout_s=config.promotion.lock_timeout_s)
    for g in gates:
        runner.table(f"gate-{g.gate}", reports.gate_rows((g,)), reports.gate_description(g))
    runner.markdown(
        "policy-update-decision",
        reports.decision_markdown(record, {}),
        f"{record['decision'].upper()}: record {record['record_id'][:12]}",
    )
    return PolicyUpdateResult(record["decision"], record, gates, new)


@flow(name=FLOW_NAME, persist_result=False)
def churn_policy_update(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    from_outcomes: bool = False,
    monitoring_record: str | None = None,
) -> dict[str, Any]:
    """Prefect entry point for a policy-only update (``from_outcomes``: with the save rate
    measured by the randomized holdout). Bad config or data ends the run in the failed state
    ``InvalidData``; no champion or no randomized evidence in ``NoChampion`` / ``NoEvidence``
    (no traceback, nothing written)."""
    try:
        config = load_config(config_path, overrides=overrides or [])
        result = policy_update_pipeline(
            config,
            runner=PrefectRunner(input_errors=STAGE_INPUT_ERRORS),
            from_outcomes=from_outcomes,
            monitoring_record=monitoring_record,
        )
    except REFUSALS as exc:
        return refused_state(exc)  # type: ignore[return-value]
    summary = {
        "decision": result.decision,
        "record_id": result.record["record_id"],
        "policy_id": result.policy.policy_id,
    }
    return decision_state(result.record, summary)  # type: ignore[return-value]


def run_policy_update(
    config: BayesPilotConfig,
    *,
    use_prefect: bool,
    from_outcomes: bool = False,
    monitoring_record: str | None = None,
) -> PolicyUpdateResult:
    opts: dict[str, Any] = {"from_outcomes": from_outcomes, "monitoring_record": monitoring_record}
    if not use_prefect:
        return policy_update_pipeline(config, runner=DirectRunner(), **opts)
    holder: dict[str, PolicyUpdateResult] = {}

    @flow(name=FLOW_NAME, persist_result=False)
    def _inner() -> State:
        holder["r"] = policy_update_pipeline(config, runner=PrefectRunner(), **opts)
        return decision_state(holder["r"].record, {"decision": holder["r"].decision})

    _inner()
    return holder["r"]
