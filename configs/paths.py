"""The one place that knows where things live.

Everything a run writes sits under one workspace directory: the repository's ``artifacts/`` by
default, ``paths.workspace`` in the config, or ``$BAYESPILOT_HOME`` (see ``configs.settings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
DEFAULT_WORKSPACE = REPO_ROOT / "artifacts"


def staged_table(staging: Path) -> Path:
    """The CSV input staged as Parquet in a run's staging folder (``Workspace.run_staging``)."""
    return staging / "table.parquet"


@dataclass(frozen=True)
class Workspace:
    """Paths under one workspace root."""

    root: Path

    @classmethod
    def from_setting(cls, workspace: str | None) -> Workspace:
        return cls(Path(workspace).expanduser().resolve() if workspace else DEFAULT_WORKSPACE)

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def promotions(self) -> Path:
        """Append-only promotion records, one JSON file each."""
        return self.root / "promotions"

    @property
    def promotions_lock(self) -> Path:
        return self.root / "promotions.lock"

    @property
    def models(self) -> Path:
        """Served artifacts (calibrated pipeline + policy), one folder per run."""
        return self.root / "models"

    @property
    def reports(self) -> Path:
        """Per-run reports: validation failures, plots, tables."""
        return self.root / "reports"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def decisions(self) -> Path:
        """The decision store (``tasks/decision_store.py``): every HTTP, batch and challenger
        decision, Parquet partitioned by hour (``date=YYYY-MM-DD/hour=HH``)."""
        return self.root / "decisions"

    @property
    def serving_generation(self) -> Path:
        """Serving generation counter, rewritten atomically by /v1/admin/reload; every worker
        of `bayespilot serve` watches it (and the chain head marker) and re-checks on change."""
        return self.root / "serving" / "generation"

    @property
    def log_key(self) -> Path:
        """Secret key (32 random bytes, mode 0600) of the hashed ids and values in the
        decision store (``serving.log_inputs``), kept outside ``decisions/``."""
        return self.root / "serving" / "log.key"

    @property
    def outcomes(self) -> Path:
        """Outcome labels ingested later, one Parquet file per ingest."""
        return self.root / "outcomes"

    @property
    def staging(self) -> Path:
        """Scratch of live runs, one folder each: with the Dask engine, a CSV input staged as
        Parquet for the workers (``tasks/stage_csv.py``). Removed when its run ends, and by
        the next run's reconcile when the run was killed."""
        return self.root / "staging"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    def run_reports(self, run_id: str) -> Path:
        return self.reports / run_id

    def run_models(self, run_id: str) -> Path:
        return self.models / run_id

    def run_staging(self, run_id: str) -> Path:
        return self.staging / run_id

    def ensure(self) -> Workspace:
        for d in (self.root, self.promotions, self.models, self.reports, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        return self
