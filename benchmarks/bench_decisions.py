"""Benchmark: what the default promotion decides, and how good that decision is.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_decisions.py [--rows 20000 100000 1000000] [--skip-1m]
                                                   [--skip-orange] [--holdout-rows 200000]

Each run is the full flow (``flows.promotion.run_direct``: no Prefect server) on
``configs/default.yaml`` in a fresh temporary workspace (``PREFECT_HOME`` in it too):

- the generator at each ``--rows`` (``synthetic.rows``), and
- the public Orange telecom table (``../shared/data/orange-telecom-churn``): the publisher's
  80 % file is the run's data (``data.source: file``, no id column, label ``Churn`` with
  ``TRUE`` as churn, segment column ``--orange-segment``, a constant customer value of
  ``--orange-value-usd``).

For every run it prints the decision, the chosen candidate and calibration, every gate's value
against its limit (the run record's ``gates``: gate, passed, metric, value, interval,
threshold, reason) and the wall time (seconds). For the generator it also prints the share of
the oracle's expected profit on a fresh holdout (``generate_data`` with ``--holdout-seed``,
true churn probability kept): the expected profit of a policy is
``sum(contact * (p_true * save_rate * value - contact_cost))`` (USD); the oracle contacts
where ``p_true * save_rate * value - contact_cost > 0``; the promoted model is decided by its
record's policy through ``tasks.select_policy.apply_policy``. For Orange it prints the ROC-AUC
on the publisher's 20 % file of the chosen model and of plain HistGradientBoosting (one-hot +
scaling, default parameters) trained on the 80 % file.

It prints figures; it asserts nothing. Targets (issue 12): >= 0.97 of the oracle at 20k rows,
>= 0.985 at 100k, every default run PROMOTED, Orange PROMOTED with ROC-AUC within 0.01 of
plain HistGradientBoosting.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from configs.settings import BayesPilotConfig
    from flows.promotion import RunResult

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
ORANGE_DIR = REPO_ROOT.parent / "shared" / "data" / "orange-telecom-churn"
ORANGE_TRAIN = "churn-bigml-80.csv"
ORANGE_TEST = "churn-bigml-20.csv"

TARGET_SHARE = {20_000: 0.97, 100_000: 0.985}
TARGET_AUC_GAP = 0.01

log = logging.getLogger("bench_decisions")


@dataclass
class Outcome:
    """One run's figures: wall time in seconds, profits in USD."""

    label: str
    decision: str
    candidate: str
    calibration: str
    wall_s: float
    gates: list[dict[str, Any]]
    selection: str
    extra: dict[str, float] = field(default_factory=dict)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def run_flow(label: str, overrides: list[str], root: Path) -> tuple[RunResult, Outcome, Any]:
    """Run the default flow with ``overrides`` in a fresh workspace under ``root``."""
    from configs.settings import load_config
    from flows.promotion import run_direct

    workspace = root / label
    workspace.mkdir(parents=True)
    config = load_config(
        DEFAULT_CONFIG, overrides=[*overrides, f"paths.workspace={workspace}"], environ={}
    )
    start = time.perf_counter()
    result = run_direct(config)
    wall = time.perf_counter() - start
    record = result.outcome.record
    outcome = Outcome(
        label=label,
        decision=str(record["decision"]),
        candidate=result.chosen.name,
        calibration=result.chosen.method,
        wall_s=wall,
        gates=list(record["gates"]),
        selection=str(record.get("candidates", {}).get("_selection", "")),
    )
    return result, outcome, config


def oracle_share(
    result: RunResult, config: BayesPilotConfig, *, rows: int, seed: int
) -> dict[str, float]:
    """Expected profit (USD, under the true churn probability) of the promoted model with its
    record's policy, and of the oracle, on a fresh generated holdout."""
    import numpy as np

    from tasks.evaluate import customer_values
    from tasks.generate_data import TRUTH_COLUMN, generate_data
    from tasks.select_policy import Policy, apply_policy
    from tasks.validate_data import validate_table

    raw = generate_data(rows=rows, seed=seed)
    p_true = raw[TRUTH_COLUMN].to_numpy(dtype=float)
    table = validate_table(raw.drop(columns=[TRUTH_COLUMN]), config=config)
    frame = table.validated.frame
    if frame is None:
        raise RuntimeError(f"holdout failed validation: {table.validated.report.summary()}")
    econ = config.economics
    values = customer_values(frame, economics=econ)
    true_ev = p_true * econ.save_rate * values - econ.contact_cost_usd
    policy = Policy(result.outcome.record["policy"])
    p = result.chosen.predict(frame[list(result.splits.roles.features)])
    contact = apply_policy(p, frame, policy).contact
    model = float(np.sum(contact * true_ev))
    oracle = float(np.sum((true_ev > 0) * true_ev))
    return {
        "holdout_rows": float(rows),
        "expected_profit_usd": model,
        "oracle_expected_profit_usd": oracle,
        "oracle_share": model / oracle if oracle else float("nan"),
        "contact_rate": float(contact.mean()),
        "oracle_contact_rate": float((true_ev > 0).mean()),
    }


def orange_auc(result: RunResult, config: BayesPilotConfig, test_path: Path) -> dict[str, float]:
    """ROC-AUC on the 20 % file: the chosen model, and plain HistGradientBoosting (one-hot +
    scaling as the flow's preprocessor, default parameters) fitted on the whole 80 % file."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import Pipeline

    from configs.settings import build_config
    from tasks.load_data import load_data
    from tasks.train_candidates import build_preprocessor
    from tasks.validate_data import validate_table

    def clean(cfg: BayesPilotConfig) -> Any:
        table = validate_table(load_data(cfg).frame, config=cfg)
        if table.validated.frame is None:
            raise RuntimeError(f"validation failed: {table.validated.report.summary()}")
        return table

    train = clean(config)
    test_cfg = build_config(
        {**config.model_dump(mode="json"), "data": {**config.data.model_dump(mode="json"),
                                                     "path": str(test_path)}}
    )
    test = clean(test_cfg)
    roles = result.splits.roles
    feats, label = list(roles.features), roles.label_column
    y_test = test.validated.frame[label].to_numpy(dtype=int)
    X_test = test.validated.frame[feats]  # noqa: N806 - sklearn convention
    chosen = float(roc_auc_score(y_test, result.chosen.predict(X_test)))
    plain = Pipeline(
        [
            ("preprocess", build_preprocessor(roles)),
            ("model", HistGradientBoostingClassifier(random_state=config.candidates.seed)),
        ]
    ).fit(train.validated.frame[feats], train.validated.frame[label].to_numpy(dtype=int))
    reference = float(roc_auc_score(y_test, plain.predict_proba(X_test)[:, 1]))
    return {"roc_auc_chosen": chosen, "roc_auc_plain_hgb": reference,
            "auc_gap": reference - chosen}


def print_outcome(o: Outcome) -> None:
    print(f"\n=== {o.label}: {o.decision.upper()}  (wall {o.wall_s:.1f} s)")
    print(f"chosen: {o.candidate} + {o.calibration}")
    print(f"selection: {o.selection}")
    print(f"  {'gate':<12} {'pass':<5} {'metric':<44} {'value':>10} {'interval':>22} "
          f"{'limit':>12}")
    for g in o.gates:
        print(f"  {g['gate']:<12} {('yes' if g['passed'] else 'NO'):<5} "
              f"{str(g.get('metric'))[:44]:<44} {_fmt(g.get('value')):>10} "
              f"{_fmt(g.get('interval')):>22} {_fmt(g.get('threshold')):>12}")
        if not g["passed"]:
            print(f"      reason: {g.get('reason')}")
    for k, v in o.extra.items():
        print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[20_000, 100_000, 1_000_000],
                        help="generator sizes (customers)")
    parser.add_argument("--skip-1m", action="store_true", help="leave out sizes >= 1,000,000")
    parser.add_argument("--skip-orange", action="store_true", help="leave out the Orange table")
    parser.add_argument("--orange-dir", type=Path, default=ORANGE_DIR)
    parser.add_argument("--orange-segment", default="International plan",
                        help="segment column of the Orange run")
    parser.add_argument("--orange-value-usd", type=float, default=300.0,
                        help="constant customer value of the Orange run (USD)")
    parser.add_argument("--holdout-rows", type=int, default=200_000)
    parser.add_argument("--holdout-seed", type=int, default=12345)
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspaces")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    root = Path(tempfile.mkdtemp(prefix="bench-decisions-"))
    os.environ["PREFECT_HOME"] = str(root / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
    os.environ.pop("PREFECT_API_URL", None)
    sizes = [r for r in args.rows if not (args.skip_1m and r >= 1_000_000)]
    outcomes: list[Outcome] = []
    try:
        for rows in sizes:
            label = f"generator-{rows // 1000}k"
            result, o, config = run_flow(label, [f"synthetic.rows={rows}"], root)
            o.extra = oracle_share(result, config, rows=args.holdout_rows, seed=args.holdout_seed)
            target = TARGET_SHARE.get(rows)
            if target is not None:
                o.extra["oracle_share_target"] = target
            print_outcome(o)
            outcomes.append(o)
            del result
        if not args.skip_orange:
            overrides = [
                "data.source=file",
                f"data.path={args.orange_dir / ORANGE_TRAIN}",
                "data.id_column=null",
                "data.label_column=Churn",
                "data.positive_label=true",
                f"data.segment_columns=[{args.orange_segment!r}]",
                "economics.customer_value.column=null",
                f"economics.customer_value.constant_usd={args.orange_value_usd}",
            ]
            result, o, config = run_flow("orange-80", overrides, root)
            o.extra = orange_auc(result, config, args.orange_dir / ORANGE_TEST)
            o.extra["auc_gap_target"] = TARGET_AUC_GAP
            print_outcome(o)
            outcomes.append(o)
    finally:
        if args.keep:
            print(f"\nworkspaces kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print("\n=== summary")
    for o in outcomes:
        failed = [g["gate"] for g in o.gates if not g["passed"]]
        share = o.extra.get("oracle_share")
        auc = o.extra.get("roc_auc_chosen")
        figure = (
            f"oracle share {share:.4f}" if share is not None
            else f"ROC-AUC {auc:.4f} vs plain HGB {o.extra['roc_auc_plain_hgb']:.4f}"
            if auc is not None else ""
        )
        print(f"  {o.label:<16} {o.decision:<9} {o.candidate}+{o.calibration:<16} "
              f"{o.wall_s:7.1f} s  {figure}  failed: {', '.join(failed) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
