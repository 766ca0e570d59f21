"""Decision history from the record chain: rows for a table, and what changed between two
records, in words (seed 000: revisit why a model was promoted and compare rollout logic)."""

from __future__ import annotations

from typing import Any

KEY_METRICS = {
    "business": "profit_usd_per_customer",
    "calibration": "ece_above_noise",
    "baseline": "pr_auc_gain",
    "segments": "worst_segment_auc",
}


def history_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per record: time, sequence, kind, decision, champion version, key metrics,
    failed gates."""
    rows = []
    for rec in records:
        gates = {g["gate"]: g for g in rec.get("gates") or []}
        champ = rec.get("champion") or {}
        rows.append(
            {
                "sequence": rec.get("sequence"),
                "time": rec.get("finished_at"),
                "kind": rec.get("kind"),
                "decision": rec.get("decision"),
                "record_id": str(rec.get("record_id", ""))[:12],
                "model_version": rec.get("model_version"),
                "champion_version": champ.get("model_version"),
                "candidate": rec.get("candidate"),
                "policy_id": str(champ.get("policy_id") or rec.get("policy_id") or "")[:12],
                **{name: gates[g]["value"] for g, name in KEY_METRICS.items() if g in gates},
                "failed_gates": [g for g, r in gates.items() if not r.get("passed")],
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


def diff_records(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Config, data hashes, gate values and decisions, policy: what changed from ``a`` to
    ``b``, with a summary in words."""
    gates_a = {g["gate"]: g for g in a.get("gates") or []}
    gates_b = {g["gate"]: g for g in b.get("gates") or []}
    gate_changes = []
    for gate in list(dict.fromkeys([*gates_a, *gates_b])):
        ga, gb = gates_a.get(gate, {}), gates_b.get(gate, {})
        if ga.get("passed") != gb.get("passed") or ga.get("value") != gb.get("value"):
            gate_changes.append(
                {
                    "gate": gate,
                    "passed": [ga.get("passed"), gb.get("passed")],
                    "value": [ga.get("value"), gb.get("value")],
                }
            )
    config = _changed(a.get("config"), b.get("config"))
    data = _changed(a.get("data"), b.get("data"))
    policy = _changed(a.get("policy"), b.get("policy"))
    words = []
    if a.get("decision") != b.get("decision"):
        words.append(f"decision went from {a.get('decision')} to {b.get('decision')}")
    ca, cb = a.get("champion") or {}, b.get("champion") or {}
    if ca.get("model_version") != cb.get("model_version"):
        words.append(
            f"champion changed from v{ca.get('model_version')} to v{cb.get('model_version')}"
        )
    if a.get("candidate") and b.get("candidate") and a.get("candidate") != b.get("candidate"):
        words.append(f"chosen candidate changed from {a.get('candidate')} to {b.get('candidate')}")
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
        "a": a.get("record_id"),
        "b": b.get("record_id"),
        "summary": words,
        "config": [{"key": k, "a": va, "b": vb} for k, va, vb in config],
        "data": [{"key": k, "a": va, "b": vb} for k, va, vb in data],
        "policy": [{"key": k, "a": va, "b": vb} for k, va, vb in policy],
        "gates": gate_changes,
    }


def compare_gates(
    recorded: list[dict[str, Any]],
    replayed: list[dict[str, Any]],
    *,
    abs_tolerance: float,
    rel_tolerance: float,
    exclude_values: tuple[str, ...] = ("technical",),
) -> list[dict[str, Any]]:
    """Per gate: do the decision and the value agree (|a - b| <= abs + rel * |a|)? Values of
    gates in ``exclude_values`` (timings) are not compared."""
    by_gate = {g["gate"]: g for g in replayed}
    rows = []
    for rec in recorded:
        rep = by_gate.get(rec["gate"])
        if rep is None:
            rows.append({"gate": rec["gate"], "agrees": False, "reason": "not replayed"})
            continue
        a, b = rec.get("value"), rep.get("value")
        if rec["gate"] in exclude_values:
            value_ok: bool | None = None
        elif isinstance(a, int | float) and isinstance(b, int | float):
            value_ok = abs(a - b) <= abs_tolerance + rel_tolerance * abs(a)
        else:
            value_ok = a == b
        decision_ok = rec.get("passed") == rep.get("passed")
        rows.append(
            {
                "gate": rec["gate"],
                "recorded_passed": rec.get("passed"),
                "replayed_passed": rep.get("passed"),
                "recorded_value": a,
                "replayed_value": b,
                "decision_agrees": decision_ok,
                "value_agrees": value_ok,
                "agrees": decision_ok and value_ok is not False,
            }
        )
    return rows
