"""Was the train sample large enough? A two-point learning curve on the chosen candidate.

Above ``scale.train_sample_above_rows`` candidates train on a label-stratified sample of
``scale.train_sample_rows`` train rows (``tasks.split_data``). This check refits the chosen
candidate (same pipeline, same settings) on a label-stratified seeded half of the rows it was
fitted on and scores the selection split with it. Against the candidate's own full-sample raw
probabilities on the same rows it measures the paired per-row log-loss difference (half minus
full, nats): its mean is what doubling the rows bought. The curve is ``climbing`` when that
gain is larger than ``z`` standard errors of the paired difference AND larger than a practical
share of the full sample's log loss: then more train rows would likely help still, and the
user should raise ``scale.train_sample_rows``. Evidence only: it never changes a decision.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import roc_auc_score

from configs.settings import CandidatesConfig, TrainSampleCheckConfig
from tasks.calibrate import CalibratedModel
from tasks.record_models import TrainSampleCheckBlock
from tasks.select_policy import row_log_loss
from tasks.split_data import Splits, stratified_sample
from tasks.train_candidates import build_candidate

log = logging.getLogger(__name__)


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def check_train_sample(
    chosen: CalibratedModel,
    splits: Splits,
    *,
    candidates: CandidatesConfig,
    config: TrainSampleCheckConfig,
) -> TrainSampleCheckBlock | None:
    """The learning-curve check of ``chosen`` (see the module docstring), or None when the
    train split was not sampled (``splits.plan["train"]["sampled"]``) or the check is off.

    ``splits`` needs the train and selection rows. The full-sample probabilities are the ones
    calibration kept (``chosen.selection_raw``), scored here only when absent. A selection
    split above ``config.max_selection_rows`` is compared on a label-stratified seeded sample
    of that many rows."""
    if not config.enabled or not splits.plan.get("train", {}).get("sampled"):
        return None
    raw = chosen.raw
    if not raw.ok:
        raise ValueError(f"cannot check the train sample of failed candidate {raw.name}")
    index = raw.train_index if raw.train_index is not None else np.arange(splits.rows["train"])
    y_train = splits.y("train")
    half = index[stratified_sample(y_train[index], len(index) // 2, seed=config.seed)]
    pipeline = build_candidate(raw.name, splits.roles, config=candidates)
    pipeline.fit(splits.X("train").iloc[half], y_train[half])
    X_sel, y_sel = splits.X("selection"), splits.y("selection")
    p_full = chosen.selection_raw
    if len(y_sel) > config.max_selection_rows:
        keep = stratified_sample(y_sel, config.max_selection_rows, seed=config.seed)
        X_sel, y_sel = X_sel.iloc[keep], y_sel[keep]
        p_full = None if p_full is None else p_full[keep]
    if p_full is None:
        p_full = raw.predict(X_sel)
    p_half = np.asarray(pipeline.predict_proba(X_sel)[:, 1], dtype=float)
    loss_full, loss_half = row_log_loss(y_sel, p_full), row_log_loss(y_sel, p_half)
    d = loss_half - loss_full
    gain = float(np.mean(d))
    se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    mean_full = float(np.mean(loss_full))
    relative = gain / mean_full if mean_full > 0 else 0.0
    auc_full, auc_half = _auc(y_sel, p_full), _auc(y_sel, p_half)
    aucs = (
        f"; ROC-AUC {auc_half:.4f} -> {auc_full:.4f}"
        if auc_full is not None and auc_half is not None
        else ""
    )
    significant = gain > config.z * se
    practical = relative > config.min_relative_gain
    climbing = bool(significant and practical)
    if climbing:
        verdict = (
            f"still climbing: the gain exceeds {config.z:g} standard errors and "
            f"{config.min_relative_gain:.2%} of the log loss, so more train rows would likely "
            "help; raise scale.train_sample_rows"
        )
    else:
        why = (
            f"within {config.z:g} standard errors (noise)"
            if not significant
            else f"beyond noise but below {config.min_relative_gain:.2%} of the log loss"
        )
        if not significant and not practical:
            why = (
                f"within {config.z:g} standard errors and below "
                f"{config.min_relative_gain:.2%} of the log loss"
            )
        verdict = f"flat: the gain is {why}, so the sample is large enough by this check"
    sentence = (
        f"Doubling {raw.name}'s train rows from {len(half):,} to {len(index):,} changed its "
        f"raw selection log loss from {float(np.mean(loss_half)):.5f} to {mean_full:.5f} nats "
        f"(gain {gain:+.5f} +/- {se:.5f} standard error, {relative:+.2%} of the log loss, "
        f"{len(y_sel):,} selection rows){aucs}: {verdict}."
    )
    if climbing:
        log.warning("train sample check: %s", sentence)
    else:
        log.info("train sample check: %s", sentence)
    return TrainSampleCheckBlock(
        candidate=raw.name,
        rows_full=len(index),
        rows_half=len(half),
        selection_rows=len(y_sel),
        log_loss_full=round(mean_full, 6),
        log_loss_half=round(float(np.mean(loss_half)), 6),
        gain_nats=round(gain, 6),
        gain_se_nats=round(se, 6),
        relative_gain=round(relative, 6),
        roc_auc_full=None if auc_full is None else round(auc_full, 6),
        roc_auc_half=None if auc_half is None else round(auc_half, 6),
        z=config.z,
        min_relative_gain=config.min_relative_gain,
        climbing=climbing,
        sentence=sentence,
    )
