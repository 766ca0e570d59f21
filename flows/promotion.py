"""The ``churn-promotion`` flow: data -> validation -> splits -> baselines and candidates
(concurrent) -> calibration -> policy and selection -> evidence -> gates -> promotion record.

The wiring lives here; every computation is a plain function in ``tasks/``. The same pipeline
runs as Prefect task runs (``churn_promotion``) or as direct calls (``run_direct``), which is
how the benchmark measures Prefect's overhead.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from prefect import flow
from prefect.states import Completed, Failed, State

from configs.paths import Workspace
from configs.settings import BayesPilotConfig, ConfigError, build_config
from flows import distributed, reports
from flows.runner import (
    DirectRunner,
    InFlight,
    PrefectRunner,
    Runner,
    in_background,
    in_processes,
)
from flows.tracking import Tracker, preload_mlflow
from tasks.calibrate import (
    CalibratedModel,
    calibrate,
    fit_cross_fold,
    plan_cross_fits,
    reliability_table,
    segment_calibration,
)
from tasks.check_schema import FeatureSchemaMismatch, check_champion_schema
from tasks.economics import resolve_for_run
from tasks.evidence import (
    ChosenScores,
    StabilityData,
    StabilityEvidence,
    fit_stability_fold,
    measure_robustness,
    score_champion,
    score_chosen,
    stability_evidence,
    stability_folds,
)
from tasks.evidence_pass import (
    FullTestEvidence,
    PassStats,
    ServedScorer,
    chunked_pass_stats,
    full_test_evidence,
    probability_edges,
)
from tasks.explain import explain as explain_model
from tasks.gates import GateResult, run_gates
from tasks.load_data import DataError, LoadedData, load_data
from tasks.monitor import REFERENCE_FILE, build_reference, reference_block, reference_document
from tasks.package_model import PackagedModel, atomic_write_bytes, package_model
from tasks.promote import (
    PromotionOutcome,
    RunEvidence,
    mlflow_challenger_alias,
    mlflow_move_aliases,
    mlflow_register,
    now_iso,
    promote,
    reconcile_at_start,
)
from tasks.reconcile import run_alive
from tasks.record_models import TrainSampleCheckBlock, parse_records
from tasks.records import RecordStore, champion_of
from tasks.sample_check import check_train_sample
from tasks.select_policy import (
    Policy,
    PolicyEvidence,
    Selection,
    apply_policy,
    policy_values,
    select_candidate,
)
from tasks.split_data import Splits, split_data, split_positions
from tasks.train_candidates import (
    TrainedModel,
    enabled_candidates,
    train_baselines,
    train_candidate,
)
from tasks.validate_data import (
    ValidatedData,
    ValidatedTable,
    ValidationReport,
    validate_table,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
FLOW_NAME = "churn-promotion"


class ValidationFailed(RuntimeError):
    """The data failed validation; nothing downstream ran."""

    def __init__(self, report: ValidationReport, report_path: Path) -> None:
        super().__init__(report.summary())
        self.report = report
        self.report_path = report_path


# Deterministic input errors: raised in a stage, they end its task run without a retry or
# a traceback (PrefectRunner) and the flow in the failed state INVALID_INPUT_STATE.
STAGE_INPUT_ERRORS: tuple[type[Exception], ...] = (DataError, FeatureSchemaMismatch)
INPUT_ERRORS: tuple[type[Exception], ...] = (
    *STAGE_INPUT_ERRORS,
    ValidationFailed,
    ConfigError,
)
INVALID_INPUT_STATE = "InvalidData"


def invalid_input_state(exc: Exception) -> State:
    """The flow's final state for bad input: failed, named ``InvalidData``, with a one-line
    message (the full validation report is in the workspace and printed by the CLI)."""
    if isinstance(exc, ValidationFailed):
        message = reports.validation_headline(exc.report, exc.report_path)
    else:
        message = f"invalid input: {exc}"
    log.info("%s", message)
    return Failed(name=INVALID_INPUT_STATE, message=message)


def refused_state(exc: Exception) -> State:
    """The final state of a job that refused to act: ``InvalidData`` for bad input (see
    :func:`invalid_input_state`), otherwise failed and named after the refusal (e.g.
    ``NoChampion``, ``NoEvidence``) with its one-line message, so the Prefect UI shows why
    without a traceback."""
    if isinstance(exc, INPUT_ERRORS):
        return invalid_input_state(exc)
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    log.info("%s: %s", type(exc).__name__, message)
    return Failed(name=type(exc).__name__, message=message)


# The flow run's final state is named after the decision (Prefect UI, ``--watch``).
DECISION_STATES = {
    "promoted": "Promoted",
    "rejected": "Rejected",
    "challenger": "Challenger",
    "policy-updated": "PolicyUpdated",
}


def decision_state(record: dict[str, Any], summary: dict[str, Any] | None = None) -> State:
    """A Completed state named after the record's decision (``Promoted``, ``Rejected``,
    ``Challenger``, ``PolicyUpdated``); the message gives the record and, when rejected, why;
    ``summary`` is the state's data (the flow's return value)."""
    decision = record["decision"]
    message = f"{decision.upper()}: record {record['sequence']:06d} {record['record_id'][:12]}"
    if decision == "rejected":
        message += "; " + "; ".join(record.get("reasons") or [])
    return Completed(name=DECISION_STATES[decision], message=message[:1000], data=summary)


class NoCandidate(RuntimeError):
    """Every candidate failed to train or calibrate."""


class DataMismatch(RuntimeError):
    """The data no longer matches the hash a record was made on."""


@dataclass(frozen=True)
class Evaluation:
    """Everything up to and including the gates (no tracking, no record, no registry)."""

    run_id: str
    started: str
    loaded: LoadedData
    report: ValidationReport
    splits: Splits
    summary: str
    baselines: tuple[TrainedModel, ...]
    trained: list[TrainedModel]
    calibrated: list[CalibratedModel]
    selection: Selection
    chosen: CalibratedModel
    policy_ev: PolicyEvidence
    packaged: PackagedModel
    stability: StabilityEvidence
    champion: dict[str, Any] | None
    gates: tuple[GateResult, ...]
    scores: ChosenScores
    full_test: FullTestEvidence | None = None
    """The evidence pass over the whole test split (only when the test split was sampled)."""
    sample_check: TrainSampleCheckBlock | None = None
    """Whether the train sample was large enough (only when the train split was sampled)."""
    explanation: dict[str, Any] = field(default_factory=dict)
    """The chosen model's explanation (``tasks.explain``; empty when not asked for)."""


@dataclass(frozen=True)
class RunResult:
    run_id: str
    outcome: PromotionOutcome
    data_summary: str
    gates: tuple[GateResult, ...]
    splits: Splits
    chosen: CalibratedModel
    baselines: tuple[TrainedModel, ...]
    loaded: LoadedData


def prepare_data(
    config: BayesPilotConfig, *, runner: Runner, reports_dir: Path, staging: Path
) -> tuple[LoadedData, ValidatedTable, Splits, str]:
    """Load, validate (stop with a report on failure) and split. With the Dask engine on a
    file the three stages run on partitions on the cluster (``flows.distributed``; a CSV
    file is staged as Parquet in ``staging``, the run's folder that
    ``distributed.staging_for_run`` holds)."""
    loaded, table, splits, summary, _ = _prepare_data(
        config, runner=runner, reports_dir=reports_dir, staging=staging
    )
    return loaded, table, splits, summary


def _prepare_data(
    config: BayesPilotConfig, *, runner: Runner, reports_dir: Path, staging: Path
) -> tuple[LoadedData, ValidatedTable, Splits, str, distributed.PartitionedTable | None]:
    """:func:`prepare_data`, and the partitioned table on the Dask engine's data path (what
    the evidence pass over the whole test split reads; None with the local data path)."""

    def refuse(report: ValidationReport, source: str) -> ValidationFailed:
        path = reports_dir / "validation.json"
        atomic_write_bytes(path, report.to_json().encode())
        runner.table(
            "validation-report",
            reports.validation_rows(report),
            f"Validation failures of {source}",
        )
        return ValidationFailed(report, path)

    checked: distributed.PartitionedTable | None = None
    if distributed.uses_partitions(config):
        with distributed.data_client(config) as client:
            load = runner.call(
                "load-data", distributed.load_partitioned, config, client, staging=staging
            )
            checked = runner.call(
                "validate-data", distributed.validate_partitioned, load, config, client
            )
            loaded, report = load.loaded, checked.report
            del load
            if not report.passed:
                raise refuse(report, loaded.source)
            splits: Splits = runner.call(
                "split-data", distributed.split_partitioned, checked, config, client
            )
        table = ValidatedTable(checked.roles, ValidatedData(report=report, frame=None))
    else:
        loaded = runner.call("load-data", load_data, config)
        table = runner.call("validate-data", validate_table, loaded.frame, config=config)
        report = table.validated.report
        if not report.passed or table.validated.frame is None:
            raise refuse(report, loaded.source)
        splits = runner.call(
            "split-data",
            split_data,
            table.validated.frame,
            roles=table.roles,
            config=config.split,
            scale=config.scale,
        )
    summary = reports.data_summary(loaded.source, table.roles, splits, report)
    runner.markdown("data-summary", summary, "Rows, column roles, base rate, split sizes/hashes")
    log.debug("data summary\n%s", summary)
    return loaded, table, splits, summary, checked


@dataclass(frozen=True)
class Choice:
    """Everything up to the chosen candidate and its policy (what the evidence stages read)."""

    started: str
    loaded: LoadedData
    report: ValidationReport
    splits: Splits
    summary: str
    partitioned: distributed.PartitionedTable | None
    baselines: InFlight[tuple[TrainedModel, ...]]
    """Started beside the candidates; read by the gates."""
    trained: list[TrainedModel]
    calibrated: list[CalibratedModel]
    selection: Selection
    selection_probabilities: dict[str, np.ndarray]
    chosen: CalibratedModel
    policy_ev: PolicyEvidence


def evaluate(
    config: BayesPilotConfig,
    *,
    runner: Runner,
    run_id: str,
    workspace: Workspace,
    models_dir: Path,
    champion: dict[str, Any] | None,
    champion_record_id: str,
    expected_data_sha256: str | None = None,
    explain: bool = False,
) -> Evaluation:
    """Data -> candidates -> calibration -> policy -> evidence -> gates (and, with
    ``explain``, the chosen model's explanation)."""
    choice = choose(
        config,
        runner=runner,
        workspace=workspace,
        run_id=run_id,
        champion=champion,
        expected_data_sha256=expected_data_sha256,
    )
    return judge(
        config,
        choice,
        runner=runner,
        run_id=run_id,
        workspace=workspace,
        models_dir=models_dir,
        champion=champion,
        champion_record_id=champion_record_id,
        explain=explain,
    )


def choose(
    config: BayesPilotConfig,
    *,
    runner: Runner,
    workspace: Workspace,
    run_id: str,
    champion: dict[str, Any] | None,
    expected_data_sha256: str | None = None,
) -> Choice:
    """Data -> baselines (started, collected by the gates) and candidates -> calibration ->
    policy and the chosen candidate."""
    started = now_iso()
    loaded, table, splits, summary, partitioned = _prepare_data(
        config,
        runner=runner,
        reports_dir=workspace.run_reports(run_id),
        staging=workspace.run_staging(run_id),
    )
    check_champion_schema(champion, table.roles, promotions_dir=workspace.promotions)
    if expected_data_sha256 is not None and loaded.sha256 != expected_data_sha256:
        raise DataMismatch(
            f"data hash {loaded.sha256[:12]} does not match the record's "
            f"{expected_data_sha256[:12]}: the data changed since that run"
        )
    baselines = runner.submit("train-baselines", train_baselines, splits, config=config.candidates)
    names = enabled_candidates(config.candidates)
    # the Dask engine ships a task run's arguments to a worker: only the splits it reads
    dask = config.scaleout.engine == "dask"
    fit_splits = splits.restricted(("train",)) if dask else splits
    cal_splits = splits.restricted(("train", "selection")) if dask else splits
    # the calibration cross-fit folds need no fitted candidate: they fit beside the
    # candidates, and each candidate is calibrated once it and its folds are done (a failed
    # one is not)
    plans = runner.call(
        "plan-cross-fit",
        plan_cross_fits,
        splits,
        names=names,
        candidates=config.candidates,
        config=config.calibration,
        max_rows=config.scale.calibration_max_rows,
        seed=config.scale.seed,
    )
    # model refits run in worker processes (or on the cluster): only train is shipped
    processes = _refit_processes(config)
    refit_splits = splits.restricted(("train",)) if processes else fit_splits
    cross_fits = {
        n: runner.submit_concurrent(
            "cross-fit-fold",
            _refit(fit_cross_fold, processes),
            [
                {"plan": plan, "fold": i, "splits": refit_splits, "candidates": config.candidates}
                for i in range(len(plan.folds))
            ],
            [f"{n}-{i}" for i in range(len(plan.folds))],
        )
        for n, plan in plans.items()
    }
    trained, calibrated = runner.concurrent_then(
        "train-candidate",
        train_candidate,
        [{"splits": fit_splits, "name": n, "config": config.candidates} for n in names],
        names,
        "calibrate",
        calibrate,
        partial(
            _calibration_call,
            {
                "splits": cal_splits,
                "config": config.calibration,
                "max_rows": config.scale.calibration_max_rows,
                "seed": config.scale.seed,
                "threads": config.scale.evidence_threads,
            },
            cross_fits,
        ),
    )
    del fit_splits, cal_splits, refit_splits
    if not calibrated:
        raise NoCandidate(
            "every candidate failed: " + "; ".join(f"{t.name}: {t.error}" for t in trained)
        )
    X_sel, y_sel = splits.X("selection"), splits.y("selection")
    # calibration kept each candidate's selection probabilities: not re-scored here
    selection_probabilities = {
        c.name: c.predict(X_sel) if c.selection_p is None else c.selection_p for c in calibrated
    }
    selection: Selection = runner.call(
        "select-policy",
        select_candidate,
        selection_probabilities,
        y_sel,
        splits.selection,
        calibration_methods={c.name: c.method for c in calibrated},
        economics=config.economics,
        policy=config.policy,
        bootstrap=config.bootstrap,
        population_rows=splits.table_rows,
    )
    chosen = next(c for c in calibrated if c.name == selection.chosen)
    return Choice(
        started,
        loaded,
        table.validated.report,
        splits,
        summary,
        partitioned,
        baselines,
        trained,
        calibrated,
        selection,
        selection_probabilities,
        chosen,
        selection.evidence[chosen.name],
    )


def _refit_processes(config: BayesPilotConfig) -> int:
    """Worker processes the model refits run in: ``scale.fit_processes``, none with the Dask
    engine (its task runs go to the cluster; a submitted stage stays in the flow process)."""
    return 0 if config.scaleout.engine == "dask" else config.scale.fit_processes


def _refit(fn: Callable[..., T], processes: int) -> Callable[..., T]:
    """A refit stage's body: ``fn`` in one of ``processes`` worker processes (0: as is)."""
    return in_processes(fn, processes) if processes else fn


def _calibration_call(
    common: dict[str, Any],
    cross_fits: dict[str, InFlight[list[np.ndarray]]],
    trained: TrainedModel,
) -> dict[str, Any] | None:
    """``calibrate``'s arguments for a candidate that trained (waiting for its cross-fit
    folds); None for one that failed."""
    if not trained.ok:
        return None
    return {"candidate": trained, **common, "out_of_fold": cross_fits[trained.name].result()}


def judge(
    config: BayesPilotConfig,
    choice: Choice,
    *,
    runner: Runner,
    run_id: str,
    workspace: Workspace,
    models_dir: Path,
    champion: dict[str, Any] | None,
    champion_record_id: str,
    explain: bool = False,
) -> Evaluation:
    """The chosen candidate's evidence -> gates. Stages that do not depend on each other run
    at the same time: scoring the chosen model, the stability folds, the train sample check
    (when train was sampled) and the champion's scores;
    once the chosen model's test probabilities are there, packaging it, the robustness
    perturbations (both reuse them) and, with ``explain``, the explanation (small: at most
    ``explain.max_rows`` test rows; collected last, it runs beside the gates). The gates wait
    for every stage they read. The memory-heavy stages (the gates, then the full-test evidence
    pass) never run at the same time as each other."""
    splits, chosen, policy = choice.splits, choice.chosen, choice.policy_ev.policy
    processes = _refit_processes(config)
    # the chosen model's probabilities on test (calibrated and raw) and selection, once: every
    # later stage reuses them instead of re-scoring the same rows
    scoring: InFlight[ChosenScores] = runner.submit(
        "score-chosen",
        score_chosen,
        chosen,
        splits,
        selection=choice.selection_probabilities[chosen.name],
    )
    folds: StabilityData = runner.call("stability-folds", stability_folds, splits, config=config)
    fold_results = runner.submit_concurrent(
        "stability-fold",
        _refit(fit_stability_fold, processes),
        [
            {
                "fold": f,
                "data": folds.data,
                "policy": policy,
                "name": chosen.name,
                "method": chosen.method,
                "roles": splits.roles,
                "config": config,
            }
            for f in folds.folds
        ],
        [str(i) for i in range(len(folds.folds))],
    )
    checking_sample = (
        runner.submit(
            "check-train-sample",
            _refit(check_train_sample, processes),
            chosen,
            # in the flow process (no worker processes) nothing is shipped, no copy
            splits.restricted(("train", "selection")) if processes else splits,
            candidates=config.candidates,
            config=config.scale.train_sample_check,
        )
        if config.scale.train_sample_check.enabled and splits.plan.get("train", {}).get("sampled")
        else None
    )
    champ_scores = runner.submit(
        "score-champion",
        score_champion,
        champion,
        champion_record_id,
        splits,
        workspace.root,
        config=config,
    )
    scores = scoring.result()
    packaging: InFlight[PackagedModel] = runner.submit(
        "package-model",
        package_model,
        chosen.estimator,
        policy,
        splits.X("test"),
        policy_values(splits.test, policy),
        directory=models_dir,
        config=config.gates.technical,
        p_test=scores.test,
    )
    robustness = runner.submit(
        "robustness",
        measure_robustness,
        chosen.predict,
        splits,
        policy,
        config=config,
        base_p=scores.test,
    )
    # started last: needed only by the record, it fills the cores while the gates run
    explaining = (
        runner.submit("explain", explain_model, chosen.estimator, splits, policy, config=config)
        if explain
        else None
    )
    packaged = packaging.result()
    stability = stability_evidence(fold_results.result(), folds)
    baselines = choice.baselines.result()
    gates = runner.call(
        "run-gates",
        run_gates,
        chosen.predict,
        baselines,
        splits,
        policy,
        predict_raw=chosen.raw.predict,
        technical=packaged.technical,
        stability=stability,
        champion=champ_scores.result(),
        robustness=robustness.result(),
        config=config,
        scores=scores,
    )
    full_test = None
    if splits.plan.get("test", {}).get("sampled"):
        business = next((g for g in gates if g.gate == "business"), None)
        full_test = runner.call(
            "full-test-evidence",
            full_test_pass,
            splits,
            choice.partitioned,
            chosen,
            policy,
            sample_p=scores.test,
            sample_profit_usd=None if business is None else business.value,
            config=config,
        )
    sample_check = None if checking_sample is None else checking_sample.result()
    if sample_check is not None:
        runner.markdown(
            "train-sample-check",
            f"**Train sample check** ({'climbing' if sample_check.climbing else 'flat'}): "
            + sample_check.sentence,
            "Was the train sample large enough (learning-curve check)",
        )
    return Evaluation(
        run_id,
        choice.started,
        choice.loaded,
        choice.report,
        splits,
        choice.summary,
        baselines,
        choice.trained,
        choice.calibrated,
        choice.selection,
        chosen,
        choice.policy_ev,
        packaged,
        stability,
        champion,
        gates,
        scores,
        full_test,
        sample_check,
        {} if explaining is None else explaining.result(),
    )


def full_test_pass(
    splits: Splits,
    partitioned: distributed.PartitionedTable | None,
    chosen: CalibratedModel,
    policy: Policy,
    *,
    sample_p: np.ndarray,
    sample_profit_usd: float | None,
    config: BayesPilotConfig,
) -> FullTestEvidence:
    """The evidence pass over every row of the (sampled) test split (``tasks.evidence_pass``):
    on partitions on the cluster with the Dask engine's data path, otherwise over the local
    frame in chunks of ``scale.chunk_rows``; both give the same figures. The probability bins
    are the quantile bins of the judged sample's probabilities ``sample_p``."""
    edges = probability_edges(sample_p, config.calibration.n_bins)
    roles = splits.roles
    scorer = ServedScorer(chosen.estimator)  # what is served, and all the workers need
    parts: Iterable[PassStats]
    if partitioned is not None:
        positions = np.sort(split_positions(partitioned.labels, config.split)["test"])
        with distributed.data_client(config) as client:
            parts = distributed.full_test_stats(
                partitioned,
                positions,
                scorer,
                policy,
                features=roles.features,
                edges=edges,
                config=config,
                client=client,
            )
    else:
        y = splits.data[roles.label_column].to_numpy()
        positions = np.sort(split_positions(y, config.split)["test"])
        parts = chunked_pass_stats(
            scorer.predict,
            splits.data,
            positions,
            policy,
            features=roles.features,
            label_column=roles.label_column,
            economics=config.economics,
            edges=edges,
            chunk_rows=config.scale.chunk_rows,
        )
    result = full_test_evidence(
        parts,
        confidence=config.bootstrap.confidence,
        rows_judged=splits.rows["test"],
        sample_profit_usd=sample_profit_usd,
    )
    log.info(
        "full test split: %s rows, profit %.4g USD/customer (%.4g to %.4g); the judged "
        "sample's %s %s inside",
        f"{result.rows:,}",
        result.profit_per_customer_usd,
        *result.profit_interval_usd,
        sample_profit_usd,
        "is" if result.sample_inside_interval else "is not",
    )
    return result


def promotion_pipeline(
    config: BayesPilotConfig, *, runner: Runner, trigger: dict[str, Any] | None = None
) -> RunResult:
    """The full run; ``trigger`` (e.g. a monitoring alert) is carried into the record. The
    run holds a liveness lock on its ``models/<run>/`` folder for its life and starts by
    reconciling what killed runs left (lagging alias, temp files, unrecorded MLflow versions
    and model folders: ``tasks/reconcile.py``); the report goes to the log and the record's
    notes."""
    workspace = Workspace.from_setting(config.paths.workspace)
    run_id = runner.flow_run_id or uuid.uuid4().hex
    cleanup = reconcile_at_start(config, workspace, own_run=run_id)
    with (
        run_alive(workspace.run_models(run_id)),
        distributed.staging_for_run(config, workspace.run_staging(run_id)),
        _run_cluster(config),
    ):
        try:
            return _promotion_run(
                config, runner=runner, trigger=trigger, run_id=run_id, cleanup=cleanup.notes()
            )
        finally:
            runner.settle()  # no stage outlives the run (one failed: the others end first)


@contextmanager
def _run_cluster(config: BayesPilotConfig) -> Iterator[None]:
    """The Dask engine's one cluster for the run (started here unless a caller did, or
    ``scaleout.dask_address`` names one); nothing for the local engine."""
    if config.scaleout.engine != "dask":
        yield
        return
    with distributed.dask_cluster(config):
        yield


def _promotion_run(
    config: BayesPilotConfig,
    *,
    runner: Runner,
    trigger: dict[str, Any] | None,
    run_id: str,
    cleanup: tuple[str, ...],
) -> RunResult:
    workspace = Workspace.from_setting(config.paths.workspace)
    store = RecordStore.for_config(config)
    head = store.head()
    economics = resolve_for_run(config, parse_records(store.records()))
    log.info("%s", economics.message)
    config = economics.apply(config)
    champion = champion_of(head)
    mlflow_import = in_background("import-mlflow", preload_mlflow)  # imports only
    choice = choose(config, runner=runner, workspace=workspace, run_id=run_id, champion=champion)
    workspace.ensure()
    # the MLflow client (its database) starts while the evidence stages run
    tracking = in_background(
        "start-tracking",
        Tracker.after,
        mlflow_import,
        workspace,
        config.promotion.experiment,
        uri=config.mlflow_uri(),
    )
    ev = judge(
        config,
        choice,
        runner=runner,
        run_id=run_id,
        workspace=workspace,
        models_dir=workspace.run_models(run_id),
        champion=champion,
        champion_record_id=head["record_id"] if head else "",
        explain=config.explain.enabled,
    )
    splits, chosen, policy, packaged = ev.splits, ev.chosen, ev.policy_ev.policy, ev.packaged
    roles = splits.roles

    tracker = tracking.result()
    parent = tracker.start_parent(
        f"promotion-{run_id[:8]}",
        {"bayespilot.run_id": run_id, "prefect.flow_run_id": str(runner.flow_run_id)},
    )
    tracker.log_dict(
        parent,
        params={
            "config_sha256": config.sha256(),
            "data_sha256": ev.loaded.sha256,
            "data_source": ev.loaded.source,
        },
    )
    plots = _plots(workspace, run_id, chosen, splits, ev.policy_ev, config, ev.scores)
    for t in ev.trained:
        cal = next((c for c in ev.calibrated if c.name == t.name), None)
        tracker.log_candidate(parent, t, cal, splits.X("selection").head(50), plots.get(t.name, []))
    tracker.log_dict(parent, metrics={f"gate_{g.gate}_passed": float(g.passed) for g in ev.gates})
    # the parent run is the registered version's source run: it holds the plots and evidence
    artifact_uri = tracker.log_evidence(
        parent,
        [p for ps in plots.values() for p in ps],
        {
            "gates.json": [g.as_dict() for g in ev.gates],
            "economics.json": economics.lineage.model_dump(mode="json"),
        },
    )

    explanation = ev.explanation
    p_test = ev.scores.test
    reference = build_reference(
        splits.train,
        roles,
        p_test,
        apply_policy(p_test, splits.test, policy).contact,
        sample_rows=config.monitoring.reference_sample_rows,
        discrete_max_values=config.monitoring.discrete_max_values,
        seed=config.monitoring.reference_seed,
    )
    rel = lambda p: str(p.relative_to(workspace.root))  # noqa: E731
    reference_file = packaged.artifact_path.parent / REFERENCE_FILE
    reference_bytes = reference_document(reference)
    atomic_write_bytes(reference_file, reference_bytes)
    evidence = RunEvidence(
        run_id=run_id,
        flow_run_id=runner.flow_run_id,
        mlflow_run_id=parent,
        config=config,
        data_source=ev.loaded.source,
        data_sha256=ev.loaded.sha256,
        split_hashes=splits.hashes,
        split_rows=splits.rows,
        features={"numeric": list(roles.numeric), "categorical": list(roles.categorical)},
        schema={
            "id_column": roles.id_column,
            "id_generated": config.data.id_column is None,
            "label_column": roles.label_column,
            "value_column": roles.value_column,
            "segment_columns": list(roles.segment_columns),
            "ignored": list(roles.ignored),
            "label_counts": ev.report.label_counts,
        },
        candidate=chosen.name,
        calibration={
            "method": chosen.method,
            "reason": chosen.reason,
            "selection_metrics": chosen.selection_metrics,
        },
        candidates=_candidates_summary(ev.trained, ev.calibrated, ev.selection),
        baselines={b.name: {"params": b.params} for b in ev.baselines},
        gates=ev.gates,
        policy=policy.document,
        policy_id=policy.policy_id,
        policy_path=rel(packaged.policy_path),
        policy_sha256=packaged.policy_sha256,
        artifact_path=rel(packaged.artifact_path),
        artifact_sha256=packaged.artifact_sha256,
        gated_against=ev.champion,
        started_at=ev.started,
        notes=(*_notes(splits, config, ev.stability, ev.sample_check), *cleanup),
        explanation=explanation,
        reference=reference_block(rel(reference_file), reference_bytes, reference),
        trigger=trigger,
        economics=economics.lineage,
        data_plan=_data_plan(splits, ev.sample_check),
        full_test=None if ev.full_test is None else ev.full_test.as_dict(),
    )
    sample = splits.X("selection").head(50)
    outcome = runner.call(
        "promote",
        promote,
        evidence,
        workspace=workspace,
        register=lambda: mlflow_register(
            chosen.estimator,
            sample,
            tracking_uri=tracker.uri,
            model_name=config.promotion.model_name,
            parent_run_id=parent,
            policy_file=packaged.policy_path,
            tags={
                "policy_id": policy.policy_id,
                "artifact_sha256": packaged.artifact_sha256,
                "run_id": run_id,
            },
        ),
        move_aliases=mlflow_move_aliases(tracker.uri),
        lock_timeout_s=config.promotion.lock_timeout_s,
        as_challenger=config.promotion.register_as == "challenger",
        set_challenger_alias=mlflow_challenger_alias(tracker.uri),
    )
    tracker.log_dict(
        parent, params={"decision": outcome.decision, "record_id": outcome.record["record_id"]}
    )
    tracker.finish(parent)

    for g in ev.gates:
        runner.table(f"gate-{g.gate}", reports.gate_rows((g,)), reports.gate_description(g))
    plot_paths = {
        f"{k}/{p.name}": str(p) if p.suffix == ".png" else f"{artifact_uri}/plots/{p.name}"
        for k, ps in plots.items()
        for p in ps
    }
    runner.markdown(
        "promotion-decision",
        reports.decision_markdown(
            outcome.record,
            plot_paths,
            mlflow_links={
                f"MLflow run {parent} (plots, evidence; source run of the registered "
                "version)": artifact_uri
            },
        ),
        f"{outcome.decision.upper()}: record {outcome.record['record_id'][:12]}",
    )
    return RunResult(run_id, outcome, ev.summary, ev.gates, splits, chosen, ev.baselines, ev.loaded)


def _plots(
    workspace: Workspace,
    run_id: str,
    chosen: CalibratedModel,
    splits: Splits,
    policy_ev: Any,
    config: BayesPilotConfig,
    scores: ChosenScores,
) -> dict[str, list[Path]]:
    out_dir = workspace.run_reports(run_id)
    y = splits.y("test")
    table = reliability_table(y, scores.test_raw, scores.test, n_bins=config.calibration.n_bins)
    rel = reports.plot_reliability(
        table,
        out_dir / f"reliability-{chosen.name}.png",
        f"{chosen.name} ({chosen.method}) on test",
    )
    table.to_csv(out_dir / f"reliability-{chosen.name}.csv", index=False)
    seg_path = out_dir / f"segment-calibration-{chosen.name}.csv"
    segment_calibration(
        splits.test,
        y,
        scores.test,
        segment_columns=splits.roles.segment_columns,
        n_bins=config.calibration.n_bins,
    ).to_csv(seg_path, index=False)
    curve = reports.plot_profit_curve(
        policy_ev.curve,
        policy_ev.contact_rate,
        policy_ev.profit_per_customer_usd.point,
        out_dir / f"profit-curve-{chosen.name}.png",
        f"{chosen.name}: profit on selection",
    )
    return {chosen.name: [rel, curve, seg_path]}


def _candidates_summary(
    trained: list[TrainedModel], calibrated: list[CalibratedModel], selection: Selection
) -> dict[str, Any]:
    """Per candidate: fit, calibration (method, out-of-fold log loss per method) and its
    selection-split figures (log loss, Brier, ROC-AUC, expected and realised profit with
    intervals, paired gaps to the lowest log loss); ``_selection`` says why the chosen won."""
    out: dict[str, Any] = {}
    for t in trained:
        entry: dict[str, Any] = {
            "status": "ok" if t.ok else "failed",
            "error": t.error,
            "fit_seconds": t.fit_seconds,
            "train_rows": t.train_rows,
        }
        cal = next((c for c in calibrated if c.name == t.name), None)
        if cal is not None:
            ev = selection.evidence[t.name]
            entry.update(
                {
                    "calibration_method": cal.method,
                    "calibration_cv_folds": cal.cv_folds,
                    "calibration_oof_log_loss": cal.oof_log_loss,
                    "selection_metrics": cal.selection_metrics,
                    "selection_profit_per_customer_usd": ev.profit_per_customer_usd.point,
                    "selection_profit_interval": ev.profit_per_customer_usd.as_list(),
                    "selection_contact_rate": ev.contact_rate,
                }
            )
            figures = selection.figures.get(t.name)
            if figures is not None:
                entry["selection"] = figures.as_dict()
        out[t.name] = entry
    out["_selection"] = selection.reason
    out["_chosen"] = selection.chosen
    return out


def _data_plan(splits: Splits, check: TrainSampleCheckBlock | None) -> dict[str, Any]:
    """The record's ``data.plan``: the split plan, and on train the sample check if it ran
    (a new dict: ``splits.plan`` is not changed)."""
    if check is None:
        return splits.plan
    check_block = check.model_dump(mode="json")
    return {**splits.plan, "train": {**splits.plan["train"], "sample_check": check_block}}


def _notes(
    splits: Splits,
    config: BayesPilotConfig,
    stability: Any,
    sample_check: TrainSampleCheckBlock | None = None,
) -> tuple[str, ...]:
    notes = [
        f"{name}: {entry['rows_used']:,} of {entry['rows_available']:,} rows ({entry['reason']})"
        for name, entry in splits.plan.items()
        if entry.get("sampled")
    ]
    cap = config.candidates.random_forest.max_train_rows
    if splits.rows["train"] > cap:
        notes.append(f"random_forest trained on a seeded subsample of {cap} train rows")
    if splits.rows["test"] > config.bootstrap.max_rows:
        notes.append(
            f"bootstraps resample a seeded subsample of {config.bootstrap.max_rows} test rows"
        )
    if stability is not None and stability.subsampled:
        notes.append(f"stability folds on a seeded subsample of {stability.rows} rows")
    if sample_check is not None and sample_check.climbing:
        notes.append(
            f"the train sample may be too small: {sample_check.candidate} fitted on "
            f"{sample_check.rows_full:,} train rows beat its fit on {sample_check.rows_half:,} "
            f"by {sample_check.relative_gain:.2%} of the selection log loss "
            f"({sample_check.gain_nats:.5f} +/- {sample_check.gain_se_nats:.5f} nats); raise "
            f"scale.train_sample_rows (and scale.train_sample_above_rows) if the table allows"
        )
    return tuple(notes)


def task_runner_for(config: BayesPilotConfig, address: str | None = None) -> Any:
    """Prefect task runner from ``config.scaleout``: a thread pool, or Dask on the scheduler
    at ``address`` (the run's cluster, ``flows.distributed.dask_cluster``; default
    ``scaleout.dask_address``)."""
    sc = config.scaleout
    if sc.engine == "dask":
        from prefect_dask import DaskTaskRunner

        address = address or sc.dask_address
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": sc.dask_workers,
                "threads_per_worker": sc.dask_threads_per_worker,
                "processes": True,
                "memory_limit": sc.dask_memory_limit or "auto",
                "dashboard_address": None,
            },
        )
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=sc.max_threads)


def run_prefect(config: BayesPilotConfig, *, trigger: dict[str, Any] | None = None) -> RunResult:
    """Run the flow in-process under Prefect (task runner from config) and return the result.
    Bad input ends the flow run in the failed state ``InvalidData`` and is raised here."""
    holder: dict[str, Any] = {}

    def body() -> str | State:
        try:
            result = promotion_pipeline(
                config, runner=PrefectRunner(input_errors=STAGE_INPUT_ERRORS), trigger=trigger
            )
        except INPUT_ERRORS as exc:
            holder["error"] = exc
            return invalid_input_state(exc)
        holder["r"] = result
        return decision_state(result.outcome.record, {"decision": result.outcome.decision})

    if config.scaleout.engine == "dask":
        # one cluster for the run: the data path and the task runner share it
        with distributed.dask_cluster(config) as address:
            as_flow = flow(
                name=FLOW_NAME, persist_result=False, task_runner=task_runner_for(config, address)
            )
            state = as_flow(body)(return_state=True)
    else:
        as_flow = flow(name=FLOW_NAME, persist_result=False, task_runner=task_runner_for(config))
        state = as_flow(body)(return_state=True)
    if "error" in holder:
        raise holder["error"]
    if "r" not in holder:
        state.result()  # raises the flow's exception
    result: RunResult = holder["r"]
    return result


@flow(name=FLOW_NAME, log_prints=False, persist_result=False)
def churn_promotion(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    config_json: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Prefect entry point (deployments pass a config path and ``section.key=value``
    overrides). Ends in a Completed state named after the decision (``Promoted``,
    ``Rejected``, ``Challenger``) holding the decision summary; bad config or data ends the
    run in the failed
    state ``InvalidData`` (no traceback, no retry). With ``scaleout.engine: dask`` the stages
    run in a subflow on the Dask task runner."""
    from configs.settings import load_config

    try:
        config = (
            build_config(config_json)
            if config_json is not None
            else load_config(config_path, overrides=overrides or [])
        )
        if config.scaleout.engine == "dask":
            result = run_prefect(config, trigger=trigger)
        else:
            result = promotion_pipeline(
                config, runner=PrefectRunner(input_errors=STAGE_INPUT_ERRORS), trigger=trigger
            )
    except INPUT_ERRORS as exc:
        return invalid_input_state(exc)  # type: ignore[return-value]
    rec = result.outcome.record
    summary = {
        "decision": rec["decision"],
        "record_id": rec["record_id"],
        "sequence": rec["sequence"],
        "model_version": rec.get("model_version"),
    }
    return decision_state(rec, summary)  # type: ignore[return-value]


def run_direct(config: BayesPilotConfig, *, trigger: dict[str, Any] | None = None) -> RunResult:
    """The same pipeline without Prefect (benchmarks, overhead measurement)."""
    return promotion_pipeline(config, runner=DirectRunner(), trigger=trigger)


__all__ = [
    "FLOW_NAME",
    "INPUT_ERRORS",
    "INVALID_INPUT_STATE",
    "NoCandidate",
    "RunResult",
    "ValidationFailed",
    "churn_promotion",
    "promotion_pipeline",
    "run_direct",
    "run_prefect",
]
