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
from serving.predlog import InputPolicy, InputsMode, log_key
from tasks.decision_store import DecisionWriter
from tasks.signing import KeySettings


@dataclass(frozen=True)
class ServingSettings:
    workspace: Path
    tracking_uri: str
    model_name: str
    reload_interval_s: float
    max_batch_customers: int
    max_body_bytes: int
    admin_token: str | None
    check_registry_alias: bool
    watch_interval_s: float = 0.2
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 10.0
    crash_loop_restarts: int = 5
    crash_window_s: float = 60.0
    log_inputs: InputsMode = "full"  # what the logs keep of inputs (serving.predlog)
    log_file_mode: int = 0o600
    max_imputed_share: float = 1.0  # share 0-1 of features a customer may leave missing
    max_abs_feature_value: float = 1e12  # feature unit
    keys: KeySettings | None = None  # trusted public keys (None: config defaults + environment)
    experiment: Experiment | None = None  # the randomized holdout (serving/experiment.py)
    decisions_flush_rows: int = 50_000  # rows a worker buffers at most (config `decisions`)
    decisions_flush_interval_s: float = 10.0  # seconds a decision waits at most to be written
    decisions_retention_days: float = 30.0  # days the hour partitions are kept
    decisions_compression: str = "zstd"

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
            admin_token=env.get(s.admin_token_env) or None,
            check_registry_alias=s.check_registry_alias,
            watch_interval_s=s.watch_interval_s,
            restart_backoff_s=s.restart_backoff_s,
            restart_backoff_max_s=s.restart_backoff_max_s,
            crash_loop_restarts=s.crash_loop_restarts,
            crash_window_s=s.crash_window_s,
            log_inputs=s.log_inputs,
            log_file_mode=int(s.log_file_mode, 8),
            max_imputed_share=s.max_imputed_share,
            max_abs_feature_value=s.max_abs_feature_value,
            # verifying needs public keys only; the service never mints a signing key
            keys=KeySettings.from_config(config.signing, ws.root, create_key=False),
            experiment=experiment_from_config(s),
            decisions_flush_rows=config.decisions.flush_rows,
            decisions_flush_interval_s=config.decisions.flush_interval_s,
            decisions_retention_days=config.decisions.retention_days,
            decisions_compression=config.decisions.compression,
        )

    @property
    def workspace_paths(self) -> Workspace:
        return Workspace(self.workspace)

    def input_policy(self) -> InputPolicy:
        """What the prediction log keeps of each customer (``log_inputs``)."""
        key = None if self.log_inputs == "full" else log_key(self.workspace_paths.log_key)
        return InputPolicy(self.log_inputs, key)

    def decision_writer(self, writer_id: str) -> DecisionWriter:
        """This worker's writer to the decision store (HTTP decisions; flushed by its own
        thread every ``decisions_flush_interval_s`` or ``decisions_flush_rows``)."""
        return DecisionWriter(
            self.workspace_paths.decisions,
            source="http",
            writer_id=writer_id,
            flush_rows=self.decisions_flush_rows,
            flush_interval_s=self.decisions_flush_interval_s,
            file_mode=self.log_file_mode,
            compression=self.decisions_compression,
            background=True,
        )
