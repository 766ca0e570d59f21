"""``bayespilot challenge-uplift``: an uplift challenger from the served champion's randomized
outcomes (issue 17).

Reads the window's served decisions from the decision store (those made under a holdout
experiment, with inputs) joined with their outcomes exactly as monitoring joins them
(``tasks.monitor.scan_decisions``, ``flows.monitoring.join_labels``), runs
``tasks.uplift.challenge_from_outcomes`` against the champion's stored churn probability and
policy, and appends a record:

* the winning learner passed every uplift gate: it is packaged (``model.joblib`` = a plain dict
  of its fitted sklearn pipelines, ``policy.json`` = the champion's policy document with
  ``kind: uplift``), registered in MLflow under ``promotion.model_name`` with alias
  ``challenger`` and recorded as a ``challenger`` record (field ``uplift`` holds the challenge);
* otherwise a ``rejected`` promotion record whose reasons say why; the champion stays.

``promote-challenger`` then decides on the uplift gates' evidence (``flows/challenger.py``)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pandas as pd
from prefect import flow

from configs.paths import Workspace
from configs.settings import BayesPilotConfig, load_config
from flows.monitoring import id_hasher, join_labels, read_outcomes
from serving.uplift import feature_frame
from tasks.gates import GateResult
from tasks.load_data import ColumnRoles
from tasks.monitor import load_reference, outcome_id_map, scan_decisions
from tasks.package_model import atomic_write_bytes, file_sha256, save_artifact
from tasks.record_models import (
    ArtifactRef,
    ChallengerBody,
    ChampionBlock,
    GateRecord,
    PromotionBody,
    body_dict,
    parse_records,
)
from tasks.records import (
    RecordStore,
    current_champion,
    git_state,
    introducing_record,
    load_verified_policy_text,
    model_record,
    now_iso,
)
from tasks.select_policy import Policy
from tasks.uplift import challenge_from_outcomes

log = logging.getLogger(__name__)
FLOW_NAME = "churn-uplift-challenge"


class UpliftChallengeError(RuntimeError):
    """The challenge cannot run (no champion, an uplift champion already, no outcomes)."""


def served_outcomes(
    config: BayesPilotConfig,
    ws: Workspace,
    reference: dict[str, Any],
    columns: list[str],
    since: str | None,
    until: str | None,
) -> pd.DataFrame:
    """The latest served decision in [since, until) of each customer with an outcome, made
    under a holdout experiment, with its stored ``columns`` (features, value), joined with
    the outcome as monitoring joins them (``scan_decisions`` + ``join_labels``)."""
    outcomes = read_outcomes(ws)
    if outcomes.empty:
        return pd.DataFrame()
    id_col = config.data.effective_id_column
    scan = scan_decisions(
        ws.decisions,
        reference=reference,
        since=since,
        until=until,
        id_column=id_col,
        outcome_ids=outcome_id_map(outcomes[id_col], id_hasher(ws)),
        extra_columns=columns,
        sample_rows=config.monitoring.window_sample_rows,
        seed=config.monitoring.reference_seed,
    )
    joined = join_labels(scan.labelled, outcomes, id_col)
    if joined.empty or "experiment_id" not in joined.columns:
        return pd.DataFrame()
    present = [c for c in columns if c in joined.columns]
    inputs = joined[present].notna().any(axis=1) if present else False
    return joined[joined["experiment_id"].notna() & inputs].reset_index(drop=True)


def _register(
    config: BayesPilotConfig, model_dir: Any, *, run_id: str, tags: dict[str, str]
) -> tuple[str, str]:
    """Log the packaged uplift policy to MLflow and register it as a new version of
    ``promotion.model_name``; returns (version, model uri)."""
    import mlflow
    from mlflow import MlflowClient

    uri = config.mlflow_uri()
    name = config.promotion.model_name
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_name=f"uplift-{run_id[:8]}") as run:
        mlflow.log_artifacts(str(model_dir), artifact_path="uplift_policy")
        source = f"{run.info.artifact_uri}/uplift_policy"
        client = MlflowClient(tracking_uri=uri)
        try:
            client.get_registered_model(name)
        except Exception:
            client.create_registered_model(name)
        mv = client.create_model_version(name, source, run_id=run.info.run_id, tags=tags)
    return str(mv.version), f"models:/{name}/{mv.version}"


def run_uplift_challenge(
    config: BayesPilotConfig,
    *,
    since: str | None = None,
    until: str | None = None,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Run the uplift challenge on the window and append its record (returned)."""
    started = now_iso()
    run_id = flow_run_id or uuid.uuid4().hex
    ws = Workspace.from_setting(config.paths.workspace)
    store = RecordStore.for_config(config)
    records = parse_records(store.records())
    champ = current_champion(records)
    if champ is None:
        raise UpliftChallengeError("no champion yet: promote a churn-risk model first")
    model_rec = model_record(records, champ)
    policy_rec = introducing_record(records, champ)
    policy = Policy.from_json(load_verified_policy_text(ws.root, champ))
    if policy.document.get("kind") == "uplift":
        raise UpliftChallengeError("the champion already serves an uplift policy")
    schema = model_rec.table_schema or {}
    numeric = tuple(champ.features.numeric)
    categorical = tuple(champ.features.categorical)
    roles = ColumnRoles(
        id_column=str(schema.get("id_column", config.data.effective_id_column)),
        label_column=str(schema.get("label_column", config.data.label_column)),
        numeric=numeric,
        categorical=categorical,
        ignored=(),
        segment_columns=(),
        value_column=policy.value_column,
    )
    value_cols = [policy.value_column] if policy.value_column else []
    joined = served_outcomes(
        config,
        ws,
        load_reference(ws.root, model_rec.reference or {}),
        list(dict.fromkeys([*numeric, *categorical, *value_cols])),
        since,
        until,
    )
    if joined.empty:
        raise UpliftChallengeError(
            "no served decisions under a holdout experiment have outcomes in the window: "
            "serve with serving.experiment_id and serving.holdout_share set, then ingest "
            "outcomes (bayespilot outcomes)"
        )
    n = len(joined)
    features = feature_frame(
        {c: joined[c] for c in (*numeric, *categorical) if c in joined.columns},
        n,
        numeric=numeric,
        categorical=categorical,
    )
    frame = pd.concat(
        [joined.drop(columns=list(features.columns), errors="ignore"), features], axis=1
    )
    would = frame["would_contact"].astype(bool).to_numpy() if "would_contact" in frame else None
    if would is None:
        raise UpliftChallengeError("the logged decisions carry no would_contact column")
    p_would = frame.loc[would, "probability"].to_numpy(float)
    challenge = challenge_from_outcomes(
        frame,
        roles=roles,
        risk=lambda X: p_would[X.index.to_numpy()],  # noqa: N803 - rows renumbered within would
        policy=policy,
        config=config,
    )
    log.info("uplift challenge: %s", challenge.reason)
    common: dict[str, Any] = dict(
        champion=champ,
        previous_champion=champ,
        run_id=run_id,
        flow_run_id=flow_run_id,
        features=model_rec.features,
        schema=model_rec.table_schema,
        data=model_rec.data,
        reference=model_rec.reference,  # the drift baseline stays the champion's training data
        calibration=model_rec.calibration,
        economics=policy_rec.economics,
        uplift=challenge.as_dict(),
        trigger={"since": since, "until": until, "joined_customers": n},
        started_at=started,
        **git_state(),
    )
    winner = next((c for c in challenge.candidates if c.learner == challenge.winner), None)
    with store.locked(config.promotion.lock_timeout_s):
        if parse_records(store.records())[-1].record_id != records[-1].record_id:
            raise UpliftChallengeError("the record chain moved during the challenge: run again")
        if winner is None or winner.model is None:
            body: PromotionBody | ChallengerBody = PromotionBody(
                decision="rejected",
                reasons=[f"uplift challenge ({challenge.status}): {challenge.reason}"],
                finished_at=now_iso(),
                **common,
            )
            _, record = store.append_locked(lambda _h: body_dict(body))
            return record
        doc = {
            **policy.document,
            "kind": "uplift",
            "uplift": {
                "learner": winner.learner,
                "base_model": winner.model.base_model,
                "rule": "contact iff effect x value - contact_cost_usd > 0 and >= "
                "cutoff_expected_value_usd",
                "fit_rows": winner.model.fit_rows,
            },
        }
        uplift_policy = Policy(doc)
        model_dir = ws.run_models(run_id)
        artifact = model_dir / "model.joblib"
        sha = save_artifact(
            winner.model.artifact(numeric=numeric, categorical=categorical), artifact
        )
        policy_file = model_dir / "policy.json"
        atomic_write_bytes(policy_file, uplift_policy.to_json().encode())
        version, model_uri = _register(
            config,
            model_dir,
            run_id=run_id,
            tags={"policy_id": uplift_policy.policy_id, "artifact_sha256": sha, "run_id": run_id},
        )
        rel = lambda p: str(p.relative_to(ws.root))  # noqa: E731
        block = ChampionBlock(
            model_name=config.promotion.model_name,
            model_version=version,
            model_uri=model_uri,
            artifact_path=rel(artifact),
            artifact_sha256=sha,
            policy_id=uplift_policy.policy_id,
            policy_path=rel(policy_file),
            policy_sha256=file_sha256(policy_file),
            promoted_by_run=run_id,
            features=champ.features,
        )
        chall = ChallengerBody(
            challenger=block,
            reasons=[f"uplift challenger: {challenge.reason}"],
            model_name=block.model_name,
            model_version=version,
            candidate=f"uplift:{winner.learner}",
            gates=[GateRecord.model_validate(g.as_dict()) for g in winner.gates],
            policy=uplift_policy.document,
            policy_id=uplift_policy.policy_id,
            artifact=ArtifactRef(path=block.artifact_path, sha256=sha),
            finished_at=now_iso(),
            **common,
        )
        _, record = store.append_locked(lambda _h: body_dict(chall))
        from tasks.reconcile import MlflowRegistry

        MlflowRegistry(config.mlflow_uri()).set_alias(block.model_name, "challenger", version)
    return record


@flow(name=FLOW_NAME, persist_result=False)
def churn_uplift_challenge(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """Prefect entry point of ``run_uplift_challenge`` (deployment ``uplift-challenge``)."""
    from prefect.runtime import flow_run

    config = load_config(config_path, overrides=overrides or [])
    record = run_uplift_challenge(
        config, since=since, until=until, flow_run_id=str(flow_run.id) if flow_run.id else None
    )
    return {"record_id": record["record_id"], "decision": record["decision"]}


def uplift_champion_gate(record: Any) -> GateResult:
    """The champion gate of an uplift challenger (``promote-challenger``): its own uplift gates,
    judged on randomized outcomes held out from fitting, with the incremental profit over the
    current policy beyond noise (the ``uplift-profit`` gate's interval). The shadow/batch
    comparison is not used: it replays the churn-risk rule under an assumed save rate on
    non-randomized decisions, which cannot measure what a contact changes."""
    gates = {g.gate: g for g in record.gates}
    profit = gates.get("uplift-profit")
    failed = [g.gate for g in record.gates if not g.passed]
    ok = profit is not None and not failed
    evidence = {
        "uplift_record": record.record_id,
        "uplift_gates": [g.gate for g in record.gates],
        "failed": failed,
    }
    if profit is None:
        reason = "the uplift challenger's record has no uplift-profit gate"
    elif failed:
        reason = f"uplift evidence: failed {failed}"
    else:
        reason = (
            f"uplift evidence on randomized held-out outcomes: incremental profit gain "
            f"{profit.value} USD/customer over the current policy, interval {profit.interval} "
            f"above {profit.threshold} (beyond noise), with every other uplift gate passed; the "
            "shadow comparison is not used for an uplift policy (it replays the churn-risk rule "
            "under an assumed save rate and cannot measure what a contact changes)"
        )
    return GateResult(
        gate="champion",
        passed=ok,
        metric="uplift incremental profit gain (USD/customer)",
        value=None if profit is None else profit.value,
        interval=None if profit is None else profit.interval,
        threshold=None if profit is None else profit.threshold,
        evidence=evidence,
        reason=reason,
    )
