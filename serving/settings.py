"""Service settings, derived from the one config tree (workspace found the same way as every
command) plus the admin token from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from configs.paths import Workspace
from configs.settings import BayesPilotConfig
from serving.experiment import Experiment, experiment_from_config
from serving.predlog import InputPolicy, InputsMode, PredictionLog, log_key
from tasks.signing import KeySettings


@dataclass(frozen=True)
class ServingSettings:
    workspace: Path
    tracking_uri: str
    model_name: str
    reload_interval_s: float
    max_batch_customers: int
    max_body_bytes: int
    prediction_log: Path
    prediction_log_max_bytes: int
    prediction_log_backups: int
    admin_token: str | None
    check_registry_alias: bool
    watch_interval_s: float = 0.2
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 10.0
    crash_loop_restarts: int = 5
    crash_window_s: float = 60.0
    prediction_log_max_age_days: float | None = None
    log_inputs: InputsMode = "full"  # what the logs keep of inputs (serving.predlog)
    log_file_mode: int = 0o600
    max_imputed_share: float = 1.0  # share 0-1 of features a customer may leave missing
    max_abs_feature_value: float = 1e12  # feature unit
    keys: KeySettings | None = None  # trusted public keys (None: config defaults + environment)
    experiment: Experiment | None = None  # the randomized holdout (serving/experiment.py)

    @classmethod
    def from_config(
        cls, config: BayesPilotConfig, environ: Mapping[str, str] | None = None
    ) -> ServingSettings:
        env = os.environ if environ is None else environ
        ws = Workspace.from_setting(config.paths.workspace)
        s = config.serving
        return cls(
            workspace=ws.root,
            tracking_uri=config.mlflow_uri(),
            model_name=config.promotion.model_name,
            reload_interval_s=s.reload_interval_s,
            max_batch_customers=s.max_batch_customers,
            max_body_bytes=s.max_body_bytes,
            prediction_log=ws.prediction_log,
            prediction_log_max_bytes=int(s.prediction_log_max_mb * 1_000_000),
            prediction_log_backups=s.prediction_log_backups,
            admin_token=env.get(s.admin_token_env) or None,
            check_registry_alias=s.check_registry_alias,
            watch_interval_s=s.watch_interval_s,
            restart_backoff_s=s.restart_backoff_s,
            restart_backoff_max_s=s.restart_backoff_max_s,
            crash_loop_restarts=s.crash_loop_restarts,
            crash_window_s=s.crash_window_s,
            prediction_log_max_age_days=s.prediction_log_max_age_days,
            log_inputs=s.log_inputs,
            log_file_mode=int(s.log_file_mode, 8),
            max_imputed_share=s.max_imputed_share,
            max_abs_feature_value=s.max_abs_feature_value,
            # verifying needs public keys only; the service never mints a signing key
            keys=KeySettings.from_config(config.signing, ws.root, create_key=False),
            experiment=experiment_from_config(s),
        )

    @property
    def workspace_paths(self) -> Workspace:
        return Workspace(self.workspace)

    def input_policy(self) -> InputPolicy:
        """What the prediction log keeps of each customer (``log_inputs``)."""
        key = None if self.log_inputs == "full" else log_key(self.workspace_paths.log_key)
        return InputPolicy(self.log_inputs, key)

    def open_log(self, path: Path) -> PredictionLog:
        """A prediction-style log at ``path`` with the service's size, age and mode limits."""
        return PredictionLog(
            path,
            max_bytes=self.prediction_log_max_bytes,
            backups=self.prediction_log_backups,
            max_age_days=self.prediction_log_max_age_days,
            file_mode=self.log_file_mode,
        )
