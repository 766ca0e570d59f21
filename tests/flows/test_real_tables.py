"""Regression suite on tables nobody on the team wrote, with the default gates.

The whole flow (``run_direct``) runs on the public Orange telecom table (no id column,
``TRUE``/``FALSE`` labels) and on the Telco look-alike fixture at a realistic size. Each must be
PROMOTED, and the served model's test ROC-AUC must be near what plain scikit-learn reaches on
the same split. Column names appear only in the configs built here (the config is where a user
names columns); everything else reads the run's column roles. Only resample, simulation and
fold counts are lowered for speed, taken from ``small_layers`` as the other flow tests do; no
gate limit is changed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from configs.settings import build_config
from flows.promotion import RunResult, run_direct
from tasks.split_data import SPLIT_NAMES

from ..conftest import small_layers
from ..fixtures.make_fixtures import telco

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

ORANGE = Path(__file__).resolve().parents[3] / "shared" / "data" / "orange-telecom-churn"
AUC_TOLERANCE = 0.02
# counts only (resamples, simulations, folds, trees): the sections small_layers speeds up
SPEED_SECTIONS = ("bootstrap", "policy", "candidates", "gates")


def _layers(workspace: Path, data: dict[str, Any], economics: dict[str, Any]) -> dict[str, Any]:
    fast = small_layers(workspace)
    return {
        "paths": {"workspace": str(workspace)},
        "data": {"source": "file", **data},
        "economics": economics,
        **{k: fast[k] for k in SPEED_SECTIONS if k in fast},
    }


def _plain_sklearn_auc(result: RunResult) -> dict[str, float]:
    """Plain one-hot + scaling pipelines fitted on every non-test split, scored on test."""
    splits, roles = result.splits, result.splits.roles
    fit = pd.concat([splits.frame(n) for n in SPLIT_NAMES if n != "test"], ignore_index=True)
    X_fit, y_fit = fit[list(roles.features)], fit[roles.label_column].to_numpy(dtype=int)
    X_test, y_test = splits.X("test"), splits.y("test")

    def preprocess() -> ColumnTransformer:
        return ColumnTransformer(
            [
                (
                    "numeric",
                    make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                    list(roles.numeric),
                ),
                (
                    "categorical",
                    make_pipeline(
                        SimpleImputer(strategy="constant", fill_value="(missing)"),
                        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                    ),
                    list(roles.categorical),
                ),
            ]
        )

    models = {
        "hist_gradient_boosting": HistGradientBoostingClassifier(random_state=0),
        "logistic_regression": LogisticRegression(max_iter=5000),
    }
    out = {}
    for name, model in models.items():
        pipe = Pipeline([("preprocess", preprocess()), ("model", model)]).fit(X_fit, y_fit)
        out[name] = float(roc_auc_score(y_test, pipe.predict_proba(X_test)[:, 1]))
    return out


def _gate_lines(result: RunResult) -> str:
    lines = []
    for g in result.gates:
        mark = "pass" if g.passed else "FAIL"
        lines.append(
            f"  {mark} {g.gate}: {g.metric}={g.value} interval={g.interval} "
            f"limit={g.threshold} :: {g.reason}"
        )
    return "\n".join(lines)


def _assert_promoted_near_plain_sklearn(result: RunResult, seconds: float) -> None:
    plain = _plain_sklearn_auc(result)
    p_test = result.chosen.predict(result.splits.X("test"))
    auc = float(roc_auc_score(result.splits.y("test"), p_test))
    rec = result.outcome.record
    summary = (
        f"decision {rec['decision']} in {seconds:.0f} s; candidate {rec['candidate']} "
        f"(calibration {rec['calibration']['method']}); test ROC-AUC {auc:.4f}, plain sklearn "
        + ", ".join(f"{k} {v:.4f}" for k, v in plain.items())
        + f"\n{_gate_lines(result)}"
    )
    log.info("%s", summary)  # the figures, also when the test passes (--log-cli-level=INFO)
    assert rec["decision"] == "promoted", summary
    assert auc >= max(plain.values()) - AUC_TOLERANCE, summary


@pytest.mark.skipif(not ORANGE.is_dir(), reason="shared Orange telecom table not present")
def test_real_table_orange_without_ids_is_promoted_near_plain_sklearn(workspace: Path) -> None:
    config = build_config(
        _layers(
            workspace,
            data={
                "path": str(ORANGE / "churn-bigml-80.csv"),
                "id_column": None,
                "label_column": "Churn",
                "positive_label": "TRUE",
                "categorical": ["State", "Area code"],
                "segment_columns": ["International plan"],
            },
            economics={"customer_value": {"constant_usd": 500.0}},
        )
    )
    start = time.perf_counter()
    result = run_direct(config)
    seconds = time.perf_counter() - start
    assert result.splits.roles.id_column not in result.splits.roles.features
    _assert_promoted_near_plain_sklearn(result, seconds)
    # batch scoring of the publisher's other file, which has no ids either: rows are numbered
    # as the training table's were
    from serving.batch import score_file
    from serving.loader import load_champion
    from serving.settings import ServingSettings

    champion = load_champion(ServingSettings.from_config(config), pin=False)
    new = ORANGE / "churn-bigml-20.csv"
    out = workspace / "scored.csv"
    summary = score_file(champion, new, out, chunk_rows=200)
    scored = pd.read_csv(out)
    assert summary.rejected == 0 and summary.rows == len(pd.read_csv(new)) == len(scored)
    assert scored[champion.id_column].tolist() == list(range(len(scored)))


def test_real_table_telco_lookalike_5000_rows_is_promoted_near_plain_sklearn(
    tmp_path: Path, workspace: Path
) -> None:
    path = tmp_path / "telco.csv"
    telco(rows=5000, seed=11).to_csv(path, index=False)
    config = build_config(
        _layers(
            workspace,
            data={
                "path": str(path),
                "id_column": "customerID",
                "label_column": "Churn",
                "positive_label": "Yes",
                "segment_columns": ["Contract"],
            },
            economics={"customer_value": {"column": "MonthlyCharges", "multiplier": 12.0}},
        )
    )
    start = time.perf_counter()
    result = run_direct(config)
    seconds = time.perf_counter() - start
    assert np.isnan(result.splits.frame("test")[list(result.splits.roles.numeric)].to_numpy()).any()
    _assert_promoted_near_plain_sklearn(result, seconds)
