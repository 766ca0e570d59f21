"""Typed records: one frozen pydantic model per record kind (pydantic only; serving imports it).

The stored JSON dict stays the source of truth: ``record_id`` and the signature are computed
over it (``tasks/records.py``), never over a model. The models are

* the **builders**: ``PromotionBody(...)`` etc. -> ``body_dict(model)`` -> ``RecordStore.append``
  (the store adds the envelope: ``sequence``, ``previous_record_id``, ``record_id``,
  ``signature``). ``body_dict`` drops fields the builder did not set, so a body carries exactly
  the keys its builder names, as before the models existed;
* the **typed view** of a stored record: ``parse_record(dict) -> Record``, for any kind.

Bodies forbid unknown fields (a misspelt key fails at write time, and an unknown key in a
stored record fails to parse). Descriptive fields have defaults so that every record the
current code writes parses, including the shorter bodies (a promoted challenger's record, a
bare ``monitoring`` marker). A ``challenger`` record is a ``promotion``-kind record with
decision ``challenger``; ``parse_record`` tells them apart by kind and decision.

``python -m tasks.record_models [DIR]`` writes the JSON Schema of each stored record kind to
``docs/record-schema/`` (a test checks the committed files are current).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

SHA256 = r"^[0-9a-f]{64}$"
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "record-schema"


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        protected_namespaces=(),  # fields named model_name / model_version are ours
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


def body_dict(model: BaseModel) -> dict[str, Any]:
    """The JSON dict a model stands for: only the fields that were set (as given or as
    parsed), by their stored names. What ``RecordStore.append`` is given to store."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


# ---------------------------------------------------------------- blocks
class Features(_Frozen):
    """The input columns a model was trained on, by type."""

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class ChampionBlock(_Frozen):
    """A model in a seat (champion, challenger, the one it replaced): registry version,
    artifact and policy with their SHA-256 (paths relative to the workspace)."""

    model_name: str
    model_version: str
    model_uri: str
    artifact_path: str
    artifact_sha256: str
    policy_id: str
    policy_path: str
    policy_sha256: str
    promoted_by_run: str
    features: Features
    updated_by_run: str | None = None  # set by a policy update (same model, new policy)

    @property
    def key(self) -> str:
        """``name@version``: which registered model this is."""
        return f"{self.model_name}@{self.model_version}"


class GateRecord(_Frozen):
    """One gate's result as recorded (``GateResult.as_dict``): ``value``, ``interval`` and
    ``threshold`` are in the unit ``metric`` names; infinities are stored as strings."""

    gate: str
    passed: bool
    metric: str
    value: float | str | None
    interval: list[float | str | None] | None
    threshold: float | str | None
    evidence: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""


class FullTestBlock(_Frozen):
    """The evidence pass over every row of a sampled test split (``tasks.evidence_pass``):
    the chosen calibrated model and policy on the whole split, reduced from per-chunk
    statistics. Evidence only: no gate or decision reads it. Money in USD per customer,
    rates and the ECE as shares (0-1)."""

    rows: int = Field(description="Rows of the whole test split (rows).")
    rows_judged: int = Field(description="Rows of the sample the gates judged (rows).")
    base_rate: float
    mean_probability: float
    contact_rate: float
    profit_per_customer_usd: float
    profit_interval_usd: list[float] = Field(
        description="Normal-approximation interval of the mean realised profit (USD/customer)."
    )
    confidence: float
    ece: float = Field(description="Expected calibration error over the judged sample's bins.")
    calibration_bins: int
    sample_profit_per_customer_usd: float | None = Field(
        description="The business gate's value on the judged sample (USD/customer)."
    )
    sample_inside_interval: bool | None = Field(
        description="Whether the sample's business figure lies inside the full split's "
        "interval (the sample represents the split); None without a business gate value."
    )
    method: str = ""


class TrainSampleCheckBlock(_Frozen):
    """Whether the sampled train split was large enough (``tasks.sample_check``): the chosen
    candidate fitted on the sample (``rows_full``) and on a stratified half of it
    (``rows_half``), both scored raw on the selection split. Log losses in nats per row;
    ``gain_nats`` = mean paired per-row log loss of the half minus the full fit (positive: the
    full sample is better), ``gain_se_nats`` its standard error, ``relative_gain`` the gain as
    a share of ``log_loss_full``. ``climbing``: gain > ``z`` standard errors and
    ``relative_gain`` > ``min_relative_gain``. Evidence only: no gate or decision reads it."""

    candidate: str
    rows_full: int = Field(description="Train rows of the chosen candidate's own fit (rows).")
    rows_half: int = Field(description="Train rows of the half-sample refit (rows).")
    selection_rows: int = Field(description="Selection rows both fits were scored on (rows).")
    log_loss_full: float
    log_loss_half: float
    gain_nats: float
    gain_se_nats: float
    relative_gain: float
    roc_auc_full: float | None
    roc_auc_half: float | None
    z: float = Field(description="Standard errors the gain had to exceed.")
    min_relative_gain: float = Field(description="Share of the log loss the gain had to exceed.")
    climbing: bool
    sentence: str


class SplitPlan(_Frozen):
    """One split's plan (``tasks.split_data.split_plan``): rows available and used, whether it
    was sampled (label-stratified by ``stratified_by``, seeded by ``seed``) and why; on a
    sampled train split, the learning-curve check of the sample (``sample_check``)."""

    rows_available: int = Field(description="Rows of the split before sampling (rows).")
    rows_used: int = Field(description="Rows the split was used with (rows).")
    sampled: bool
    stratified_by: str | None = None
    seed: int | None = None
    reason: str | None = None
    sample_check: TrainSampleCheckBlock | None = Field(
        None,
        description="Train only, when it was sampled and scale.train_sample_check.enabled: "
        "whether the sample was large enough; absent otherwise and on older records.",
    )


class DataBlock(_Frozen):
    """The training table (source, content hash) and its splits (hashes, row counts)."""

    source: str
    sha256: str
    split_hashes: dict[str, str] = Field(default_factory=dict)
    split_rows: dict[str, int] = Field(default_factory=dict)
    plan: dict[str, SplitPlan] | None = Field(
        None,
        description="Per split: rows available and used, whether it was sampled (label-"
        "stratified, seeded) and why (configs.settings.ScaleConfig), and on a sampled train "
        "split whether the sample was large enough; absent on older records.",
    )
    full_test: FullTestBlock | None = Field(
        None,
        description="The whole test split's figures when the test split was sampled "
        "(tasks.evidence_pass); absent otherwise and on older records.",
    )


class ArtifactRef(_Frozen):
    """The run's model artifact (relative path, SHA-256); null on runs that built none."""

    path: str | None = None
    sha256: str | None = None


class Calibration(_Frozen):
    method: str | None = None
    reason: str | None = None
    selection_metrics: dict[str, Any] | None = None


class Signature(_Frozen):
    """The Ed25519 signature block (``tasks/signing.py``)."""

    algorithm: Literal["ed25519"]
    key_id: str
    value: str


class RolledBackFrom(_Frozen):
    model_version: str
    record_id: str  # the record that had introduced the rolled-back champion


class EconomicsChange(_Frozen):
    """One economics key (dotted, below ``economics``) whose value this record uses differs
    from the value in force before it (units as in ``EconomicsConfig``)."""

    key: str
    in_force: Any  # the value in force before this record
    used: Any  # the value this record used
    set_by_record: str | None = None  # the record that had set the in-force value


class EconomicsLineage(_Frozen):
    """Which economics a record used and where they came from (``tasks/economics.py``).

    ``source``: ``config`` (the run's config file), ``policy-update`` (adopted from the
    economics a policy update put in force, directly or inherited by a later run) or
    ``override`` (given for this run: ``--set``, deployment overrides, environment) or
    ``outcomes`` (measured from randomized outcomes: ``policy-update --from-outcomes``).
    ``set_by_record``: the record that set the economics adopted (None: this record or the
    config). ``adopted``: keys taken from the in-force economics instead of the config file.
    ``changed``: keys whose used value differs from the in-force one. ``replaced``: the
    config-file values a policy update replaced (a later run whose file still has them adopts
    the in-force values)."""

    values: dict[str, Any]  # the economics used, as in ``EconomicsConfig``
    source: Literal["config", "policy-update", "override", "outcomes"]
    set_by_record: str | None = None
    adopted: list[str] = Field(default_factory=list)
    changed: list[EconomicsChange] = Field(default_factory=list)
    replaced: dict[str, Any] = Field(default_factory=dict)
    message: str = ""


class ExperimentSummary(_Frozen):
    """A randomized holdout experiment as the decisions in a monitoring window show it
    (``tasks/outcome_impact.py``): counts, the observed holdout share and the sample-ratio
    check (exact binomial test against the configured share; ``None`` when the monitoring
    config does not name this experiment). Shares 0-1, times ISO 8601."""

    experiment_id: str
    holdout_share: float | None = None  # configured share, when known
    hash_rule: str | None = None
    decisions: int = 0
    holdout_decisions: int = 0
    would_contact_decisions: int = 0
    held_back_contacts: int = 0  # holdout customers the policy would have contacted
    observed_holdout_share: float | None = None
    sample_ratio_p_value: float | None = None
    sample_ratio_ok: bool | None = None
    first_decision: str | None = None
    last_decision: str | None = None


class MeasuredImpact(_Frozen):
    """What a monitoring run measured of the holdout experiment: the realised save rate
    (ITT primary, CACE secondary), incremental profit per customer and in total (USD) with
    intervals, per segment with support (``estimate``: ``tasks.impact.ImpactEstimate``), and
    whether the evidence suffices for ``policy-update --from-outcomes`` (``sufficient``,
    ``reason``). ``conservative_save_rate``: what a policy update would use under the
    monitoring config's rule (``impact.conservative``)."""

    experiment: ExperimentSummary
    experiments: list[ExperimentSummary] = Field(default_factory=list)  # all in the window
    joined_customers: int = 0  # would-contact customers of the experiment with outcomes
    contacted_reported: bool = False  # the outcomes said who was actually contacted
    sufficient: bool = False
    reason: str = ""
    estimate: dict[str, Any] | None = None
    conservative_save_rate: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)


class SaveRateEvidence(_Frozen):
    """The measured save rate a policy update used (``policy-update --from-outcomes``): from
    which monitoring record and experiment, the estimate with its interval (shares 0-1), the
    rule that turned it into the value used, and ``details``
    (``tasks.impact.SaveRateEvidence``)."""

    monitoring_record: str
    experiment_id: str
    rule: str  # lower_bound | posterior | point (impact.conservative)
    save_rate: float  # the value used as economics.save_rate
    estimate: float | None = None  # measured ITT save rate
    interval: list[float | None] | None = None
    confidence: float | None = None
    prior_save_rate: float | None = None
    reason: str = ""
    details: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- bodies (what builders write)
class _Body(_Frozen):
    """What every record kind carries. ``kind`` and ``decision`` are always stored, also
    when a builder leaves them at their defaults."""

    reasons: list[str] = Field(default_factory=list)
    champion: ChampionBlock | None = None  # the champion in force after this record
    git_commit: str | None = None
    git_dirty: bool | None = None
    finished_at: str | None = None  # ISO 8601, UTC

    @model_validator(mode="after")
    def _kind_and_decision_are_set(self) -> Self:
        self.__pydantic_fields_set__.update(("kind", "decision"))
        return self


class _RunBody(_Body):
    """Fields of records written by an evaluation run (promotion, challenger)."""

    previous_champion: ChampionBlock | None = None
    run_id: str | None = None
    flow_run_id: str | None = None
    mlflow_run_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    config: dict[str, Any] | None = None
    config_sha256: str | None = None
    data: DataBlock | None = None
    features: Features | None = None
    table_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    candidate: str | None = None
    candidates: dict[str, Any] | None = None
    baselines: dict[str, Any] | None = None
    calibration: Calibration | None = None
    gates: list[GateRecord] = Field(default_factory=list)
    policy: dict[str, Any] | None = None
    policy_id: str | None = None
    artifact: ArtifactRef | None = None
    explanation: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None  # drift baseline for monitoring
    trigger: dict[str, Any] | None = None  # what started the run (e.g. a monitoring alert)
    economics: EconomicsLineage | None = None  # the economics used and where they came from
    notes: list[str] = Field(default_factory=list)
    packages: dict[str, str] | None = None
    started_at: str | None = None
    # an uplift challenge (``bayespilot challenge-uplift``): ``UpliftChallenge.as_dict()``;
    # set on a record whose model is an uplift policy (served by the uplift rule)
    uplift: dict[str, Any] | None = None


class PromotionBody(_RunBody):
    """A promotion decision: every gate passed (``promoted``: ``champion`` is the new model)
    or not (``rejected``: ``champion`` is carried forward). ``challenger_record``: set when
    a shadow challenger was promoted on its shadow evidence."""

    kind: Literal["promotion"] = "promotion"
    decision: Literal["promoted", "rejected"]
    challenger_record: str | None = None


class ChallengerBody(_RunBody):
    """A candidate that passed every gate, registered as the shadow ``challenger`` (a
    ``promotion``-kind record with decision ``challenger``); the champion stays."""

    kind: Literal["promotion"] = "promotion"
    decision: Literal["challenger"] = "challenger"
    challenger: ChampionBlock


class PolicyUpdateBody(_Body):
    """A re-selected operating policy for the same model (``champion`` names the new policy
    when ``policy-updated``)."""

    kind: Literal["policy-update"] = "policy-update"
    decision: Literal["policy-updated", "rejected"]
    previous_champion: ChampionBlock | None = None
    run_id: str | None = None
    flow_run_id: str | None = None
    config: dict[str, Any] | None = None
    config_sha256: str | None = None
    data: DataBlock | None = None
    gates: list[GateRecord] = Field(default_factory=list)
    policy: dict[str, Any] | None = None
    policy_id: str | None = None
    previous_policy_id: str | None = None
    calibration: Calibration | None = None
    economics: EconomicsLineage | None = None  # the economics used and where they came from
    save_rate_evidence: SaveRateEvidence | None = None  # --from-outcomes: what was measured
    started_at: str | None = None
    notes: list[str] = Field(default_factory=list)  # e.g. what the run's reconcile repaired


class RollbackBody(_Body):
    """The champion moved back to the one the rolled-back champion had replaced."""

    kind: Literal["rollback"] = "rollback"
    decision: Literal["rolled-back"] = "rolled-back"
    requested_by: str | None = None
    previous_champion: ChampionBlock | None = None
    rolled_back_from: RolledBackFrom | None = None
    notes: list[str] = Field(default_factory=list)  # e.g. what the run's reconcile repaired


class MonitoringBody(_Body):
    """Drift, skew and realised outcomes of the served champion (never changes it)."""

    kind: Literal["monitoring"] = "monitoring"
    decision: Literal["ok", "alert"]
    monitored_model_version: str | None = None
    monitored_policy_id: str | None = None
    run_id: str | None = None
    flow_run_id: str | None = None
    monitoring: dict[str, Any] | None = None
    retrain: str | None = None  # the retrain mode that followed ("off" when none)
    impact: MeasuredImpact | None = None  # the randomized holdout's measured effect


# ---------------------------------------------------------------- stored records
class _Envelope(_Frozen):
    """What ``RecordStore.append_locked`` adds to every body."""

    sequence: int = Field(ge=1)
    record_id: str = Field(pattern=SHA256)  # SHA-256 of the canonical JSON without it
    previous_record_id: str | None = Field(pattern=SHA256)
    signature: Signature | None = None  # None only on chains written before signing


class PromotionRecord(PromotionBody, _Envelope):
    """A stored record: ``PromotionBody`` plus the envelope ``RecordStore`` adds."""


class ChallengerRecord(ChallengerBody, _Envelope):
    """A stored record: ``ChallengerBody`` plus the envelope ``RecordStore`` adds."""


class PolicyUpdateRecord(PolicyUpdateBody, _Envelope):
    """A stored record: ``PolicyUpdateBody`` plus the envelope ``RecordStore`` adds."""


class RollbackRecord(RollbackBody, _Envelope):
    """A stored record: ``RollbackBody`` plus the envelope ``RecordStore`` adds."""


class MonitoringRecord(MonitoringBody, _Envelope):
    """A stored record: ``MonitoringBody`` plus the envelope ``RecordStore`` adds."""


def _tag(value: Any) -> str | None:
    get = value.get if isinstance(value, dict) else lambda k: getattr(value, k, None)
    kind, decision = get("kind"), get("decision")
    if kind == "promotion" and decision == "challenger":
        return "challenger"
    return kind if isinstance(kind, str) else None


Record = Annotated[
    Annotated[PromotionRecord, Tag("promotion")]
    | Annotated[ChallengerRecord, Tag("challenger")]
    | Annotated[PolicyUpdateRecord, Tag("policy-update")]
    | Annotated[RollbackRecord, Tag("rollback")]
    | Annotated[MonitoringRecord, Tag("monitoring")],
    Discriminator(_tag),
]
# records that put a champion in the seat (``introducing_record`` returns one of these)
SeatingRecord = PromotionRecord | PolicyUpdateRecord
# records of an evaluation run: they carry config, data, gates and a policy
RunRecord = PromotionRecord | ChallengerRecord | PolicyUpdateRecord

RECORD_TYPES: dict[str, type[_Envelope]] = {
    "promotion": PromotionRecord,
    "challenger": ChallengerRecord,
    "policy-update": PolicyUpdateRecord,
    "rollback": RollbackRecord,
    "monitoring": MonitoringRecord,
}
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Record)


class RecordSchemaError(ValueError):
    """A stored record does not match its kind's model; the message says which field."""


def parse_record(data: dict[str, Any]) -> Record:
    """The typed view of a stored record (any kind); ``RecordSchemaError`` if it does not fit."""
    try:
        return _ADAPTER.validate_python(data)  # type: ignore[no-any-return]
    except ValidationError as exc:
        seq = data.get("sequence") if isinstance(data, dict) else None
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RecordSchemaError(
            f"record {seq} ({_tag(data)}) does not match the record schema: "
            f"{where}: {first['msg']} ({exc.error_count()} problem(s))"
        ) from None


def parse_records(data: list[dict[str, Any]]) -> list[Record]:
    return [parse_record(d) for d in data]


# ---------------------------------------------------------------- JSON Schema export
def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema: one per stored record kind, plus ``record.json`` (any)."""
    out = {
        f"{name}.json": model.model_json_schema(mode="validation")
        for name, model in RECORD_TYPES.items()
    }
    out["record.json"] = _ADAPTER.json_schema(mode="validation")
    out["index.json"] = {
        "description": "JSON Schema of each stored promotion record kind (generated by "
        "`python -m tasks.record_models`; do not edit). record.json accepts any kind.",
        "kinds": {
            name: {
                "schema": f"{name}.json",
                "kind": model.model_fields["kind"].default,
                "decisions": list(get_args(model.model_fields["decision"].annotation)),
                "description": " ".join((model.__mro__[1].__doc__ or "").split()),
            }
            for name, model in RECORD_TYPES.items()
        },
    }
    return out


def schema_texts() -> dict[str, str]:
    return {name: json.dumps(s, indent=2, sort_keys=True) + "\n" for name, s in schemas().items()}


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema to ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in schema_texts().items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in export(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(written)
