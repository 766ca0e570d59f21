"""Promotion: the decision from the gates, the append-only record that ties run, data, config,
gates, policy and artifact, and the MLflow registry alias move (only when every gate passed).

Crash-consistent order (the record is the source of truth; see ``tasks/reconcile.py``):
register the MLflow version (tagged with the run id) -> append the record (fsynced with its
directory and the signed head marker) -> alias ``previous`` -> alias ``champion`` -> tag the
version ``seated_by_record``. A SIGKILL before the record leaves the old champion in force
(the unrecorded version and model folder are removed by the next run); after the record, the
alias *lags* and is reconciled (served from the chain meanwhile).
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from configs.paths import Workspace
from configs.settings import BayesPilotConfig
from tasks.failpoints import failpoint
from tasks.gates import GATE_IDS, GateResult
from tasks.reconcile import (
    SEATED_BY_TAG,
    MlflowRegistry,
    ReconcileReport,
    alias_state,
    move_champion_alias,
    reconcile_workspace,
)
from tasks.record_models import (
    ArtifactRef,
    ChallengerBody,
    ChampionBlock,
    DataBlock,
    EconomicsLineage,
    Features,
    GateRecord,
    PromotionBody,
    body_dict,
)
from tasks.records import RecordStore, champion_of, git_state, now_iso
from tasks.signing import KeySettings

log = logging.getLogger(__name__)

PACKAGES = ("scikit-learn", "numpy", "pandas", "pandera", "mlflow", "prefect", "joblib", "scipy")


@dataclass(frozen=True)
class RunEvidence:
    """Everything the record states about one promotion run."""

    run_id: str
    flow_run_id: str | None
    mlflow_run_id: str | None
    config: BayesPilotConfig
    data_source: str
    data_sha256: str
    split_hashes: dict[str, str]
    split_rows: dict[str, int]
    features: dict[str, list[str]]
    schema: dict[str, Any]
    candidate: str | None
    calibration: dict[str, Any]
    candidates: dict[str, Any]
    baselines: dict[str, Any]
    gates: tuple[GateResult, ...]
    policy: dict[str, Any] | None
    policy_id: str | None
    policy_path: str | None  # relative to the workspace
    policy_sha256: str | None
    artifact_path: str | None  # relative to the workspace
    artifact_sha256: str | None
    gated_against: dict[str, Any] | None  # champion block the champion gate compared with
    started_at: str
    notes: tuple[str, ...] = ()
    explanation: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)  # drift baseline for monitoring
    trigger: dict[str, Any] | None = None  # what started this run (e.g. a monitoring alert)
    economics: EconomicsLineage | None = None  # the economics used and their source
    data_plan: dict[str, Any] | None = None  # per split: rows available/used, sampled, why
    # the evidence pass over every test row (tasks.evidence_pass), when test was sampled
    full_test: dict[str, Any] | None = None


@dataclass(frozen=True)
class Registration:
    model_name: str
    model_version: str
    model_uri: str


@dataclass(frozen=True)
class PromotionOutcome:
    decision: str  # "promoted" | "rejected"
    reasons: tuple[str, ...]
    record_path: Path
    record: dict[str, Any]
    registration: Registration | None


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def decide(gates: tuple[GateResult, ...]) -> tuple[str, tuple[str, ...]]:
    """Promoted only when every gate ran and passed; the reasons name each failure."""
    by_id = {g.gate: g for g in gates}
    missing = [g for g in GATE_IDS if g not in by_id]
    failed = [g for g in gates if not g.passed]
    if not missing and not failed:
        return "promoted", tuple(f"{g.gate}: {g.reason}" for g in gates)
    reasons = [f"gate {g} did not run" for g in missing]
    reasons += [f"{g.gate} failed: {g.reason}" for g in failed]
    return "rejected", tuple(reasons)


def promote(
    evidence: RunEvidence,
    *,
    workspace: Workspace,
    register: Callable[[], Registration],
    move_aliases: Callable[[Registration, dict[str, Any]], None],
    lock_timeout_s: float = 60.0,
    as_challenger: bool = False,
    set_challenger_alias: Callable[[Registration], None] | None = None,
) -> PromotionOutcome:
    """Decide and append the record; register and move aliases only when promoted.

    Order, holding the record lock: ``register()`` -> append the record -> ``move_aliases(
    registration, record)`` (``previous``, then ``champion``; the record names the replaced
    champion). A kill between the record and the alias leaves a *lagging* alias that serving
    tolerates and the next run moves (``tasks/reconcile.py``).

    Holding the record lock: if the champion changed since the champion gate ran, the run is
    rejected (its comparison is stale) so two runs can never both replace the same champion.
    ``as_challenger``: a candidate that passes every gate is registered with alias
    ``challenger`` (decision ``challenger``) and scored in shadow; the champion stays.
    """
    store = record_store(workspace, evidence.config)
    decision, reasons = decide(evidence.gates)
    registration: Registration | None = None
    # load (or create) the signing key before anything is registered: a missing key must
    # stop the run here, not between the registration and the record
    store.signer()
    with store.locked(lock_timeout_s):
        head = store.head()
        current = champion_of(head)
        if decision == "promoted" and _champion_key(current) != _champion_key(
            evidence.gated_against
        ):
            decision = "rejected"
            reasons = (
                "the champion changed while this run was gating (now "
                f"{_champion_key(current)}); re-run to compare against it",
            )
        if decision == "promoted":
            registration = register()
            failpoint("promote:after-register")
        if decision == "promoted" and as_challenger:
            decision = "challenger"
            reasons = ("passed every gate; registered as challenger for shadow scoring", *reasons)
        previous = None if current is None else ChampionBlock.model_validate(current)
        block = None if registration is None else _seat_block(evidence, registration)
        champion_after = block if decision == "promoted" else previous
        body = _record_body(
            evidence,
            decision,
            reasons,
            registration,
            champion_after,
            previous,
            challenger=block if decision == "challenger" else None,
        )
        path, record = store.append_locked(lambda _head: body_dict(body))
        failpoint("promote:after-record")
        if registration is not None and decision == "promoted":
            move_aliases(registration, record)
            failpoint("promote:after-alias")
        elif registration is not None and set_challenger_alias is not None:
            set_challenger_alias(registration)
    log.info("decision %s recorded in %s", decision, path.name)
    return PromotionOutcome(decision, reasons, path, record, registration)


def reconcile_at_start(
    config: BayesPilotConfig, workspace: Workspace, *, own_run: str | None
) -> ReconcileReport:
    """The start of a run (promotion, policy update): under the record lock, move a lagging
    alias to the chain's champion and remove what killed runs left (``tasks/reconcile.py``).
    A workspace without records or model folders has nothing to reconcile (no lock taken)."""
    if not (
        workspace.promotions.is_dir() or workspace.models.is_dir() or workspace.staging.is_dir()
    ):
        return ReconcileReport(registry_checked=False)
    store = record_store(workspace, config)
    with store.locked(config.promotion.lock_timeout_s):
        return reconcile_workspace(
            store,
            workspace.models,
            tracking_uri=config.mlflow_uri(),
            model_name=config.promotion.model_name,
            own_run=own_run,
            staging_dir=workspace.staging,
        )


def record_store(workspace: Workspace, config: BayesPilotConfig) -> RecordStore:
    """The workspace's record chain, signing and verifying with the config's keys."""
    keys = KeySettings.from_config(config.signing, workspace.root)
    return RecordStore(workspace.promotions, workspace.promotions_lock, keys=keys)


def _champion_key(block: dict[str, Any] | None) -> str | None:
    if not block:
        return None
    return f"{block.get('model_name')}@{block.get('model_version')}"


def _seat_block(ev: RunEvidence, registration: Registration) -> ChampionBlock:
    """The block a registered model takes its seat with (champion or challenger)."""
    if not (ev.artifact_path and ev.artifact_sha256 and ev.policy_id):
        raise ValueError(f"run {ev.run_id} registered a model without an artifact or policy")
    if not (ev.policy_path and ev.policy_sha256):
        raise ValueError(f"run {ev.run_id} registered a model without a policy document")
    return ChampionBlock(
        model_name=registration.model_name,
        model_version=registration.model_version,
        model_uri=registration.model_uri,
        artifact_path=ev.artifact_path,
        artifact_sha256=ev.artifact_sha256,
        policy_id=ev.policy_id,
        policy_path=ev.policy_path,
        policy_sha256=ev.policy_sha256,
        promoted_by_run=ev.run_id,
        features=Features.model_validate(ev.features),
    )


def _record_body(
    ev: RunEvidence,
    decision: str,
    reasons: tuple[str, ...],
    registration: Registration | None,
    champion_after: ChampionBlock | None,
    previous_champion: ChampionBlock | None,
    *,
    challenger: ChampionBlock | None = None,
) -> PromotionBody | ChallengerBody:
    """The record body of a promotion run: decision ``promoted``/``rejected``, or
    ``challenger`` (then ``challenger`` is the registered block)."""
    fields: dict[str, Any] = dict(
        reasons=list(reasons),
        champion=champion_after,
        previous_champion=previous_champion,
        run_id=ev.run_id,
        flow_run_id=ev.flow_run_id,
        mlflow_run_id=ev.mlflow_run_id,
        model_name=registration.model_name if registration else None,
        model_version=registration.model_version if registration else None,
        **git_state(),
        config=ev.config.redacted(),  # no password or token enters the chain
        config_sha256=ev.config.sha256(),
        data=DataBlock(
            source=ev.data_source,
            sha256=ev.data_sha256,
            split_hashes=ev.split_hashes,
            split_rows=ev.split_rows,
            **({"plan": ev.data_plan} if ev.data_plan is not None else {}),
            **({"full_test": ev.full_test} if ev.full_test is not None else {}),
        ),
        features=ev.features,
        schema=ev.schema,
        candidate=ev.candidate,
        candidates=ev.candidates,
        baselines=ev.baselines,
        calibration=ev.calibration,
        gates=[GateRecord.model_validate(g.as_dict()) for g in ev.gates],
        policy=ev.policy,
        policy_id=ev.policy_id,
        artifact=ArtifactRef(path=ev.artifact_path, sha256=ev.artifact_sha256),
        explanation=ev.explanation,
        reference=ev.reference,
        trigger=ev.trigger,
        economics=ev.economics,
        notes=list(ev.notes),
        packages=package_versions(),
        started_at=ev.started_at,
        finished_at=now_iso(),
    )
    if decision == "challenger":
        if challenger is None:
            raise ValueError("a challenger record needs the registered challenger block")
        return ChallengerBody(challenger=challenger, **fields)
    return PromotionBody.model_validate({"decision": decision, **fields})


# ---------------------------------------------------------------- MLflow registry
def mlflow_register(
    estimator: object,
    sample: Any,
    *,
    tracking_uri: str,
    model_name: str,
    parent_run_id: str | None,
    policy_file: Path,
    tags: dict[str, str],
) -> Registration:
    """Log the served (calibrated) pipeline with its policy document to the flow's MLflow run
    and register it as a new version of ``model_name``."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(tracking_uri)
    proba = estimator.predict_proba(sample)  # type: ignore[attr-defined]
    with mlflow.start_run(run_id=parent_run_id) if parent_run_id else mlflow.start_run():
        info = mlflow.sklearn.log_model(
            estimator,
            name="served_model",
            serialization_format="pickle",
            pyfunc_predict_fn="predict_proba",
            signature=infer_signature(sample, proba),
            input_example=sample.head(3),
            pip_requirements=[
                f"{p}=={v}"
                for p, v in package_versions().items()
                if p in ("scikit-learn", "numpy", "pandas", "scipy", "joblib")
            ],
            extra_files=[str(policy_file)],
        )
        mlflow.log_artifact(str(policy_file), artifact_path="policy")
    mv = mlflow.register_model(info.model_uri, model_name, tags=tags)
    return Registration(model_name, str(mv.version), f"models:/{model_name}/{mv.version}")


def mlflow_challenger_alias(tracking_uri: str) -> Callable[[Registration], None]:
    def move(reg: Registration) -> None:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=tracking_uri).set_registered_model_alias(
            reg.model_name, "challenger", reg.model_version
        )

    return move


def mlflow_move_aliases(tracking_uri: str) -> Callable[[Registration, dict[str, Any]], None]:
    """After the record: the replaced champion gets alias ``previous``, then the new version
    alias ``champion`` and tag ``seated_by_record`` = the record id (the move is complete)."""

    def move(reg: Registration, record: dict[str, Any]) -> None:
        move_champion_alias(
            MlflowRegistry(tracking_uri),
            reg.model_name,
            reg.model_version,
            record,
            stage="promote",
        )

    return move


def mlflow_alias_check(
    tracking_uri: str, model_name: str, alias: str = "champion"
) -> Callable[[list[dict[str, Any]]], tuple[str | None, str | None]]:
    """For ``records.audit``: (problem, note) comparing the registry alias with the verified
    chain. An alias that *lags* (a run stopped between its record and the alias move; see
    ``tasks/reconcile.py``) is a note, reconciled by the next run; any other mismatch is a
    problem. An unreachable registry is a note (checked when reachable)."""

    def check(records: list[dict[str, Any]]) -> tuple[str | None, str | None]:
        if not MlflowRegistry.available(tracking_uri):  # never create an empty registry here
            db = tracking_uri.removeprefix("sqlite:///")
            return None, f"MLflow registry {db} not found: alias '{alias}' not checked"
        block = champion_of(records[-1]) if records else None
        name = str(block["model_name"]) if block else model_name
        try:
            registry = MlflowRegistry(tracking_uri)
            version = registry.alias_version(name, alias)
            seated = (
                registry.version_tag(name, str(block["model_version"]), SEATED_BY_TAG)
                if block
                else None
            )
        except Exception as exc:
            return None, f"MLflow registry unreachable ({type(exc).__name__}): alias not checked"
        state = alias_state(records, version, seated)
        if state.status == "in-force":
            return None, None
        if state.status == "lagging":
            return None, state.message(name, alias)
        return state.message(name, alias), None

    return check
