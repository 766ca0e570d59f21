"""Which economics a run uses: the config's, or those a policy update put in force.

The rule (README "Decision history and policy-only updates"):

* The economics **in force** are those of the record that set the champion's current policy
  (``in_force_economics``): a promotion, or a policy update of the same model.
* When they came from a policy update (directly, or inherited by a later run that adopted
  them), a run whose config *file* still has a value that update replaced **adopts** the
  in-force value, and says so.
* A value given explicitly for this run (``--set economics.…``, deployment ``overrides``,
  ``BAYESPILOT__ECONOMICS__…``), or a config-file value that differs from both the replaced
  and the in-force one, is **used**; when it differs from the in-force value the run says so:
  which key, from what, to what, and which record had set it.
* A value **measured** from randomized outcomes (``policy-update --from-outcomes``: the save
  rate) is used like an explicit one; the record says it came from outcomes (source
  ``outcomes``) and names the monitoring record that measured it. As for any policy update,
  the config-file value it replaced is recorded, so later runs whose file still has it adopt
  the measured value.

Keys are dotted paths below ``economics`` (``contact_cost_usd``, ``customer_value.multiplier``);
values in the units of ``configs.settings.EconomicsConfig`` (USD, shares). Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from configs.settings import BayesPilotConfig, EconomicsConfig
from tasks.record_models import (
    EconomicsChange,
    EconomicsLineage,
    PolicyUpdateRecord,
    PromotionRecord,
    Record,
    SeatingRecord,
)
from tasks.records import RecordNotFound, current_champion, introducing_record, model_record

Source = Literal["config", "policy-update", "override", "outcomes"]


@dataclass(frozen=True)
class InForceEconomics:
    """The economics of the record that set the champion's current policy (flat, dotted keys)
    and where they came from; ``replaced``: config-file values a policy update replaced."""

    values: dict[str, Any]
    source: Source
    set_by_record: str
    replaced: dict[str, Any]


@dataclass(frozen=True)
class EconomicsResolution:
    """What a run uses (``values``, nested as ``EconomicsConfig``) and its lineage block."""

    values: dict[str, Any]
    lineage: EconomicsLineage

    @property
    def message(self) -> str:
        return self.lineage.message

    def apply(self, config: BayesPilotConfig) -> BayesPilotConfig:
        """``config`` with these economics (everything else, and its provenance, kept)."""
        return config.model_copy(update={"economics": EconomicsConfig.model_validate(self.values)})


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``flatten``."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def _config_economics(records: Sequence[Record], rec: SeatingRecord) -> dict[str, Any] | None:
    """A record's economics from its stored config (records written before lineage blocks;
    a promoted challenger's record names its challenger record, which holds the config)."""
    if rec.config is not None:
        return flatten(rec.config.get("economics") or {})
    if isinstance(rec, PromotionRecord) and rec.challenger_record:
        for other in records:
            if other.record_id == rec.challenger_record and getattr(other, "config", None):
                return flatten(other.config.get("economics") or {})  # type: ignore[union-attr]
    return None


def in_force_economics(records: Sequence[Record]) -> InForceEconomics | None:
    """The economics in force: those of the record that set the champion's current policy
    (None without a champion, or when no record says which economics it used)."""
    champ = current_champion(records)
    if champ is None:
        return None
    try:
        setter = introducing_record(records, champ)
    except RecordNotFound:
        return None
    block = setter.economics
    if block is not None:
        if isinstance(setter, PolicyUpdateRecord) and block.changed:
            source: Source = "policy-update"
            set_by = setter.record_id
        elif block.source == "policy-update":
            source, set_by = "policy-update", block.set_by_record or setter.record_id
        else:
            source, set_by = block.source, setter.record_id
        return InForceEconomics(flatten(block.values), source, set_by, dict(block.replaced))
    values = _config_economics(records, setter)
    if values is None:
        return None
    if not isinstance(setter, PolicyUpdateRecord):
        return InForceEconomics(values, "config", setter.record_id, {})
    try:  # a policy update written before lineage blocks: compare with the model's promotion
        before = _config_economics(records, model_record(records, champ)) or {}
    except RecordNotFound:
        before = {}
    replaced = {k: before[k] for k in values if k in before and before[k] != values[k]}
    return InForceEconomics(values, "policy-update", setter.record_id, replaced)


def _fmt(value: Any) -> str:
    return "null" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def resolve_economics(
    requested: Mapping[str, Any],
    *,
    explicit: frozenset[str],
    in_force: InForceEconomics | None,
    policy_update: bool = False,
    measured: Mapping[str, Any] | None = None,
    measured_by_record: str | None = None,
) -> EconomicsResolution:
    """The economics a run uses, by the module's rule. ``requested``: the run's config
    economics (nested, as ``EconomicsConfig.model_dump(mode="json")``); ``explicit``: the
    dotted keys of it given by the environment or an override rather than the config file;
    ``in_force``: ``in_force_economics(records)``; ``policy_update``: the run is a policy
    update (the values it changes are then recorded as ``replaced`` for later runs);
    ``measured``: dotted keys -> values measured from randomized outcomes (used over the
    config, like explicit ones), by the monitoring record ``measured_by_record``."""
    wanted = flatten(requested)
    measured = dict(measured or {})
    wanted.update(measured)
    explicit = explicit | frozenset(measured)
    if in_force is None:
        source: Source = "outcomes" if measured else "override" if explicit else "config"
        origin = "measured outcomes" if measured else "overrides" if explicit else "config"
        values = unflatten(wanted)
        lineage = EconomicsLineage(
            values=values,
            source=source,
            message=f"economics: from the {origin} ({_summary(wanted)}); none were in force before",
        )
        return EconomicsResolution(values, lineage)

    used: dict[str, Any] = {}
    adopted: list[str] = []
    changes: list[EconomicsChange] = []
    from_pu = in_force.source == "policy-update"
    for key, value in wanted.items():
        current = in_force.values.get(key, value)
        if (
            from_pu
            and key in in_force.replaced
            and key not in explicit
            and value == in_force.replaced[key]
            and current != value
        ):
            used[key] = current
            adopted.append(key)
            continue
        used[key] = value
        if value != current:
            changes.append(
                EconomicsChange(
                    key=key, in_force=current, used=value, set_by_record=in_force.set_by_record
                )
            )
    changed_keys = {c.key for c in changes}
    if changed_keys & set(measured):
        source = "outcomes"
    elif changed_keys & explicit:
        source = "override"
    elif changes:
        source = "config"
    elif adopted or from_pu:
        source = "policy-update"
    else:
        source = in_force.source if in_force.source != "override" else "config"
    replaced = {k: v for k, v in in_force.replaced.items() if k not in changed_keys}
    if policy_update:
        for c in changes:
            replaced.setdefault(c.key, c.in_force)
        replaced = {k: v for k, v in replaced.items() if used.get(k) != v}

    by = in_force.set_by_record[:12]
    parts = []
    if adopted:
        parts.append(
            "adopted "
            + ", ".join(f"{k}={_fmt(used[k])} (config file has {_fmt(wanted[k])})" for k in adopted)
            + f" in force since policy update {by}"
        )
    for c in changes:
        verb = "REVERTS" if in_force.replaced.get(c.key) == c.used else "CHANGES"
        how = (
            f"measured outcomes, monitoring record {(measured_by_record or '?')[:12]}"
            if c.key in measured
            else "an override"
            if c.key in explicit
            else "the config file"
        )
        parts.append(
            f"{verb} {c.key} {_fmt(c.in_force)} -> {_fmt(c.used)} (from {how}; "
            f"the in-force value was set by record {by})"
        )
    if not parts:
        parts.append(f"the economics in force ({in_force.source}, record {by})")
    message = "economics: " + "; ".join(parts) + f" [{_summary(used)}]"
    values = unflatten(used)
    lineage = EconomicsLineage(
        values=values,
        source=source,
        set_by_record=in_force.set_by_record if source == "policy-update" or adopted else None,
        adopted=adopted,
        changed=changes,
        replaced=replaced,
        message=message,
    )
    return EconomicsResolution(values, lineage)


def _summary(flat: Mapping[str, Any]) -> str:
    return (
        f"contact cost {_fmt(flat.get('contact_cost_usd'))} USD, "
        f"save rate {_fmt(flat.get('save_rate'))}"
    )


def resolve_for_run(
    config: BayesPilotConfig,
    records: Sequence[Record],
    *,
    policy_update: bool = False,
    measured: Mapping[str, Any] | None = None,
    measured_by_record: str | None = None,
) -> EconomicsResolution:
    """``resolve_economics`` for a run of ``config`` on a chain of ``records``."""
    return resolve_economics(
        config.economics.model_dump(mode="json"),
        explicit=config.explicit_economics,
        in_force=in_force_economics(records),
        policy_update=policy_update,
        measured=measured,
        measured_by_record=measured_by_record,
    )
