"""``churn-monitoring``: drift, skew and realised outcomes of what the champion served, a
``monitoring`` record (never changes the champion), and, on an alert, an optional retrain."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow

from configs.paths import Workspace
from configs.settings import BayesPilotConfig, load_config
from flows.runner import DirectRunner, PrefectRunner, Runner
from tasks.decision_store import read_decisions
from tasks.load_data import load_data
from tasks.monitor import (
    OutcomeReport,
    challenger_comparison,
    drift_rule,
    drift_tests,
    load_reference,
    outcome_id_map,
    outcome_metrics,
    scan_decisions,
    skew,
)
from tasks.outcome_impact import impact_from_dict, measure_impact
from tasks.package_model import atomic_write_bytes
from tasks.record_models import (
    MeasuredImpact,
    MonitoringBody,
    MonitoringRecord,
    Record,
    body_dict,
    parse_record,
    parse_records,
)
from tasks.records import (
    NoChampion,
    RecordStore,
    active_challenger,
    current_champion,
    git_state,
    introducing_record,
    load_verified_policy_text,
    model_record,
    now_iso,
)
from tasks.select_policy import Policy

log = logging.getLogger(__name__)
FLOW_NAME = "churn-monitoring"


@dataclass(frozen=True)
class MonitoringResult:
    decision: str  # "ok" | "alert"
    alerts: list[str]
    record: dict[str, Any]
    retrain_record: dict[str, Any] | None


def read_outcomes(ws: Workspace) -> pd.DataFrame:
    files = sorted(ws.outcomes.glob("*.parquet")) if ws.outcomes.is_dir() else []
    if not files:
        return pd.DataFrame()
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return df.sort_values("observed_at")


def ingest_outcomes(
    frame: pd.DataFrame,
    *,
    ws: Workspace,
    config: BayesPilotConfig,
    contacted_column: str | None = None,
) -> Path:
    """Validate and store outcome labels (one Parquet file per ingest, written atomically).
    Whether each customer was actually contacted is stored too (column ``contacted``) from
    ``contacted_column`` (required when given) or, when the file has it,
    ``monitoring.contacted_column``; a bad value is an error naming the column."""
    from tasks.monitor import clean_outcomes
    from tasks.outcome_impact import clean_contacted

    d = config.data
    clean = clean_outcomes(
        frame,
        id_column=d.effective_id_column,
        label_column=d.label_column,
        positive_label=str(d.positive_label),
        negative_label=None if d.negative_label is None else str(d.negative_label),
    )
    column = contacted_column or config.monitoring.contacted_column
    if contacted_column is not None or column in frame.columns:
        clean = clean.assign(contacted=clean_contacted(frame, column).to_numpy(bool))
    ws.outcomes.mkdir(parents=True, exist_ok=True)
    path = ws.outcomes / f"{now_iso().replace(':', '')}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = path.with_suffix(".tmp")
    clean.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def _plots(out_dir: Path, drift: list[dict[str, Any]], outcomes: OutcomeReport) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    if drift:
        fig, ax = plt.subplots(figsize=(7, 4))
        rows = [r for r in drift if r["ks"] is not None or r["psi"] is not None][:15]
        effect = [r["ks"] if r["ks"] is not None else r["psi"] for r in rows]
        colours = ["tab:red" if r["alert"] else "tab:blue" for r in rows]
        ax.barh([r["feature"] for r in rows][::-1], effect[::-1], color=colours[::-1])
        ax.set(
            xlabel="effect vs training reference (KS statistic or PSI); red: alert",
            title="feature drift (most significant first)",
        )
        path = out_dir / "drift.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        paths.append(str(path))
    if outcomes.calibration:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--")
        ax.plot(
            [c["predicted"] for c in outcomes.calibration],
            [c["observed"] for c in outcomes.calibration],
            marker="o",
        )
        ax.set(xlabel="predicted churn", ylabel="realised churn", title="realised vs predicted")
        path = out_dir / "realised-vs-predicted.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        paths.append(str(path))
    return paths


def id_hasher(ws: Workspace) -> Callable[[str], str] | None:
    """The service's keyed id hash (``serving.predlog.hash_id`` with the workspace log key),
    None when there is no key (nothing was ever logged hashed)."""
    if not ws.log_key.is_file():
        return None
    from serving.predlog import hash_id, log_key

    key = log_key(ws.log_key)
    return lambda v: hash_id(key, v)


def join_labels(labelled: pd.DataFrame, outcomes: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """The latest decision of each labelled customer (``scan_decisions``) joined (inner) with
    their latest outcome; empty when either side is. Shared with ``challenge-uplift``."""
    if outcomes.empty or labelled.empty:
        return pd.DataFrame()
    labels = outcomes.assign(**{id_col: outcomes[id_col].astype(str)})
    labels = labels.drop_duplicates(id_col, keep="last")
    return labelled.merge(labels, on=id_col, how="inner")


def monitoring_pipeline(
    config: BayesPilotConfig, *, runner: Runner, since: str | None = None, until: str | None = None
) -> MonitoringResult:
    ws = Workspace.from_setting(config.paths.workspace)
    run_id = runner.flow_run_id or uuid.uuid4().hex
    store = RecordStore.for_config(config)
    records = parse_records(store.records())
    champ = current_champion(records)
    if champ is None:
        raise NoChampion("no champion to monitor: promote a model first")
    model_rec = model_record(records, champ)
    policy_rec = introducing_record(records, champ)
    reference = load_reference(ws.root, model_rec.reference or {})
    if not reference:
        raise RuntimeError(f"record {model_rec.record_id[:12]} has no training reference")
    policy = Policy.from_json(load_verified_policy_text(ws.root, champ))
    business = next((g for g in policy_rec.gates if g.gate == "business"), None)
    value = business.value if business is not None else None
    expected = None if isinstance(value, str) else value  # USD per customer

    outcomes_df = read_outcomes(ws)
    id_col = config.data.effective_id_column
    scan = scan_decisions(
        ws.decisions,
        reference=reference,
        since=since,
        until=until,
        id_column=id_col,
        outcome_ids=None
        if outcomes_df.empty
        else outcome_id_map(outcomes_df[id_col], id_hasher(ws)),
        extra_columns=[
            *([policy.value_column] if policy.value_column else []),
            *config.data.segment_columns,
        ],
        sample_rows=config.monitoring.window_sample_rows,
        seed=config.monitoring.reference_seed,
    )
    n_logged, n_raw = scan.total, scan.raw_rows
    input_note = (
        ""
        if n_raw == n_logged
        else f"{n_logged - n_raw} of {n_logged} logged predictions keep no raw inputs "
        "(serving.log_inputs hashed/none): input drift and skew are measured on the other "
        f"{n_raw} only"
        + (" - input drift cannot be measured" if not n_raw else "")
        + "; score and contact-rate drift use all"
    )
    if input_note:
        log.warning("monitoring: %s", input_note)
    alerts: list[str] = []
    drift: list[dict[str, Any]] = []
    pred: dict[str, Any] = {}
    skew_report: dict[str, Any] = {}
    if n_logged < config.monitoring.min_rows:
        alerts_note = f"only {n_logged} logged predictions (< {config.monitoring.min_rows})"
    else:
        alerts_note = ""
        tested = drift_tests(
            reference if n_raw else {**reference, "features": {}},
            scan.drift,
            config=config.monitoring,
        )
        drift, pred = tested["features"], tested["prediction"]
        alerts += tested["alerts"]
        try:
            source = load_data(config).frame
            features = champ.features.columns
            id_column = config.data.effective_id_column
            skew_report = (
                skew(scan.sample, source, id_column=id_column, features=features)
                if n_raw
                else {"error": input_note}
            )
        except Exception as exc:  # the source may be gone; skew is then not measurable
            skew_report = {"error": f"{type(exc).__name__}: {exc}"}

    joined = join_labels(scan.labelled, outcomes_df, id_col)
    # ---- the randomized holdout's measured effect (issue 17; tasks/outcome_impact.py)
    impact = _measured_impact(config, policy, scan.experiments, joined, n_raw == n_logged)
    outcome = outcome_metrics(
        joined,
        policy,
        value_column=policy.value_column,
        segment_columns=tuple(config.data.segment_columns),
        expected_profit=expected,
        config=config.monitoring,
        bootstrap=config.bootstrap,
        # realised profit of the programme from the randomized comparison when there is one
        impact=None
        if impact is None or impact.estimate is None
        else impact_from_dict(impact.estimate),
    )
    alerts += [a for a in outcome.alerts if outcome.rows]
    alerts += _impact_alerts(impact, float(policy.document["economics"]["save_rate"]))
    challenger = _challenger_evidence(config, ws, records, outcomes_df, policy, since, until)
    plots = _plots(ws.run_reports(run_id), drift, outcome)
    decision = "alert" if alerts else "ok"
    summary = {
        "since": since,
        "until": until,
        "logged_predictions": n_logged,
        "decisions_read": scan.rows,
        "note": alerts_note,
        "input_privacy": input_note or "all logged predictions keep raw inputs",
        "feature_drift": drift,
        "prediction_drift": pred,
        "drift_rule": drift_rule(config.monitoring),
        "skew": skew_report,
        "outcomes": asdict(outcome),
        "challenger": challenger,
        "plots": plots,
        "impact": None if impact is None else impact.model_dump(mode="json"),
    }
    retrain = config.monitoring.retrain if alerts else "off"

    def build(head: dict[str, Any] | None) -> dict[str, Any]:
        body = MonitoringBody(
            decision=decision,
            reasons=alerts or ["no alert"],
            champion=None if head is None else parse_record(head).champion,
            monitored_model_version=champ.model_version,
            monitored_policy_id=champ.policy_id,
            run_id=run_id,
            flow_run_id=runner.flow_run_id,
            monitoring={k: v for k, v in summary.items() if k != "impact"},
            retrain=retrain,
            **({} if impact is None else {"impact": impact}),
            **git_state(),
            finished_at=now_iso(),
        )
        return body_dict(body)

    _, record = store.append(build, timeout_s=config.promotion.lock_timeout_s)
    typed = parse_record(record)
    assert isinstance(typed, MonitoringRecord)  # what build() wrote
    atomic_write_bytes(
        ws.run_reports(run_id) / "monitoring.json",
        json.dumps(summary, indent=2, default=str).encode(),
    )
    runner.table(
        "monitoring-drift",
        [{k: v for k, v in r.items()} for r in drift[:50]],
        "Feature drift against the champion's training reference",
    )
    runner.table(
        "monitoring-outcomes",
        outcome.segments or [{"rows": outcome.rows}],
        "Realised outcomes by segment",
    )
    if impact is not None:
        runner.table(
            "monitoring-impact", _impact_rows(impact), "Measured impact of the holdout experiment"
        )
    runner.markdown(
        "monitoring-report",
        _markdown(typed, summary, alerts),
        f"{decision}: {len(alerts)} alert(s)",
    )
    retrain_record = _retrain(config, record, alerts, runner) if retrain != "off" else None
    return MonitoringResult(decision, alerts, record, retrain_record)


# ---- measured impact of the randomized holdout (issue 17)
def _measured_impact(
    config: BayesPilotConfig,
    policy: Policy,
    experiments: dict[str, dict[str, Any]],
    joined: pd.DataFrame,
    all_raw: bool,
) -> MeasuredImpact | None:
    """The holdout experiment's effect among customers the policy would contact (None when
    no decision in the window ran under an experiment)."""
    from serving.experiment import HASH_RULE

    s = config.serving
    configured = {s.experiment_id: s.holdout_share} if s.experiment_id else {}
    segments = tuple(config.data.segment_columns) if all_raw else ()

    def values(rows: pd.DataFrame) -> np.ndarray:
        col = policy.value_column
        raw_values = None if col is None else pd.to_numeric(rows[col]).to_numpy(float)
        return np.asarray(policy.values(raw_values, len(rows)), dtype=float)

    return measure_impact(
        experiments,
        joined,
        values_usd=values,
        contact_cost_usd=float(policy.document["economics"]["contact_cost_usd"]),
        configured=configured,
        hash_rule=HASH_RULE,
        impact=config.impact,
        prior_save_rate=float(policy.document["economics"]["save_rate"]),
        min_events=config.monitoring.impact_min_events,
        segment_columns=segments,
    )


def _impact_alerts(impact: MeasuredImpact | None, assumed: float) -> list[str]:
    """A sample-ratio mismatch, and a measured save rate whose interval lies wholly below the
    save rate the served policy assumes."""
    if impact is None:
        return []
    out = []
    e = impact.experiment
    if e.sample_ratio_ok is False:
        out.append(
            f"experiment {e.experiment_id}: sample ratio mismatch ({e.holdout_decisions} of "
            f"{e.decisions} held out vs share {e.holdout_share}, p={e.sample_ratio_p_value})"
        )
    est = impact.estimate or {}
    itt = (est.get("overall") or {}).get("save_rate_itt") or {}
    if impact.sufficient and itt.get("high") is not None and itt["high"] < assumed:
        out.append(
            f"experiment {e.experiment_id}: measured save rate {itt['point']:.3f} (upper bound "
            f"{itt['high']:.3f}) is below the served policy's save rate {assumed}; consider "
            "`bayespilot policy-update --from-outcomes`"
        )
    return out


def _impact_rows(impact: MeasuredImpact) -> list[dict[str, Any]]:
    """One table row per population (all would-contact customers, then segments)."""
    est = impact.estimate or {}
    arms = [est["overall"], *est.get("segments", [])] if est.get("overall") else []

    def interval(d: dict[str, Any] | None) -> str:
        if not d:
            return ""
        lo = "?" if d.get("low") is None else f"{d['low']:.4g}"
        hi = "?" if d.get("high") is None else f"{d['high']:.4g}"
        return f"{d['point']:.4g} [{lo}, {hi}]"

    rows = [
        {
            "population": a["name"],
            "holdout": a["holdout_customers"],
            "assigned": a["assigned_customers"],
            "churn holdout": round(a["holdout_churn_rate"], 4),
            "churn assigned": round(a["assigned_churn_rate"], 4),
            "save rate (ITT)": interval(a["save_rate_itt"]),
            "profit USD/customer": interval(a["incremental_profit_per_customer_usd"]),
            "profit USD total": interval(a["incremental_profit_total_usd"]),
        }
        for a in arms
    ]
    return rows or [{"population": "all", "note": impact.reason}]


def _impact_markdown(impact: MeasuredImpact | None) -> list[str]:
    if impact is None:
        return []
    e = impact.experiment
    lines = [
        "",
        f"## Holdout experiment `{e.experiment_id}`",
        f"- decisions {e.decisions}, held out {e.holdout_decisions} (observed share "
        f"{e.observed_holdout_share}, configured {e.holdout_share}, sample-ratio p "
        f"{e.sample_ratio_p_value})",
        f"- would-contact customers with outcomes: {impact.joined_customers}; evidence "
        f"{'sufficient' if impact.sufficient else 'NOT sufficient'}: {impact.reason}",
    ]
    est = impact.estimate or {}
    if est.get("overall"):
        rows = _impact_rows(impact)
        o = rows[0]
        lines.append(
            f"- realised save rate (ITT, primary) {o['save rate (ITT)']}; incremental profit "
            f"{o['profit USD/customer']} USD per contacted-arm customer, "
            f"{o['profit USD total']} USD in total"
        )
        cace = est.get("cace_save_rate")
        if cace:
            lines.append(f"- save rate among compliers (CACE, secondary): {cace}")
    if impact.conservative_save_rate:
        lines.append(f"- a policy update would use: {impact.conservative_save_rate['reason']}")
    lines += [f"- note: {n}" for n in impact.notes]
    return lines


def _challenger_evidence(
    config: BayesPilotConfig,
    ws: Workspace,
    records: list[Record],
    outcomes: pd.DataFrame,
    policy: Policy,
    since: str | None,
    until: str | None,
) -> dict[str, Any]:
    """The challenger comparison of the window (``tasks.monitor.challenger_comparison``):
    first the active challenger is scored in batch on the window's stored champion decisions
    not scored yet (``monitoring.score_challenger``), then every challenger decision of the
    window is compared with the champion's. A scoring failure (a challenger that fails
    verification, say) is reported in the comparison, not raised: monitoring goes on."""
    from flows.challenger import run_challenger_scoring

    challenger_policy = _challenger_policy(ws, records)
    scoring: dict[str, Any] | None = None
    if challenger_policy is not None and config.monitoring.score_challenger:
        try:
            done = run_challenger_scoring(config, since=since, until=until)
            scoring = None if done is None else asdict(done)
        except Exception as exc:  # e.g. NotReady: the evidence so far is still compared
            log.warning("challenger scoring failed: %s", exc)
            scoring = {"error": f"{type(exc).__name__}: {exc}"}
    decisions = read_decisions(ws.decisions, since=since, until=until, sources=["challenger"])
    id_column = config.data.effective_id_column
    if not decisions.empty and id_column != "customer_id":
        decisions = decisions.rename(columns={"customer_id": id_column})
    comparison = challenger_comparison(
        decisions,
        outcomes,
        policy,
        challenger_policy,
        id_column=id_column,
        bootstrap=config.bootstrap,
    )
    return comparison if scoring is None else {**comparison, "scoring": scoring}


def _challenger_policy(ws: Workspace, records: list[Record]) -> Policy | None:
    """The policy of the active challenger (None if none: a challenger registered before the
    current champion was introduced is retired and not compared)."""
    rec = active_challenger(records)
    if rec is None:
        return None
    return Policy.from_json(load_verified_policy_text(ws.root, rec.challenger))


def _markdown(record: MonitoringRecord, summary: dict[str, Any], alerts: list[str]) -> str:
    o = summary["outcomes"]
    lines = [
        f"# Monitoring: **{record.decision.upper()}**",
        f"- record `{record.record_id[:12]}`, model v{record.monitored_model_version}",
        f"- logged predictions: {summary['logged_predictions']}; outcomes joined: {o['rows']}",
        "",
        "## Alerts",
        *([f"- {a}" for a in alerts] or ["- none"]),
        "",
        "## Drift (10 most significant)",
        f"Rule: {summary.get('drift_rule', '')}",
        f"Inputs: {summary.get('input_privacy', '')}",
        "",
        "| feature | test | KS | PSI | p-value | alert |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in summary["feature_drift"][:10]:
        lines.append(
            f"| {r['feature']} | {r.get('test')} | {r['ks']} | {r['psi']} | "
            f"{r.get('p_value')} | {r['alert']} |"
        )
    if o["rows"]:
        lines += [
            "",
            "## Outcomes",
            f"- precision {o['precision']}, recall {o['recall']}",
            f"- realised profit {o['realised_profit_per_customer_usd']} USD/customer "
            f"(interval {o['profit_interval']}; promoted expectation "
            f"{o['expected_profit_per_customer_usd']})",
            *([f"- profit basis: {o['profit_note']}"] if o.get("profit_note") else []),
            *([f"- calibration: {o['calibration_note']}"] if o.get("calibration_note") else []),
        ]
    lines += _impact_markdown(record.impact)
    return "\n".join(lines)


def retrain_parameters(config: BayesPilotConfig, trigger: dict[str, Any]) -> dict[str, Any]:
    """Flow-run parameters for the promotion deployment a retrain starts. Prefect stores
    parameters in its database and shows them in the UI, so the monitoring run's config goes
    along only when it holds no secret (``BayesPilotConfig.redacted`` masks nothing); a config
    with an inline password or token is not sent, and the deployment runs on its own
    ``config_path``/``overrides``, which must resolve the secret (e.g. from an ``*_env``
    variable)."""
    dumped = config.model_dump(mode="json")
    if config.redacted() == dumped:
        return {"config_json": dumped, "trigger": trigger}
    log.warning(
        "the config holds an inline secret: the retrain runs on the deployment's own config, "
        "and no secret is sent as a flow-run parameter"
    )
    return {"trigger": trigger}


def _retrain(
    config: BayesPilotConfig, record: dict[str, Any], alerts: list[str], runner: Runner
) -> dict[str, Any] | None:
    trigger = {"monitoring_record": record["record_id"], "reason": "; ".join(alerts[:5])}
    if config.monitoring.retrain == "deployment":
        from prefect.deployments import run_deployment

        run: Any = run_deployment(
            config.monitoring.deployment,
            timeout=0,
            parameters=retrain_parameters(config, trigger),
        )
        log.info("started %s: flow run %s", config.monitoring.deployment, run.id)
        return {"deployment_flow_run_id": str(run.id), "trigger": trigger}
    from flows.promotion import promotion_pipeline

    result = promotion_pipeline(config, runner=runner, trigger=trigger)
    return result.outcome.record


@flow(name=FLOW_NAME, persist_result=False)
def churn_monitoring(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """Prefect entry point (deployment ``churn-monitoring/daily``). Bad config or data ends
    the run in the failed state ``InvalidData``, a workspace without a champion in
    ``NoChampion`` (no traceback, nothing written)."""
    from flows.promotion import INPUT_ERRORS, STAGE_INPUT_ERRORS, refused_state

    refusals: tuple[type[Exception], ...] = (*INPUT_ERRORS, NoChampion)
    try:
        config = load_config(config_path, overrides=overrides or [])
        r = monitoring_pipeline(
            config, runner=PrefectRunner(input_errors=STAGE_INPUT_ERRORS), since=since, until=until
        )
    except refusals as exc:
        return refused_state(exc)  # type: ignore[return-value]
    return {"decision": r.decision, "alerts": r.alerts, "record_id": r.record["record_id"]}


def run_monitoring(
    config: BayesPilotConfig,
    *,
    use_prefect: bool,
    since: str | None = None,
    until: str | None = None,
) -> MonitoringResult:
    if not use_prefect:
        return monitoring_pipeline(config, runner=DirectRunner(), since=since, until=until)
    holder: dict[str, MonitoringResult] = {}

    @flow(name=FLOW_NAME, persist_result=False)
    def _inner() -> str:
        holder["r"] = monitoring_pipeline(config, runner=PrefectRunner(), since=since, until=until)
        return holder["r"].decision

    _inner()
    return holder["r"]
