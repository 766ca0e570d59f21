"""Bad input gets one clear answer: the corpus under tests/fixtures/bad/ through the real CLI,
and two cases through the Prefect flow itself.

For every case ``bayespilot run`` exits 2, prints no traceback, names the column or config
key (the ``# expect:`` line of the case's config), writes nothing under ``promotions/`` and
leaves the MLflow ``champion`` alias as it was (no registry, or no alias).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from configs.paths import Workspace
from configs.settings import build_config
from tests.fixtures.bad.make_bad import BASE, write_parquet_files

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bad"
CASES = sorted(p.stem for p in CORPUS.glob("*.yaml"))
BAYESPILOT = Path(sys.executable).with_name("bayespilot")
PARALLEL_RUNS = 3  # CLI start-up is mostly imports: a few at once keep the corpus quick


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    workspace: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _expected(case: str) -> str:
    first = (CORPUS / f"{case}.yaml").read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{case}.yaml lacks its '# expect:' line"
    return first.removeprefix("# expect: ").strip()


def _champion_alias(workspace: Path) -> str | None:
    """The registered model version the ``champion`` alias points at (None: no registry)."""
    ws = Workspace.from_setting(str(workspace))
    if not ws.mlflow_db.exists():
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=ws.mlflow_tracking_uri)
    try:
        return str(client.get_model_version_by_alias("churn-risk", "champion").version)
    except MlflowException:
        return None


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliRun]:
    """Every case run once by the real CLI, each in its own temp workspace, from a temp copy
    of the corpus (plus its Parquet files) so nothing is written into the repository."""
    root = tmp_path_factory.mktemp("bad-input")
    corpus = root / "corpus"
    shutil.copytree(CORPUS, corpus, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    write_parquet_files(corpus)

    def run(case: str) -> CliRun:
        workspace = root / "ws" / case
        env = {**os.environ, "BAYESPILOT_HOME": str(workspace)}
        proc = subprocess.run(
            [str(BAYESPILOT), "run", "--config", f"{case}.yaml"],
            cwd=corpus,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        return CliRun(proc.returncode, proc.stdout, proc.stderr, workspace)

    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        return dict(zip(CASES, pool.map(run, CASES), strict=True))


def test_bad_input_corpus_covers_every_case() -> None:
    assert len(CASES) >= 25
    parquet = [c for c in CASES if c.startswith("parquet_")]
    assert {"parquet_list_column", "parquet_struct_column", "parquet_duplicate_column"} <= set(
        parquet
    )


@pytest.mark.parametrize("case", CASES)
def test_cli_bad_input_exits_2_naming_the_problem(
    case: str, corpus_runs: dict[str, CliRun]
) -> None:
    run = corpus_runs[case]
    assert run.returncode == 2, run.output
    assert "Traceback" not in run.stdout and "Traceback" not in run.stderr, run.output
    assert _expected(case) in run.output, run.output
    promotions = Workspace.from_setting(str(run.workspace)).promotions
    assert not promotions.exists() or not any(promotions.iterdir())
    assert _champion_alias(run.workspace) is None


# ---- through the flow: a named failed state, no traceback, no retry -------------------------


@pytest.fixture()
def flow_workspace(tmp_path: Path, prefect_harness: None) -> Path:
    return tmp_path


def _flow_config(workspace: Path, data_path: Path):  # type: ignore[no-untyped-def]
    layers = {
        **BASE,
        "paths": {"workspace": str(workspace / "ws")},
        "data": {**BASE["data"], "path": str(data_path)},
    }
    return build_config(layers)


def _last_flow_run() -> tuple[str, str, list[str]]:
    """The newest flow run's state name and message, and every log line the Prefect API
    holds for it (its task runs' included)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # send what is queued before reading it back
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    assert run.state is not None
    return str(run.state.name), run.state.message or "", [log.message for log in logs]


@pytest.mark.parametrize(
    ("case", "error", "named"),
    [
        ("duplicate_column_name", "DataError", "Contract"),
        ("text_every_50th_row", "ValidationFailed", "MonthlyCharges"),
    ],
)
def test_flow_bad_input_ends_in_named_failed_state(
    case: str, error: str, named: str, flow_workspace: Path
) -> None:
    from flows.promotion import INPUT_ERRORS, INVALID_INPUT_STATE, run_prefect

    config = _flow_config(flow_workspace, CORPUS / f"{case}.csv")
    with pytest.raises(INPUT_ERRORS) as raised:
        run_prefect(config)
    assert type(raised.value).__name__ == error
    name, message, logs = _last_flow_run()
    assert name == INVALID_INPUT_STATE
    assert named in message and "\n" not in message  # one line; the CLI prints the report
    text = "\n".join(logs)
    assert f"Finished in state {INVALID_INPUT_STATE}" in text, text
    assert "Traceback" not in text, text
    assert "Retry" not in text, text  # a deterministic input error is not retried
    promotions = Workspace.from_setting(config.paths.workspace).promotions
    assert not promotions.exists() or not any(promotions.iterdir())
    assert _champion_alias(Path(config.paths.workspace or "")) is None


@pytest.mark.parametrize(
    ("entry", "extra", "state_name", "named"),
    [
        ("monitoring", [], "NoChampion", "no champion to monitor"),
        ("policy_update", [], "NoChampion", "no champion to re-select"),
        ("monitoring", ["economics.contact_cost_usd=cheap"], "InvalidData", "contact_cost_usd"),
        ("policy_update", ["policy.no_such_key=1"], "InvalidData", "no_such_key"),
    ],
)
def test_deployment_entry_refuses_in_named_failed_state(
    entry: str, extra: list[str], state_name: str, named: str, flow_workspace: Path
) -> None:
    """The monitoring and policy-update deployments end a refusal (bad config, no champion)
    in a failed state named after it, with a one-line message and no traceback, and write no
    record."""
    from flows.monitoring import churn_monitoring
    from flows.policy_update import churn_policy_update

    ws = flow_workspace / "ws"
    overrides = [f"paths.workspace={ws}", *extra]
    state = (
        churn_monitoring(overrides=overrides, return_state=True)
        if entry == "monitoring"
        else churn_policy_update(overrides=overrides, return_state=True)
    )
    assert state.is_failed()
    name, message, logs = _last_flow_run()
    assert (state.name, name) == (state_name, state_name)
    assert named in message and "\n" not in message
    assert "Traceback" not in "\n".join(logs)
    promotions = Workspace.from_setting(str(ws)).promotions
    assert not promotions.exists() or not any(promotions.iterdir())
