"""MLflow side effects: one parent run per flow run, one nested run per candidate."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from configs.paths import Workspace
from tasks.calibrate import CalibratedModel
from tasks.promote import package_versions
from tasks.train_candidates import TrainedModel

log = logging.getLogger(__name__)
# MLflow warns on every pickle-format save and on pip-version lookups; the served artifact is
# hash-verified instead, and requirements are pinned explicitly.
for _chatty in ("mlflow.sklearn", "mlflow.utils.environment", "mlflow.models.model"):
    logging.getLogger(_chatty).setLevel(logging.ERROR)


def preload_mlflow() -> None:
    """Import MLflow and the parts the tracker uses (seconds of CPU; no side effects), so that
    it can happen while other work runs."""
    import mlflow  # noqa: F401
    import mlflow.sklearn  # noqa: F401
    from mlflow import MlflowClient  # noqa: F401
    from mlflow.models import infer_signature  # noqa: F401


class Tracker:
    @classmethod
    def after(
        cls, preload: Any, workspace: Workspace, experiment: str, *, uri: str | None = None
    ) -> Tracker:
        """A tracker started once ``preload`` (an in-flight :func:`preload_mlflow`) is done."""
        preload.result()
        return cls(workspace, experiment, uri=uri)

    def __init__(self, workspace: Workspace, experiment: str, *, uri: str | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.uri = uri or workspace.mlflow_tracking_uri
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            workspace.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=workspace.mlflow_artifacts.as_uri()
            )
        else:
            self.experiment_id = exp.experiment_id

    def start_parent(self, run_name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        return str(run.info.run_id)

    def log_dict(
        self,
        run_id: str,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param

        ps = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        ms = [
            Metric(k, float(v), 0, 0)
            for k, v in (metrics or {}).items()
            if isinstance(v, int | float) and math.isfinite(float(v))
        ]
        self.client.log_batch(run_id, metrics=ms, params=ps)

    def log_candidate(
        self,
        parent_id: str,
        trained: TrainedModel,
        calibrated: CalibratedModel | None,
        sample: pd.DataFrame,
        plots: list[Path],
    ) -> str:
        """A nested run: params, selection metrics (and out-of-fold log loss) per calibration
        method, the fitted (calibrated) pipeline as an MLflow sklearn model with signature,
        plots."""
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        run = self.client.create_run(
            self.experiment_id,
            run_name=trained.name,
            tags={"mlflow.parentRunId": parent_id, "bayespilot.kind": trained.kind},
        )
        run_id = str(run.info.run_id)
        metrics: dict[str, float] = {
            "fit_seconds": trained.fit_seconds,
            "train_rows": trained.train_rows,
        }
        params = dict(trained.params)
        if calibrated is not None:
            params["calibration_method"] = calibrated.method
            params["calibration_cv_folds"] = calibrated.cv_folds
            for method, values in calibrated.selection_metrics.items():
                metrics.update({f"selection_{method}_{k}": v for k, v in values.items()})
            for method, loss in (calibrated.oof_log_loss or {}).items():
                metrics[f"oof_{method}_log_loss"] = loss
        if trained.error:
            params["error"] = trained.error
        self.log_dict(run_id, params, metrics)
        if calibrated is not None:
            est = calibrated.estimator
            with mlflow.start_run(run_id=run_id):
                mlflow.sklearn.log_model(
                    est,
                    name="model",
                    serialization_format="pickle",
                    pyfunc_predict_fn="predict_proba",
                    signature=infer_signature(sample, est.predict_proba(sample)),  # type: ignore[attr-defined]
                    input_example=sample.head(3),
                    pip_requirements=[
                        f"{p}=={v}"
                        for p, v in package_versions().items()
                        if p in ("scikit-learn", "numpy", "pandas", "scipy")
                    ],
                )
        for plot in plots:
            if plot.is_file():
                self.client.log_artifact(run_id, str(plot), artifact_path="plots")
        self.client.set_terminated(run_id, "FINISHED" if trained.ok else "FAILED")
        return run_id

    def log_evidence(self, run_id: str, files: list[Path], documents: dict[str, Any]) -> str:
        """The run's plots and tables under ``plots/`` and JSON ``documents`` (name -> value)
        under ``evidence/`` of run ``run_id`` (the parent run, which the registered model
        version names as its source run). Returns the run's artifact URI."""
        for path in files:
            if path.is_file():
                self.client.log_artifact(run_id, str(path), artifact_path="plots")
        for name, value in documents.items():
            self.client.log_dict(run_id, value, f"evidence/{name}")
        return str(self.client.get_run(run_id).info.artifact_uri)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)
