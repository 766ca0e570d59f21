"""The ``bayespilot`` command line.

Exit codes for every command: 0 done (for ``run``: a decision was made, promoted or rejected),
2 bad input (config or data), 3 rejected with ``--fail-on-reject``, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from configs.paths import DEFAULT_CONFIG, Workspace
from configs.settings import BayesPilotConfig, ConfigError, load_config
from tasks.record_models import (
    ChallengerRecord,
    PolicyUpdateRecord,
    PromotionRecord,
    parse_record,
    parse_records,
)

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_REJECTED = 0, 1, 2, 3
# Prefect waits 20 s for its ephemeral API by default; on a busy 2-core machine start-up
# takes longer and the run fails, so wait longer unless the user chose a value.
EPHEMERAL_STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
EPHEMERAL_STARTUP_TIMEOUT_S = "120"

if TYPE_CHECKING:
    from serving.loader import Champion

log = logging.getLogger("bayespilot")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bayespilot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the churn-promotion flow")
    _common(run)
    run.add_argument("--fail-on-reject", action="store_true", help="exit 3 when rejected")
    run.add_argument(
        "--no-prefect",
        action="store_true",
        help="call the stages directly, without Prefect (same functions)",
    )
    run.add_argument(
        "--as-challenger",
        action="store_true",
        help="register a passing candidate as shadow challenger, not champion",
    )
    cfg = sub.add_parser("config", help="print the resolved configuration as JSON")
    _common(cfg)
    verify = sub.add_parser("verify", help="verify the promotion record chain")
    _common(verify)
    verify.add_argument(
        "--sign-unsigned",
        action="store_true",
        help="first sign records written before signing existed (after reviewing them; "
        "needs the promotion key; refused if the chain has any other problem)",
    )
    pol = sub.add_parser(
        "policy-update", help="re-select the champion's operating policy (no retraining)"
    )
    _common(pol)
    pol.add_argument("--fail-on-reject", action="store_true", help="exit 3 when rejected")
    pol.add_argument("--no-prefect", action="store_true", help="call the stages directly")
    pol.add_argument(
        "--from-outcomes",
        action="store_true",
        help="use the save rate measured by the randomized holdout (latest monitoring record "
        "that measured it), made conservative by impact.conservative; refused when there is "
        "no randomized evidence or too little",
    )
    pol.add_argument(
        "--monitoring-record",
        default=None,
        help="with --from-outcomes: the monitoring record (id prefix) whose measurement to use",
    )
    hist = sub.add_parser("history", help="the decision history (one row per record)")
    _common(hist)
    hist.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show = sub.add_parser("show", help="print one record (sequence, id prefix or file name)")
    _common(show)
    show.add_argument("record")
    show.add_argument("--json", action="store_true", help="print the full record as JSON")
    diff = sub.add_parser("diff", help="what changed between two records")
    _common(diff)
    diff.add_argument("a")
    diff.add_argument("b")
    diff.add_argument("--json", action="store_true")
    rep = sub.add_parser("replay", help="retrain from a record and re-run its gates")
    _common(rep)
    rep.add_argument("record")
    rep.add_argument(
        "--tolerance",
        type=float,
        default=1e-6,
        help="absolute (and relative) tolerance on gate values",
    )
    mon = sub.add_parser("monitor", help="drift, skew and realised outcomes of the champion")
    _common(mon)
    mon.add_argument("--since", default=None, help="ISO time: first logged prediction to use")
    mon.add_argument("--until", default=None, help="ISO time: end of the window (exclusive)")
    mon.add_argument("--no-prefect", action="store_true", help="call the stages directly")
    pc = sub.add_parser(
        "promote-challenger",
        help="promote the shadow challenger through the champion gate on its shadow evidence",
    )
    _common(pc)
    cs = sub.add_parser(
        "challenger-score",
        help="score the active challenger in batch on the stored champion decisions of a "
        "window (what monitoring does first; the evidence promote-challenger uses)",
    )
    _common(cs)
    cs.add_argument("--since", default=None, help="ISO time: first stored decision to score")
    cs.add_argument("--until", default=None, help="ISO time: end of the window (exclusive)")
    cu = sub.add_parser(
        "challenge-uplift",
        help="fit uplift learners on the served champion's randomized outcomes; a winner that "
        "passes every uplift gate is registered as challenger, else a rejected record says why",
    )
    _common(cu)
    cu.add_argument("--since", default=None, help="ISO time: first logged decision to use")
    cu.add_argument("--until", default=None, help="ISO time: end of the window (exclusive)")
    outc = sub.add_parser("outcomes", help="ingest outcome labels that arrived later")
    _common(outc)
    outc.add_argument(
        "--input",
        required=True,
        type=Path,
        help="CSV or Parquet with the id column, the label column, observed_at and, for the "
        "holdout experiment, whether each customer was actually contacted",
    )
    outc.add_argument(
        "--contacted-column",
        default=None,
        help="column saying whether each customer was actually contacted (true/false, 1/0, "
        "yes/no); required when given (default: monitoring.contacted_column, used when the "
        "file has it)",
    )
    serve = sub.add_parser("serve", help="serve the verified champion over HTTP (uvicorn)")
    _common(serve)
    serve.add_argument("--host", default=None, help="bind address (default: serving.host)")
    serve.add_argument("--port", type=int, default=None, help="port (default: serving.port)")
    serve.add_argument("--workers", type=int, default=None, help="worker processes")
    score = sub.add_parser("score", help="batch-score a CSV or Parquet file with the champion")
    _common(score)
    score.add_argument("--input", required=True, type=Path, help="CSV or Parquet to score")
    score.add_argument("--output", required=True, type=Path, help="CSV or Parquet to write")
    score.add_argument(
        "--rejects",
        type=Path,
        default=None,
        help="where rows that fail validation go (default: OUTPUT.rejects.EXT; with the dask "
        "engine a directory, OUTPUT.rejects)",
    )
    score.add_argument(
        "--engine",
        choices=("local", "dask"),
        default=None,
        help="local: this process, serving.batch_threads threads; dask: the row groups of a "
        "Parquet input are scored on a Dask cluster's workers and OUTPUT is a Parquet dataset "
        "directory of parts (default: dask when scaleout.engine is dask, else local)",
    )
    score.add_argument(
        "--dask-address",
        default=None,
        help="scheduler of an existing cluster (default: scaleout.dask_address; none starts "
        "a LocalCluster of scaleout.dask_workers workers for the run)",
    )
    return parser


def _setup_env(config: BayesPilotConfig, *, use_prefect: bool = False) -> Workspace:
    """Workspace-local state for Prefect (unless the user points elsewhere) and quiet
    telemetry; must run before Prefect is imported. ``use_prefect``: start the embedded
    Prefect API server as a child that dies with this process (``flows/prefect_api.py``:
    Prefect's own ephemeral server outlives a SIGKILL) and point PREFECT_API_URL at it."""
    ws = Workspace.from_setting(config.paths.workspace)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault(EPHEMERAL_STARTUP_TIMEOUT_ENV, EPHEMERAL_STARTUP_TIMEOUT_S)
    if config.backends.prefect_database_url and "PREFECT_API_URL" not in os.environ:
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = config.backends.prefect_database_url
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        os.environ["PREFECT_HOME"] = str(ws.prefect_home)
    ws.root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks,flows")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if use_prefect:
        from flows.prefect_api import ensure_prefect_api

        ensure_prefect_api(config.backends.prefect_startup_timeout_s)
    return ws


def _check_input(config: BayesPilotConfig) -> int:
    """Load and validate the data (no Prefect, no record): exit 2 with one report when it is
    bad, 0 when the run may start."""
    from tasks.load_data import DataError
    from tasks.validate_data import check_input

    try:
        report = check_input(config)
    except DataError as exc:
        print(f"bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not report.passed:
        print(report.summary(), file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_run(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    if args.as_challenger:
        config = config.model_copy(
            update={"promotion": config.promotion.model_copy(update={"register_as": "challenger"})}
        )
    if not args.no_prefect:
        _setup_env(config)
        from flows.distributed import uses_partitions

        # bad input is refused before the Prefect API starts; the Dask engine's table is
        # only ever read on the cluster, by the flow's own validation stage
        code = EXIT_OK if uses_partitions(config) else _check_input(config)
        if code != EXIT_OK:
            return code
    _setup_env(config, use_prefect=not args.no_prefect)
    from flows.promotion import NoCandidate, ValidationFailed, run_direct, run_prefect
    from flows.reports import console, gate_table
    from tasks.check_schema import FeatureSchemaMismatch
    from tasks.load_data import DataError

    try:
        result = run_direct(config) if args.no_prefect else run_prefect(config)
    except ValidationFailed as exc:
        print(exc.report.summary(), file=sys.stderr)
        print(f"full report: {exc.report_path}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (DataError, FeatureSchemaMismatch) as exc:
        print(f"bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NoCandidate as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    rec = parse_record(result.outcome.record)
    assert isinstance(rec, PromotionRecord | ChallengerRecord)  # what a promotion run writes
    print(result.data_summary)
    print()
    console().print(gate_table(result.gates))
    method = rec.calibration.method if rec.calibration else None
    print(
        f"decision: {rec.decision.upper()}  (record {rec.sequence:06d} "
        f"{rec.record_id[:12]}, candidate {rec.candidate}, "
        f"calibration {method}, policy {(rec.policy_id or '-')[:12]})"
    )
    for reason in result.outcome.reasons if rec.decision == "rejected" else ():
        print(f"  - {reason}")
    champ = rec.champion
    print(f"champion: {champ.model_name} v{champ.model_version}" if champ else "champion: none")
    if rec.economics is not None:
        print(rec.economics.message)
    if rec.decision == "rejected" and args.fail_on_reject:
        return EXIT_REJECTED
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    """Chain (hashes, links, sequence), every signature, every file a record names, and the
    MLflow alias against the head; exit 1 listing every problem."""
    from tasks.promote import mlflow_alias_check
    from tasks.records import RecordStore, audit

    ws = Workspace.from_setting(config.paths.workspace)
    if getattr(args, "sign_unsigned", False):
        from tasks.records import ChainError
        from tasks.signing import SigningError

        try:
            signed = RecordStore.for_config(config).sign_unsigned()
        except (ChainError, SigningError) as exc:
            print(f"not signed: {exc}", file=sys.stderr)
            return EXIT_ERROR
        print(f"signed {signed} record(s) written before signing")
    report = audit(
        RecordStore.for_config(config),
        ws.root,
        alias_check=mlflow_alias_check(config.mlflow_uri(), config.promotion.model_name),
    )
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print(
            f"chain intact and signed: {report.chain.records} record(s), head "
            f"{(report.chain.head_id or '-')[:12]}; {report.files_checked} file(s) match"
        )
        return EXIT_OK
    print(f"verification FAILED ({len(report.problems)} problem(s)):", file=sys.stderr)
    for p in report.problems:
        print(f"  - {p}", file=sys.stderr)
    return EXIT_ERROR


def _store(config: BayesPilotConfig):  # type: ignore[no-untyped-def]
    from tasks.records import RecordStore

    return RecordStore.for_config(config)


def cmd_history(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    from flows.reports import console, history_table
    from tasks.history import history_rows

    rows = history_rows(parse_records(_store(config).records()))
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_OK
    if not rows:
        print("no records yet")
        return EXIT_OK
    console().print(history_table(rows))
    return EXIT_OK


def cmd_show(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    try:
        rec = _store(config).find(args.record)
    except KeyError as exc:
        print(f"bad input: {exc.args[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(rec, indent=2))
        return EXIT_OK
    from flows.reports import console, record_summary

    out = console()
    for part in record_summary(rec):
        out.print(part)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    from tasks.history import diff_records

    store = _store(config)
    try:
        a, b = parse_record(store.find(args.a)), parse_record(store.find(args.b))
    except KeyError as exc:
        print(f"bad input: {exc.args[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    d = diff_records(a, b)
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return EXIT_OK
    print(f"{a.sequence:06d} {a.record_id[:12]} -> {b.sequence:06d} {b.record_id[:12]}")
    for line in d["summary"]:
        print(f"  - {line}")
    for g in d["gates"]:
        print(
            f"  gate {g['gate']:<12} passed {g['passed'][0]} -> {g['passed'][1]}, "
            f"value {g['value'][0]} -> {g['value'][1]}"
        )
    return EXIT_OK


def cmd_replay(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    _setup_env(config)
    from flows.promotion import DataMismatch, ValidationFailed
    from flows.replay import replay

    try:
        rec = parse_record(_store(config).find(args.record))
    except KeyError as exc:
        print(f"bad input: {exc.args[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    ws = Workspace.from_setting(config.paths.workspace)
    try:
        report = replay(
            rec, workspace=ws, abs_tolerance=args.tolerance, rel_tolerance=args.tolerance
        )
    except (DataMismatch, ValidationFailed, ValueError) as exc:
        print(f"cannot replay: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"replay of record {rec.sequence:06d} {rec.record_id[:12]} "
        f"(tolerance {args.tolerance:g}; latency values excluded)"
    )
    for r in report.rows:
        value = (
            "excluded"
            if r.get("value_agrees") is None
            else "agrees"
            if r.get("value_agrees")
            else "DIFFERS"
        )
        print(
            f"  {r['gate']:<12} decision {'agrees' if r.get('decision_agrees') else 'DIFFERS'}"
            f" ({r.get('recorded_passed')} / {r.get('replayed_passed')}), value {value} "
            f"({r.get('recorded_value')} / {r.get('replayed_value')})"
        )
    print("replay AGREES" if report.agrees else "replay DISAGREES")
    return EXIT_OK if report.agrees else EXIT_ERROR


def cmd_policy_update(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    _setup_env(config, use_prefect=not args.no_prefect)
    from flows.policy_update import NoChampion, NoEvidence, run_policy_update
    from flows.promotion import ValidationFailed
    from flows.reports import console, gate_table

    try:
        result = run_policy_update(
            config,
            use_prefect=not args.no_prefect,
            from_outcomes=args.from_outcomes,
            monitoring_record=args.monitoring_record,
        )
    except ValidationFailed as exc:
        print(exc.report.summary(), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (NoChampion, NoEvidence) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    rec = parse_record(result.record)
    console().print(gate_table(result.gates))
    print(
        f"decision: {rec.decision.upper()}  (record {rec.sequence:06d} "
        f"{rec.record_id[:12]}, policy {result.policy.policy_id[:12]})"
    )
    if isinstance(rec, PolicyUpdateRecord) and rec.save_rate_evidence is not None:
        print(f"save rate from outcomes: {rec.save_rate_evidence.reason}")
    if isinstance(rec, PolicyUpdateRecord) and rec.economics is not None:
        print(rec.economics.message)
    if rec.decision == "rejected" and args.fail_on_reject:
        return EXIT_REJECTED
    return EXIT_OK


def cmd_monitor(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    _setup_env(config, use_prefect=not args.no_prefect)
    from flows.monitoring import run_monitoring

    result = run_monitoring(
        config, use_prefect=not args.no_prefect, since=args.since, until=args.until
    )
    rec = parse_record(result.record)
    print(f"monitoring: {result.decision.upper()} (record {rec.sequence:06d} {rec.record_id[:12]})")
    for alert in result.alerts:
        print(f"  - {alert}")
    if result.retrain_record:
        rr = result.retrain_record
        print(f"retrain triggered: {rr.get('decision', rr.get('deployment_flow_run_id'))}")
    return EXIT_OK


def cmd_promote_challenger(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    from flows.challenger import ChallengerError, promote_challenger

    try:
        rec = parse_record(promote_challenger(config))
    except ChallengerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"decision: {rec.decision.upper()} (record {rec.sequence:06d} {rec.record_id[:12]})")
    for r in rec.reasons:
        print(f"  - {r}")
    if isinstance(rec, PromotionRecord) and rec.economics is not None:
        print(rec.economics.message)
    return EXIT_OK


def cmd_outcomes(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    from flows.monitoring import ingest_outcomes
    from tasks.load_data import DataError, read_table

    ws = Workspace.from_setting(config.paths.workspace)
    try:
        frame = read_table(args.input)
        path = ingest_outcomes(frame, ws=ws, config=config, contacted_column=args.contacted_column)
    except (DataError, ValueError) as exc:
        print(f"bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"ingested {len(frame)} outcome(s) -> {path}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    from serving.launcher import serve
    from serving.main import CONFIG_ENV, OVERRIDES_ENV

    # one OpenMP/BLAS thread per worker: set before workers import numpy/sklearn
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ[CONFIG_ENV] = str(args.config)
    os.environ[OVERRIDES_ENV] = json.dumps(args.overrides)
    s = config.serving
    serve(
        args.host or s.host,
        args.port if args.port is not None else s.port,
        args.workers or s.workers or os.cpu_count() or 1,
    )
    return EXIT_OK


def cmd_challenger_score(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    from flows.challenger import run_challenger_scoring
    from serving.loader import NotReady

    try:
        result = run_challenger_scoring(config, since=args.since, until=args.until)
    except NotReady as exc:
        print(f"error: the challenger cannot be loaded: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:
        print(f"bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("no active challenger" if result is None else result.text())
    return EXIT_OK


def cmd_challenge_uplift(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    from flows.uplift_challenge import UpliftChallengeError, run_uplift_challenge

    try:
        rec = parse_record(run_uplift_challenge(config, since=args.since, until=args.until))
    except UpliftChallengeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (KeyError, ValueError) as exc:
        print(f"bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"uplift challenge: {rec.decision} (record {rec.sequence:06d} {rec.record_id[:12]})")
    for reason in rec.reasons:
        print(f"  - {reason}")
    return EXIT_OK


def cmd_score(args: argparse.Namespace, config: BayesPilotConfig) -> int:
    from flows.reports import row_progress
    from serving.batch import count_rows, score_file
    from serving.loader import NotReady, load_champion
    from serving.settings import ServingSettings
    from tasks.decision_store import BATCH_FLUSH_INTERVAL_S, DecisionWriter
    from tasks.load_data import DataError

    settings = ServingSettings.from_config(config)
    try:
        champion = load_champion(settings, pin=False)
    except NotReady as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return EXIT_ERROR
    settings = ServingSettings.from_config(config)
    engine = args.engine or ("dask" if config.scaleout.engine == "dask" else "local")
    if engine == "dask":
        return _score_dask(args, config, champion)
    # every decision of the run goes to the decision store (source batch)
    writer = DecisionWriter(
        settings.workspace_paths.decisions,
        source="batch",
        writer_id=f"score-{os.getpid()}",
        flush_rows=config.decisions.batch_flush_rows,
        flush_interval_s=BATCH_FLUSH_INTERVAL_S,
        file_mode=settings.log_file_mode,
        compression=config.decisions.compression,
        background=True,
    )
    try:
        total = count_rows(args.input) if args.input.is_file() else None
        with row_progress(total) as progress:
            summary = score_file(
                champion,
                args.input,
                args.output,
                rejects_path=args.rejects,
                chunk_rows=config.serving.batch_chunk_rows,
                progress=progress,
                experiment=settings.experiment,
                decisions=writer,
                inputs=settings.input_policy(),
                threads=config.serving.batch_threads,
            )
        writer.close()
    except DataError as exc:
        print(f"bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"model {champion.model_name} v{champion.model_version}, policy {champion.policy_id[:12]}"
    )
    print(summary.text())
    return EXIT_OK


def _score_dask(args: argparse.Namespace, config: BayesPilotConfig, champion: Champion) -> int:
    """``score --engine dask``: the row groups scored on the cluster's workers
    (``serving/batch_dask.py``); this process receives per-partition summaries."""
    from flows.distributed import data_client
    from serving.batch import input_kind, plan_partitions
    from serving.batch_dask import score_file_dask
    from tasks.load_data import DataError

    if args.dask_address:
        scaleout = config.scaleout.model_copy(update={"dask_address": args.dask_address})
        config = config.model_copy(update={"scaleout": scaleout})
    try:
        # bad input is refused before any cluster starts
        if input_kind(args.input) == "parquet":
            plan_partitions(args.input, config.serving.batch_chunk_rows)
        elif not args.input.is_file():
            raise DataError(f"--input: file not found: {args.input}")
        with data_client(config) as client:
            summary = score_file_dask(
                client, config, champion, args.input, args.output, rejects_path=args.rejects
            )
    except DataError as exc:
        print(f"bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"model {champion.model_name} v{champion.model_version}, policy {champion.policy_id[:12]}"
    )
    print(f"{summary.text()} ({summary.partitions} partitions on the dask workers)")
    return EXIT_OK


class RunFormatter(logging.Formatter):
    """Log lines that name the Prefect task run (or flow run) they come from."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        if run:
            kind = "task" if getattr(record, "task_run_name", None) else "flow"
            line = line.replace(f"{record.name}: ", f"{record.name} {kind} {run!r}: ", 1)
        return line


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RunFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:
        # Dask's cluster chatter (scheduler, nannies, connections) from WARNING up; Dask sets
        # its loggers' levels from this config key when it is imported, here and in workers
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    try:
        config = load_config(Path(args.config), overrides=args.overrides)
    except ConfigError as exc:
        print(f"bad config: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if args.command == "run":
            return cmd_run(args, config)
        if args.command == "config":
            print(json.dumps(config.redacted(), indent=2))
            return EXIT_OK
        if args.command == "verify":
            return cmd_verify(args, config)
        handlers = {
            "history": cmd_history,
            "show": cmd_show,
            "diff": cmd_diff,
            "replay": cmd_replay,
            "policy-update": cmd_policy_update,
            "monitor": cmd_monitor,
            "outcomes": cmd_outcomes,
            "promote-challenger": cmd_promote_challenger,
            "challenger-score": cmd_challenger_score,
            "challenge-uplift": cmd_challenge_uplift,
        }
        if args.command in handlers:
            return handlers[args.command](args, config)
        if args.command == "serve":
            return cmd_serve(args, config)
        if args.command == "score":
            return cmd_score(args, config)
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception as exc:  # the user sees one line; the log has the traceback
        log.debug("unhandled error", exc_info=True)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"error: no handler for command {args.command!r}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
