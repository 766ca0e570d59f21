"""Load exactly what the record chain says was promoted, verified before anything is unpickled.

Order of checks (any failure: ``NotReady`` with the reason, never a fallback file):
1. the record chain is intact (hashes, links, sequence) and every record carries a valid
   signature by a trusted public key (unsigned, badly signed or unknown-key records are
   refused); the records used below are the very ones checked (read once);
2. its head names a champion;
3. the record that introduced that champion (model version + policy) passed every gate,
   including a passing fast-scorer exactness check;
4. the MLflow registry alias ``champion`` points at the same model version, or *lags* (names
   the champion before the newest seat-changing record: a run stopped between its record
   and the alias move, ``tasks/reconcile.py``): the chain's champion serves, ready, with a
   note (``alias_note``) the next run clears by moving the alias;
5. the artifact's and the policy's SHA-256 match the signed record: each file is read once
   and only those verified bytes are unpickled or parsed.

Shared by the HTTP service and the batch command.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from serving.fast_scorer import FastScorer, compile_scorer
from serving.settings import ServingSettings
from serving.uplift import UpliftScorer, is_uplift_artifact, is_uplift_policy
from tasks.record_models import (
    ChallengerRecord,
    ChampionBlock,
    PolicyUpdateRecord,
    Record,
    RecordSchemaError,
    SeatingRecord,
    body_dict,
    parse_records,
)
from tasks.records import (
    RecordNotFound,
    RecordStore,
    VerificationError,
    active_challenger,
    introducing_record,
    load_verified_model,
    load_verified_policy_text,
    model_record,
    read_verified,
    resolve_artifact,
)
from tasks.select_policy import Policy

log = logging.getLogger(__name__)


class NotReady(RuntimeError):
    """No verified champion can be served; the message says why."""


@dataclass(frozen=True)
class Champion:
    """A verified, loaded champion: scorer, policy and what the record says about it."""

    head_record_id: str
    head_marker: str
    record: SeatingRecord | ChallengerRecord  # the record that introduced this model
    block: ChampionBlock
    policy: Policy
    scorer: FastScorer
    id_column: str
    value_column: str | None
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)
    id_generated: bool = False  # the training table had no ids: rows were numbered on load
    uplift: UpliftScorer | None = None  # an uplift policy: its learner's models (else None)

    @property
    def model_name(self) -> str:
        return self.block.model_name

    @property
    def model_version(self) -> str:
        return self.block.model_version

    @property
    def policy_id(self) -> str:
        return self.policy.policy_id


def store_for(settings: ServingSettings) -> RecordStore:
    ws = settings.workspace_paths
    return RecordStore(ws.promotions, ws.promotions_lock, keys=settings.keys)


def head_marker(settings: ServingSettings) -> str:
    """A cheap fingerprint of the chain head (file name + mtime); '' when there is none."""
    paths = store_for(settings).paths()
    if not paths:
        return ""
    last: Path = paths[-1]
    return f"{last.name}:{last.stat().st_mtime_ns}:{len(paths)}"


def _check_gates(rec: SeatingRecord | ChallengerRecord, *, fast_scorer: bool = True) -> None:
    # an uplift policy is scored by its sklearn pipelines (``serving.uplift``): no fast scorer
    fast_scorer = fast_scorer and getattr(rec, "uplift", None) is None
    failed = [g.gate for g in rec.gates if not g.passed]
    if not rec.gates or failed:
        raise NotReady(
            f"record {rec.record_id[:12]} did not pass every gate (failed: {failed or 'none run'})"
        )
    if not fast_scorer:
        return
    tech = next((g for g in rec.gates if g.gate == "technical"), None)
    extra = (tech.evidence.get("extra") if tech else None) or {}
    if not (extra.get("fast_scorer") or {}).get("passed"):
        raise NotReady(f"record {rec.record_id[:12]} has no passing fast-scorer exactness check")


def _check_alias(
    settings: ServingSettings, block: ChampionBlock, alias: str = "champion"
) -> str | None:
    """The registry alias against the chain. Returns a note when the champion alias *lags*
    (a run stopped between its record and the alias move, ``tasks/reconcile.py``: the
    chain's champion serves, the next run moves the alias); raises ``NotReady`` for any other
    mismatch (an alias moved by hand) or an unreadable registry."""
    if not settings.check_registry_alias:
        return None
    from tasks.reconcile import SEATED_BY_TAG, MlflowRegistry, alias_state

    name, wanted = block.model_name, block.model_version
    try:
        registry = MlflowRegistry(settings.tracking_uri)
        version = registry.alias_version(name, alias)
    except Exception as exc:
        raise NotReady(f"MLflow alias '{alias}' could not be read: {exc}") from None
    if version == wanted:
        return None
    mismatch = (
        f"MLflow alias '{alias}' points at {'nothing' if version is None else 'v' + version} "
        f"but the record chain says v{wanted}"
    )
    if alias != "champion":
        raise NotReady(mismatch)
    report, records = store_for(settings).verified_records()
    if not report.ok:
        raise NotReady("record chain broken: " + "; ".join(report.problems))
    try:
        seated = registry.version_tag(name, wanted, SEATED_BY_TAG)
    except Exception as exc:
        raise NotReady(f"MLflow version v{wanted} could not be read: {exc}") from None
    state = alias_state(records, version, seated)
    if state.status == "lagging" and state.chain_version == wanted:
        note = state.message(name, alias)
        log.warning("%s", note)
        return note
    raise NotReady(mismatch + " (moved by hand?)")


def _verified_records(settings: ServingSettings) -> list[Record]:
    """The verified chain, typed (parsed once per resolve, at load or reload)."""
    report, records = store_for(settings).verified_records()
    if not report.ok:
        raise NotReady("record chain broken: " + "; ".join(report.problems))
    if not records:
        raise NotReady("no promotion record yet: run `bayespilot run` first")
    try:
        return parse_records(records)
    except RecordSchemaError as exc:
        raise NotReady(str(exc)) from None


@dataclass(frozen=True)
class Resolved:
    """What the chain says should serve in one seat (checks 1-3 done, nothing unpickled)."""

    head: Record
    marker: str
    record: SeatingRecord | ChallengerRecord  # the record that introduced it
    block: ChampionBlock
    alias: str

    def same_model(self, loaded: Champion | None) -> bool:
        """True when ``loaded`` is this very model, policy and introducing record."""
        return (
            loaded is not None
            and loaded.block == self.block
            and loaded.record.record_id == self.record.record_id
        )


_INFO_GATE_FIELDS = {"gate", "passed", "metric", "value", "interval", "threshold", "reason"}


def _info(
    rec: SeatingRecord | ChallengerRecord, block: ChampionBlock, head: Record
) -> dict[str, Any]:
    run = None if isinstance(rec, PolicyUpdateRecord) else rec
    return {
        "record_id": rec.record_id,
        "head_record_id": head.record_id,
        "head_kind": head.kind,
        "decision": rec.decision,
        "reasons": list(rec.reasons),
        "gates": [g.model_dump(mode="json", include=_INFO_GATE_FIELDS) for g in rec.gates],
        "calibration_method": rec.calibration.method if rec.calibration else None,
        "candidate": run.candidate if run else None,
        "data": body_dict(rec.data) if rec.data else None,
        "promoted_at": rec.finished_at,
        "model_name": block.model_name,
        "model_version": block.model_version,
        "features": body_dict(block.features),
        "explanation": (run.explanation if run else None) or {},
    }


def load(settings: ServingSettings, resolved: Resolved, *, pin: bool = True) -> Champion:
    """Alias cross-check, hash checks, then (only then) unpickle and compile."""
    rec, block, head = resolved.record, resolved.block, resolved.head
    alias_note = _check_alias(settings, block, resolved.alias)
    try:
        model = load_verified_model(settings.workspace, block)
        policy = Policy.from_json(load_verified_policy_text(settings.workspace, block))
    except (VerificationError, ValueError) as exc:
        raise NotReady(str(exc)) from None
    if policy.policy_id != block.policy_id:
        raise NotReady("policy document id does not match the record")
    uplift = None
    if is_uplift_artifact(model) != is_uplift_policy(policy.document):
        raise NotReady("the model artifact and the policy document disagree on the policy kind")
    if is_uplift_artifact(model):
        try:
            uplift = UpliftScorer.from_artifact(model)
        except ValueError as exc:
            raise NotReady(str(exc)) from None
        model = uplift.control  # request schema and imputation warnings from its pipeline
    scorer = compile_scorer(model, pin=pin)
    schema = (None if isinstance(rec, PolicyUpdateRecord) else rec.table_schema) or {}
    info = {
        **_info(rec, block, head),
        "policy": policy.document,
        "policy_id": policy.policy_id,
        "alias_note": alias_note,
    }
    log.info(
        "%s %s v%s verified and loaded (record %s)",
        resolved.alias,
        block.model_name,
        block.model_version,
        rec.record_id[:12],
    )
    return Champion(
        head_record_id=head.record_id,
        head_marker=resolved.marker,
        record=rec,
        block=block,
        policy=policy,
        scorer=scorer,
        id_column=str(schema.get("id_column", "customer_id")),
        id_generated=bool(schema.get("id_generated", False)),
        value_column=policy.value_column,
        numeric=tuple(block.features.numeric),
        categorical=tuple(block.features.categorical),
        info=info,
        uplift=uplift,
    )


def follow_head(settings: ServingSettings, loaded: Champion, resolved: Resolved) -> Champion:
    """The loaded model under a new chain head that names the same model (a monitoring
    record, say, or a forced reload): the alias and the artifact's and policy's SHA-256 are
    checked again (a file changed on disk is refused and said so), nothing is unpickled."""
    alias_note = _check_alias(settings, resolved.block, resolved.alias)
    block = resolved.block
    try:
        for rel, sha, what in (
            (block.artifact_path, block.artifact_sha256, "model artifact"),
            (block.policy_path, block.policy_sha256, "policy document"),
        ):
            read_verified(resolve_artifact(settings.workspace, rel), sha, what)
    except VerificationError as exc:
        raise NotReady(f"{exc}; still serving the copy verified at load") from None
    head = resolved.head
    info = {
        **loaded.info,
        "head_record_id": head.record_id,
        "head_kind": head.kind,
        "alias_note": alias_note,
    }
    return replace(loaded, head_record_id=head.record_id, head_marker=resolved.marker, info=info)


def resolve_champion(settings: ServingSettings) -> Resolved:
    """Checks 1-3 for the champion seat; raises ``NotReady`` with the reason."""
    marker = head_marker(settings)
    records = _verified_records(settings)
    head = records[-1]
    block = head.champion
    if block is None:
        raise NotReady("no champion: no candidate has passed every gate yet")
    try:
        rec = introducing_record(records, block)
        if isinstance(rec, PolicyUpdateRecord):
            _check_gates(rec, fast_scorer=False)  # the policy gates of the update
            _check_gates(model_record(records, block))  # every gate of the model itself
        else:
            _check_gates(rec)
    except RecordNotFound as exc:
        raise NotReady(str(exc)) from None
    return Resolved(head, marker, rec, block, "champion")


def resolve_challenger(settings: ServingSettings) -> Resolved | None:
    """The shadow challenger: the latest ``challenger`` record after the current champion was
    introduced (a new champion retires it), gate-checked like the champion. None if none."""
    marker = head_marker(settings)
    records = _verified_records(settings)
    try:
        rec = active_challenger(records)
    except RecordNotFound as exc:
        raise NotReady(str(exc)) from None
    if rec is None:
        return None
    _check_gates(rec)
    return Resolved(records[-1], marker, rec, rec.challenger, "challenger")


def load_champion(settings: ServingSettings, *, pin: bool = True) -> Champion:
    """Verify everything, then load; raises ``NotReady`` with the reason. ``pin``: one
    OpenMP/BLAS thread per scoring thread (serving); batch scoring leaves it off."""
    return load(settings, resolve_champion(settings), pin=pin)


def load_challenger(settings: ServingSettings) -> Champion | None:
    """The verified, loaded shadow challenger, or None when there is none."""
    resolved = resolve_challenger(settings)
    return None if resolved is None else load(settings, resolved)
