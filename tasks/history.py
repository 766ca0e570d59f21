"""Decision history from the record chain: rows for a table, and what changed between two
records, in words (seed 000: revisit why a model was promoted and compare rollout logic)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.economics import flatten, in_force_economics
from tasks.record_models import (
    ChallengerRecord,
    GateRecord,
    PromotionRecord,
    Record,
    RunRecord,
    body_dict,
)

KEY_METRICS = {
    "business": "profit_usd_per_customer",
    "calibration": "ece_above_noise",
    "baseline": "pr_auc_gain",
    "segments": "worst_segment_auc",
}


def _gates(rec: Record) -> dict[str, GateRecord]:
    return {g.gate: g for g in rec.gates} if isinstance(rec, RunRecord) else {}


def economics_row(records: Sequence[Record], index: int) -> dict[str, Any] | None:
    """The economics of record ``index``: those it used (its lineage block), else those in
    force after it (``tasks.economics.in_force_economics``); contact cost in USD, save rate a
    share, the source and the record that set them."""
    rec = records[index]
    block = getattr(rec, "economics", None)
    if block is not None:
        values = flatten(block.values)
        source, by = block.source, block.set_by_record
    else:
        in_force = in_force_economics(records[: index + 1])
        if in_force is None:
            return None
        values, source, by = in_force.values, in_force.source, in_force.set_by_record
    return {
        "contact_cost_usd": values.get("contact_cost_usd"),
        "save_rate": values.get("save_rate"),
        "source": source,
        "set_by_record": (by or "")[:12] or None,
    }


def history_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One row per record: time, sequence, kind, decision, champion version, key metrics,
    failed gates, economics (``economics_row``)."""
    rows = []
    for index, rec in enumerate(records):
        gates = _gates(rec)
        champ = rec.champion
        run = rec if isinstance(rec, PromotionRecord | ChallengerRecord) else None
        policy_id = champ.policy_id if champ else None
        if policy_id is None and isinstance(rec, RunRecord):
            policy_id = rec.policy_id
        rows.append(
            {
                "sequence": rec.sequence,
                "time": rec.finished_at,
                "kind": rec.kind,
                "decision": rec.decision,
                "record_id": rec.record_id[:12],
                "model_version": run.model_version if run else None,
                "champion_version": champ.model_version if champ else None,
                "candidate": run.candidate if run else None,
                "policy_id": (policy_id or "")[:12],
                **{name: gates[g].value for g, name in KEY_METRICS.items() if g in gates},
                "failed_gates": [g for g, r in gates.items() if not r.passed],
                "economics": economics_row(records, index),
            }
        )
    return rows


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _changed(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    fa, fb = _flat(a or {}), _flat(b or {})
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _section(rec: Record, name: str) -> Any:
    """A run record's ``config``, ``data`` or ``policy`` as stored (None for other kinds)."""
    if not isinstance(rec, RunRecord):
        return None
    value = getattr(rec, name)
    return body_dict(value) if hasattr(value, "model_dump") else value


def diff_records(a: Record, b: Record) -> dict[str, Any]:
    """Config, data hashes, gate values and decisions, policy: what changed from ``a`` to
    ``b``, with a summary in words."""
    gates_a, gates_b = _gates(a), _gates(b)
    gate_changes: list[dict[str, Any]] = []
    for gate in list(dict.fromkeys([*gates_a, *gates_b])):
        ga, gb = gates_a.get(gate), gates_b.get(gate)
        passed = [ga.passed if ga else None, gb.passed if gb else None]
        value = [ga.value if ga else None, gb.value if gb else None]
        if passed[0] != passed[1] or value[0] != value[1]:
            gate_changes.append({"gate": gate, "passed": passed, "value": value})
    config = _changed(_section(a, "config"), _section(b, "config"))
    data = _changed(_section(a, "data"), _section(b, "data"))
    policy = _changed(_section(a, "policy"), _section(b, "policy"))
    words = []
    if a.decision != b.decision:
        words.append(f"decision went from {a.decision} to {b.decision}")
    va = a.champion.model_version if a.champion else None
    vb = b.champion.model_version if b.champion else None
    if va != vb:
        words.append(f"champion changed from v{va} to v{vb}")
    cand_a = a.candidate if isinstance(a, PromotionRecord | ChallengerRecord) else None
    cand_b = b.candidate if isinstance(b, PromotionRecord | ChallengerRecord) else None
    if cand_a and cand_b and cand_a != cand_b:
        words.append(f"chosen candidate changed from {cand_a} to {cand_b}")
    if config:
        words.append(
            "config changed: " + ", ".join(f"{k} {va!r} -> {vb!r}" for k, va, vb in config[:8])
        )
    if any(k.startswith("sha256") or k.startswith("split_hashes") for k, _, _ in data):
        words.append("the data changed (different content hashes)")
    if policy:
        words.append(
            "policy changed: " + ", ".join(f"{k} {va!r} -> {vb!r}" for k, va, vb in policy[:6])
        )
    flips = [
        g["gate"]
        for g in gate_changes
        if None not in g["passed"] and g["passed"][0] != g["passed"][1]
    ]
    if flips:
        words.append("gates that flipped: " + ", ".join(flips))
    only_one = [g["gate"] for g in gate_changes if None in g["passed"]]
    if only_one:
        words.append("gates run in only one of the two: " + ", ".join(only_one))
    if not words:
        words.append("no material change")
    return {
        "a": a.record_id,
        "b": b.record_id,
        "summary": words,
        "config": [{"key": k, "a": va, "b": vb} for k, va, vb in config],
        "data": [{"key": k, "a": va, "b": vb} for k, va, vb in data],
        "policy": [{"key": k, "a": va, "b": vb} for k, va, vb in policy],
        "gates": gate_changes,
    }


def compare_gates(
    recorded: Sequence[GateRecord],
    replayed: Sequence[GateRecord],
    *,
    abs_tolerance: float,
    rel_tolerance: float,
    exclude_values: tuple[str, ...] = ("technical",),
) -> list[dict[str, Any]]:
    """Per gate: do the decision and the value agree (|a - b| <= abs + rel * |a|)? Values of
    gates in ``exclude_values`` (timings) are not compared."""
    by_gate = {g.gate: g for g in replayed}
    rows = []
    for rec in recorded:
        rep = by_gate.get(rec.gate)
        if rep is None:
            rows.append({"gate": rec.gate, "agrees": False, "reason": "not replayed"})
            continue
        a, b = rec.value, rep.value
        if rec.gate in exclude_values:
            value_ok: bool | None = None
        elif isinstance(a, int | float) and isinstance(b, int | float):
            value_ok = abs(a - b) <= abs_tolerance + rel_tolerance * abs(a)
        else:
            value_ok = a == b
        decision_ok = rec.passed == rep.passed
        rows.append(
            {
                "gate": rec.gate,
                "recorded_passed": rec.passed,
                "replayed_passed": rep.passed,
                "recorded_value": a,
                "replayed_value": b,
                "decision_agrees": decision_ok,
                "value_agrees": value_ok,
                "agrees": decision_ok and value_ok is not False,
            }
        )
    return rows
