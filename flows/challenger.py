"""``bayespilot challenger-score`` and ``promote-challenger``: the challenger's evidence and
the gate on it.

Evidence: the active challenger is scored in batch on the champion's stored decisions of a
window (``run_challenger_scoring``; each monitoring run does it first, and the
``churn-challenger-scoring`` flow/command does it alone), off the request path; its
decisions go to the decision store with the champion's action beside them.

Gate: the realised profit difference (challenger - champion, USD per customer) on the same
labelled customers, from the latest monitoring record; its lower bound must exceed -margin.
The challenger's own record supplies every other gate (all passed when it was registered)."""

from __future__ import annotations

import logging
import os
import re
import socket
from typing import Any

import pandas as pd
from prefect import flow
from prefect.states import Completed, Failed, State

from configs.paths import Workspace
from configs.settings import BayesPilotConfig, load_config
from tasks.challenger_scoring import ChallengerScoring, score_window
from tasks.gates import GateResult
from tasks.reconcile import MlflowRegistry, move_champion_alias
from tasks.record_models import (
    ChallengerRecord,
    GateRecord,
    MonitoringRecord,
    PromotionBody,
    SeatingRecord,
    body_dict,
    parse_records,
)
from tasks.records import (
    RecordNotFound,
    RecordStore,
    active_challenger,
    current_champion,
    git_state,
    latest_monitoring,
    now_iso,
)

log = logging.getLogger(__name__)
SCORING_FLOW_NAME = "churn-challenger-scoring"
PROMOTE_FLOW_NAME = "churn-promote-challenger"
NO_CHALLENGER_STATE = "NoChallenger"
NO_ACTIVE_CHALLENGER = "no active challenger"


class ChallengerError(RuntimeError):
    pass


def run_challenger_scoring(
    config: BayesPilotConfig, *, since: str | None = None, until: str | None = None
) -> ChallengerScoring | None:
    """Score the active challenger on the stored champion decisions in [since, until) (ISO
    times; None: open) not scored by it yet, and store its decisions. The challenger is
    resolved and verified exactly as serving does (``serving.loader``). None when there is no
    active challenger; ``serving.loader.NotReady`` when it fails verification."""
    from serving.challenger_scoring import challenger_decisions
    from serving.loader import load, resolve_challenger
    from serving.settings import ServingSettings

    settings = ServingSettings.from_config(config)
    resolved = resolve_challenger(settings)
    if resolved is None:
        log.info("no active challenger: nothing to score")
        return None
    challenger = load(settings, resolved, pin=False)

    def score(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        batch = challenger_decisions(challenger, rows)
        return batch.decisions, batch.unscorable

    ws = Workspace.from_setting(config.paths.workspace)
    d = config.decisions
    return score_window(
        ws.decisions,
        score,
        challenger_version=challenger.model_version,
        writer_id=re.sub(r"[^A-Za-z0-9_.-]", "_", f"{socket.gethostname()}-{os.getpid()}"),
        since=since,
        until=until,
        batch_rows=config.monitoring.challenger_batch_rows,
        flush_rows=d.batch_flush_rows,
        file_mode=int(config.serving.log_file_mode, 8),
        compression=d.compression,
    )


@flow(name=SCORING_FLOW_NAME, persist_result=False)
def churn_challenger_scoring(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """Prefect entry point of ``run_challenger_scoring`` (deployment ``challenger-scoring``)."""
    config = load_config(config_path, overrides=overrides or [])
    result = run_challenger_scoring(config, since=since, until=until)
    return {"challenger": None} if result is None else {"challenger": result.text()}


def stake_of(record: ChallengerRecord | SeatingRecord) -> float | None:
    """The profit at stake per customer (USD) a record's gates judged against (test split)."""
    for gate in record.gates:
        stake = gate.evidence.get("profit_at_stake_per_customer_usd")
        if isinstance(stake, int | float):
            return float(stake)
    return None


def shadow_champion_gate(
    monitoring: MonitoringRecord | None,
    version: str,
    *,
    margin_share: float,
    stake: float | None,
) -> GateResult:
    """Non-inferiority on the shadow run's realised profit difference (challenger - champion,
    USD per customer): its lower bound must exceed -``margin_share`` x ``stake`` (the profit at
    stake per customer the challenger was gated against)."""
    summary = (monitoring.monitoring if monitoring else None) or {}
    comp = summary.get("challenger") or {}
    metric = "shadow profit difference (USD/customer)"
    if stake is None:
        return GateResult(
            gate="champion",
            passed=False,
            metric=metric,
            value=None,
            interval=None,
            threshold=None,
            evidence={"shadow": comp},
            reason="the challenger's record names no profit at stake to size the margin with",
        )
    margin = margin_share * stake
    if version not in comp.get("challenger_versions", []) or not comp.get("labelled"):
        return GateResult(
            gate="champion",
            passed=False,
            metric=metric,
            value=None,
            interval=None,
            threshold=-margin,
            evidence={"shadow": comp},
            reason=f"no labelled shadow evidence for challenger v{version} yet: serve the "
            "champion (its decisions are stored), ingest outcomes and run monitoring first "
            "(it scores the challenger on the stored decisions)",
        )
    low, high = comp["profit_difference_interval"]
    ok = low > -margin
    return GateResult(
        gate="champion",
        passed=ok,
        metric=metric,
        value=comp["profit_difference_usd_per_customer"],
        interval=[low, high],
        threshold=-margin,
        evidence={
            "shadow": comp,
            "monitoring_record": monitoring.record_id if monitoring else None,
            "profit_at_stake_per_customer_usd": stake,
            "margin_usd_per_customer": margin,
        },
        reason=(
            f"shadow evidence: non-inferior (lower bound {low:.4g} > -{margin:.4g})"
            if ok
            else f"shadow evidence: worse than champion (lower bound {low:.4g} <= -{margin:.4g})"
        ),
    )


def promote_challenger(config: BayesPilotConfig) -> dict[str, Any]:
    """Promote the active challenger when its shadow evidence passes the champion gate;
    append the ``promotion`` record either way. Returns the stored record."""
    store = RecordStore.for_config(config)
    with store.locked(config.promotion.lock_timeout_s):
        records = parse_records(store.records())
        current = current_champion(records)
        if current is None:
            raise ChallengerError("no champion yet")
        try:
            chall = active_challenger(records)
        except RecordNotFound as exc:
            raise ChallengerError(str(exc)) from None
        if chall is None:
            raise ChallengerError(NO_ACTIVE_CHALLENGER)
        block = chall.challenger
        if chall.uplift is not None:  # an uplift policy: judged on its randomized evidence
            from flows.uplift_challenge import uplift_champion_gate

            gate = uplift_champion_gate(chall)
        else:
            gate = shadow_champion_gate(
                latest_monitoring(records, after=chall.sequence),
                block.model_version,
                margin_share=config.gates.champion.profit_margin_share,
                stake=stake_of(chall),
            )
        gates = [g for g in chall.gates if g.gate != "champion"]
        gates.append(GateRecord.model_validate(gate.as_dict()))
        promoted = all(g.passed for g in gates)
        body = PromotionBody(
            decision="promoted" if promoted else "rejected",
            reasons=[gate.reason] if promoted else [f"champion failed: {gate.reason}"],
            champion=block if promoted else current,
            previous_champion=current,
            model_name=block.model_name,
            model_version=block.model_version if promoted else None,
            candidate=chall.candidate,
            calibration=chall.calibration,
            table_schema=chall.table_schema,
            features=chall.features,
            data=chall.data,
            reference=chall.reference,
            explanation=chall.explanation,
            policy=chall.policy,
            policy_id=chall.policy_id,
            economics=chall.economics,  # resolved when the challenger ran (same champion)
            gates=gates,
            challenger_record=chall.record_id,
            **({"uplift": chall.uplift} if chall.uplift is not None else {}),
            **git_state(),
            finished_at=now_iso(),
        )
        # the record first (the source of truth), then the aliases: a crash in between
        # leaves an alias that lags the chain, which serving accepts and the next run moves
        _, record = store.append_locked(lambda _h: body_dict(body))
        if promoted:
            registry = MlflowRegistry(config.mlflow_uri())
            move_champion_alias(
                registry, block.model_name, block.model_version, record, stage="challenger"
            )
            registry.delete_alias(block.model_name, "challenger")
    return record


@flow(name=PROMOTE_FLOW_NAME, persist_result=False)
def churn_promote_challenger(
    config_path: str | None = None, overrides: list[str] | None = None
) -> State:
    """Prefect entry point of ``promote_challenger`` (deployment ``promote-challenger``).

    Ends in a Completed state named after the record's decision (``Promoted`` or
    ``Rejected``, the reason in the message); with no active challenger there is nothing to
    decide and no record: Completed, named ``NoChallenger``. Any other refusal (no champion
    yet, a challenger record that cannot be found) ends the run Failed with the reason."""
    from flows.promotion import decision_state

    config = load_config(config_path, overrides=overrides or [])
    try:
        record = promote_challenger(config)
    except ChallengerError as exc:
        if str(exc) == NO_ACTIVE_CHALLENGER:
            return Completed(name=NO_CHALLENGER_STATE, message=str(exc))
        return Failed(message=str(exc))
    summary = {
        "decision": record["decision"],
        "record_id": record["record_id"],
        "sequence": record["sequence"],
        "model_version": record.get("model_version"),
    }
    return decision_state(record, summary)
