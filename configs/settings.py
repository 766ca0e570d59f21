"""The BayesPilot configuration tree.

One pydantic model per stage, every section forbids unknown keys, every number carries its unit
in its name or its description. Loaded from YAML, then environment variables, then ``--set``
overrides (highest precedence wins)::

    defaults < YAML file < environment (BAYESPILOT__SECTION__KEY=value) < --set section.key=value

``BAYESPILOT_HOME`` is a shortcut for ``paths.workspace``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "BAYESPILOT__"
HOME_ENV = "BAYESPILOT_HOME"


class ConfigError(ValueError):
    """A configuration problem, reported with the offending key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(Section):
    workspace: str | None = Field(
        None,
        description="Directory for all run state (MLflow db, models, records, logs); "
        "default: the repository's artifacts/ or $BAYESPILOT_HOME.",
    )


ROW_ID_COLUMN = "row_id"
DEFAULT_NUMERIC_INFERENCE_SHARE = 0.9


class DataConfig(Section):
    source: Literal["synthetic", "file"] = "synthetic"
    path: str | None = Field(None, description="CSV or Parquet file, when source is file.")
    id_column: str | None = Field(
        "customer_id",
        description="Column with a unique id per row; null for a table without one: the loader "
        f"then adds '{ROW_ID_COLUMN}', the row's 0-based position in the table as read.",
    )
    label_column: str = "churned"
    positive_label: str | int | bool = "yes"
    negative_label: str | int | bool | None = None
    categorical: list[str] | None = None
    numeric: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    segment_columns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _file_needs_path(self) -> DataConfig:
        if self.source == "file" and not self.path:
            raise ValueError("data.path is required when data.source is 'file'")
        return self

    @property
    def effective_id_column(self) -> str:
        """The id column every later stage reads: ``id_column``, or the added row number."""
        return self.id_column if self.id_column is not None else ROW_ID_COLUMN


class TreatmentResponseConfig(Section):
    """Known-truth response of synthetic customers to a retention contact (``tasks.
    simulate_campaign``): a heterogeneous save rate driven by features (persuadables, sure
    things, lost causes) and a share of sleeping dogs whom a contact pushes out. The truth is
    returned apart from the features, never as one."""

    mean_save_rate: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="Mean over customers (not sleeping dogs) of the share (0-1) of their churn "
        "probability a delivered contact removes.",
    )
    save_rate_spread: float = Field(
        1.0,
        ge=0,
        description="Heterogeneity of the save rate: scale (log-odds units) of its "
        "feature-driven variation across customers; 0 makes it the same for everyone.",
    )
    sleeping_dog_share: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share (0-1) of customers whom a contact pushes out (0: none).",
    )
    sleeping_dog_churn_increase: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Share (0-1) of a sleeping dog's probability of staying that a delivered "
        "contact removes.",
    )
    delivery_rate: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share (0-1) of contacts assigned in a campaign that are actually delivered.",
    )
    seed: int = 13


class SyntheticConfig(Section):
    rows: int = Field(20_000, gt=0, description="Number of customers (rows).")
    seed: int = 7
    treatment: TreatmentResponseConfig | None = Field(
        None,
        description="Optional treatment-response model for simulated campaigns (null: none).",
    )


class SplitConfig(Section):
    """Train / selection / test shares (0-1). Calibrators are cross-fitted on train (no
    calibration split), so train gets the rows a calibration split used to hold back."""

    seed: int = 7
    train_fraction: float = Field(
        0.65,
        gt=0,
        lt=1,
        description="Share of rows for fitting models and (out of fold) their calibrators.",
    )
    selection_fraction: float = Field(
        0.15, gt=0, lt=1, description="Share for choosing calibration, policy and candidate."
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share touched only by the gates.")
    min_rows_per_class_per_split: int = Field(
        10, ge=1, description="Each split needs at least this many rows of each class."
    )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train_fraction + self.selection_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1.0, got {total:.4f}")
        return self


class ValidationConfig(Section):
    max_missing_share: float = Field(
        0.3, ge=0, le=1, description="Largest share (0-1) of missing values allowed in a feature."
    )
    leakage_auc: float = Field(
        0.99,
        gt=0.5,
        le=1,
        description="A single feature whose ROC-AUC (either direction) "
        "reaches this is treated as a copy of the label.",
    )
    leakage_sample_rows: int = Field(
        200_000, gt=0, description="Rows sampled (seeded) for the leakage screen."
    )
    max_categories: int = Field(
        200,
        gt=1,
        description="A text column with more distinct values than this is rejected "
        "as a feature (likely an identifier); list it under data.ignore.",
    )
    numeric_inference_share: float = Field(
        DEFAULT_NUMERIC_INFERENCE_SHARE,
        gt=0.5,
        le=1,
        description="A column not listed under data.numeric/categorical is numeric when at "
        "least this share (0-1) of its non-blank cells are numbers; its other cells then fail "
        "validation (column, count, examples) instead of turning it categorical.",
    )


class LogisticConfig(Section):
    enabled: bool = True
    C: float = Field(1.0, gt=0, description="Inverse L2 regularisation strength.")
    max_iter: int = Field(1000, gt=0)


class ForestConfig(Section):
    enabled: bool = True
    n_estimators: int = Field(120, gt=0, description="Number of trees.")
    min_samples_leaf: int = Field(20, ge=1, description="Leaf-size floor (rows).")
    max_samples: float = Field(
        0.5, gt=0, le=1, description="Share of train rows drawn for each tree."
    )
    max_train_rows: int = Field(
        200_000, gt=0, description="Train on a seeded subsample of at most this many rows."
    )
    max_depth: int | None = Field(14, description="Tree depth cap (None: unbounded).")


class BoostingConfig(Section):
    """HistGradientBoosting with early stopping: small steps and many rounds, stopped on a
    held-out share of train large enough that the stopping point is not noise (small tables
    overfit and turn overconfident when 10 % of a few thousand rows decides it)."""

    enabled: bool = True
    learning_rate: float = Field(0.03, gt=0)
    max_iter: int = Field(1000, gt=0, description="Boosting rounds (upper bound; early stopping).")
    max_leaf_nodes: int = Field(15, ge=2)
    min_samples_leaf: int = Field(20, ge=1, description="Leaf-size floor (rows).")
    l2_regularization: float = Field(1.0, ge=0)
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share (0-1) of the fitting rows held out for early stopping."
    )
    n_iter_no_change: int = Field(
        30, ge=1, description="Stop after this many rounds without a validation-loss gain."
    )


class CandidatesConfig(Section):
    seed: int = 7
    logistic_regression: LogisticConfig = LogisticConfig()
    random_forest: ForestConfig = ForestConfig()
    gradient_boosting: BoostingConfig = BoostingConfig()
    rule_quantiles: int = Field(
        20, ge=2, description="Candidate cut points per numeric feature for the rule baseline."
    )
    n_jobs: int = Field(
        1, description="Threads per model fit (1 keeps fits predictable on 2 cores)."
    )


CalibrationMethod = Literal["none", "sigmoid", "isotonic", "segment_sigmoid"]


def _all_methods() -> list[CalibrationMethod]:
    return ["none", "sigmoid", "isotonic", "segment_sigmoid"]


class CalibrationConfig(Section):
    """Cross-fitted calibration: out-of-fold scores over train fit each method; the served
    model is the pipeline fitted on all of train plus the chosen calibrator (one estimator).
    ``segment_sigmoid`` fits a sigmoid per value of each categorical segment column
    (``data.segment_columns``), shrunk towards the overall one by an L2 penalty."""

    methods: list[CalibrationMethod] = Field(default_factory=_all_methods)
    cv_folds: int = Field(
        5, ge=2, description="Stratified folds for the out-of-fold scores the calibrators fit."
    )
    seed: int = Field(7, description="Seed of the fold assignment.")
    min_rows_for_isotonic: int = Field(
        1000, ge=1, description="Isotonic is considered only with this many out-of-fold rows."
    )
    tie_z: float = Field(
        1.96,
        ge=0,
        description="A simpler method (none < sigmoid < segment_sigmoid < isotonic) is kept "
        "unless the lowest selection log loss beats it by more than this many standard "
        "errors of the paired per-row difference (0: always the lowest log loss).",
    )
    segment_C: float = Field(  # noqa: N815 - sklearn's name for it
        1.0,
        gt=0,
        description="Inverse L2 strength of segment_sigmoid's per-segment slopes and "
        "offsets (smaller: rare segments stay closer to the overall sigmoid).",
    )
    n_bins: int = Field(10, ge=2, description="Quantile bins for ECE and reliability diagrams.")


class CustomerValueConfig(Section):
    column: str | None = Field(None, description="Column holding a per-customer value.")
    multiplier: float = Field(1.0, gt=0, description="Value (USD) = column x multiplier.")
    constant_usd: float = Field(500.0, gt=0, description="Value (USD) when no column is set.")


class EconomicsConfig(Section):
    save_rate: float = Field(
        0.25, gt=0, le=1, description="Share (0-1) of contacted churners a retention action keeps."
    )
    contact_cost_usd: float = Field(15.0, ge=0, description="Cost of one contact (USD).")
    customer_value: CustomerValueConfig = CustomerValueConfig()
    capacity: float | None = Field(
        None,
        gt=0,
        description="Contact limit: a share of customers (0-1, below 1) or a whole count of "
        "customers (>= 1, at most the rows of the data).",
    )

    @field_validator("capacity")
    @classmethod
    def _share_or_count(cls, value: float | None) -> float | None:
        if value is not None and value > 1 and not float(value).is_integer():
            raise ValueError(
                "expected a share of customers in (0, 1) or a whole count of customers (1, 2, ...)"
            )
        return value


class TierBand(Section):
    name: str
    min_expected_value_usd: float | None = Field(
        description="Lowest expected value of contacting (USD) that lands in this tier "
        "(null: no lower bound)."
    )


class PolicyConfig(Section):
    tiers: list[TierBand] = Field(
        default_factory=lambda: [
            TierBand(name="no_action", min_expected_value_usd=None),
            TierBand(name="monitor", min_expected_value_usd=-5.0),
            TierBand(name="contact", min_expected_value_usd=0.0),
            TierBand(name="priority_contact", min_expected_value_usd=40.0),
        ]
    )
    bootstrap_resamples: int = Field(500, ge=50, description="Resamples for profit spread.")

    @model_validator(mode="after")
    def _one_open_band(self) -> PolicyConfig:
        if sum(t.min_expected_value_usd is None for t in self.tiers) != 1:
            raise ValueError(
                "policy.tiers needs exactly one band with min_expected_value_usd: null"
            )
        return self


class BootstrapConfig(Section):
    resamples: int = Field(1000, ge=100, description="Paired bootstrap resamples.")
    seed: int = 11
    confidence: float = Field(0.95, gt=0.5, lt=1)
    max_rows: int = Field(
        100_000,
        gt=0,
        description="Resample a seeded subsample of at most this many rows (recorded as "
        "such) to cap memory and time: each resample costs a pass over the rows, and at "
        "100,000 rows the standard error of a rate or of a profit per customer is already "
        "about 1/316 of its spread (rows).",
    )
    chunk_resamples: int = Field(100, gt=0, description="Resamples drawn per chunk.")


MARGIN_SHARE_DOC = (
    "as a share (0-1) of the profit at stake: the profit per customer of perfect information "
    "(contact exactly the churners worth saving) on the same rows, so it scales with the economics"
)


class BaselineGateConfig(Section):
    enabled: bool = True
    min_pr_auc_gain: float = Field(
        0.0,
        description="Ranking superiority: the lower bound of the PR-AUC gain over the best "
        "baseline must exceed this (PR-AUC units, 0-1).",
    )
    profit_margin_share: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="Profit non-inferiority: the lower bound of (candidate - best baseline) "
        "profit per customer must exceed -margin, with the margin " + MARGIN_SHARE_DOC + ".",
    )
    power: float = Field(
        0.8,
        gt=0,
        lt=1,
        description="Power used to report how many rows it would take to show a given gain.",
    )


class BusinessGateConfig(Section):
    enabled: bool = True
    min_profit_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="The lower bound of the policy's profit per customer must exceed this "
        "share of the profit at stake (0: it must be shown to make money at all).",
    )
    contact_all_margin_share: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="Non-inferiority to contacting everyone: the lower bound of the gain over "
        "contact-all must exceed -margin, with the margin " + MARGIN_SHARE_DOC + ".",
    )


class CalibrationGateConfig(Section):
    enabled: bool = True
    max_ece: float = Field(
        0.03,
        gt=0,
        description="ECE ceiling on the whole test split, above the noise floor "
        "(median ECE of a perfectly calibrated model at the same size; probability units).",
    )
    alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Significance of the ECE-vs-ideal test (family-wise over the overall "
        "split and its supported segments, Bonferroni).",
    )
    simulations: int = Field(500, ge=100, description="Parametric bootstrap draws.")
    max_ece_excess: float = Field(
        0.01,
        ge=0,
        description="ECE may exceed the (1 - alpha) quantile of a perfectly "
        "calibrated model's ECE at the same sample size by at most this (overall and per "
        "supported segment; probability units).",
    )
    log_loss_margin: float = Field(
        0.002, ge=0, description="Calibrated log loss may exceed raw by at most this (nats)."
    )


class ThresholdGateConfig(Section):
    enabled: bool = True
    resamples: int = Field(200, ge=20, description="Bootstrap re-optimisations of the cut-off.")
    max_profit_loss_share: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Moving the cut-off anywhere within its bootstrap interval may lose at "
        "most this much expected profit per customer, " + MARGIN_SHARE_DOC + ".",
    )
    min_contact_rate: float = Field(0.005, ge=0, description="Contacting fewer fails (0-1).")
    max_contact_rate: float = Field(0.995, le=1, description="Contacting more fails (0-1).")


class SegmentsGateConfig(Section):
    enabled: bool = True
    min_segment_rows: int = Field(200, ge=1)
    min_roc_auc: float = Field(0.6, description="ROC-AUC floor for each supported segment.")
    recall_margin: float = Field(
        0.15, ge=0, description="Segment recall may fall below overall recall by this much."
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="Family-wise error rate (Holm).")
    max_ece_excess: float = Field(
        0.03,
        ge=0,
        description="Per-segment ECE may exceed its ideal (1 - alpha) quantile by at most this "
        "(alpha of the calibration gate, Bonferroni over the supported segments).",
    )


class StabilityGateConfig(Section):
    enabled: bool = True
    n_splits: int = Field(5, ge=2)
    n_repeats: int = Field(2, ge=1)
    alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="The fold spread is compared with the (1 - alpha) quantile of the spread "
        "that sampling noise alone produces at the fold size (chi-square on k - 1 folds).",
    )
    max_std_ratio: float = Field(
        1.5,
        ge=1,
        description="The std of fold ROC-AUC and of fold profit may exceed that noise "
        "quantile by at most this factor (unitless).",
    )
    calibration_share: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share (0-1) of each fold's fitting rows held back to fit its calibrator.",
    )
    max_rows: int = Field(
        50_000,
        gt=0,
        description="Folds use a seeded subsample of at most this many rows (each of the "
        "n_splits x n_repeats folds refits the candidate on (n_splits - 1)/n_splits of them; "
        "the noise bound the spread is judged against is computed at the fold size, so the "
        "cap sets the cost, not the test's validity) (rows).",
    )


class ErrorCostGateConfig(Section):
    enabled: bool = True
    margin_share: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="Non-inferiority: the upper bound of (candidate - best baseline) error "
        "cost per customer must stay below the margin, " + MARGIN_SHARE_DOC + ".",
    )
    max_segment_fn_cost_multiple: float = Field(
        2.0,
        gt=0,
        description="A supported segment fails when its false-negative cost per customer is "
        "significantly (Holm, alpha below) above this multiple of the overall one.",
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="Family-wise error rate (Holm).")


class TechnicalGateConfig(Section):
    enabled: bool = True
    max_cpu_ms_per_row: float = Field(
        50.0,
        gt=0,
        description="Single-row prediction cost in CPU milliseconds (the minimum over repeated "
        "batches in a fresh process, so a busy machine does not change it).",
    )
    max_artifact_mb: float = Field(200.0, gt=0, description="Serialized model size (MB).")
    latency_rows: int = Field(100, gt=0, description="Single-row predictions per timed batch.")
    latency_repeats: int = Field(3, ge=1, description="Timed batches; the minimum is judged.")
    reload_rows: int = Field(2000, gt=0, description="Rows compared after reload.")
    fast_scorer_tolerance: float = Field(
        1e-6, gt=0, description="Largest |p_fast - p_sklearn| allowed on the test split."
    )


class ChampionGateConfig(Section):
    enabled: bool = True
    profit_margin_share: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="Non-inferiority: the lower bound of (challenger - champion) profit per "
        "customer must exceed -margin, with the margin " + MARGIN_SHARE_DOC + ".",
    )


class RobustnessGateConfig(Section):
    enabled: bool = True
    noise_sd_share: float = Field(
        0.05,
        gt=0,
        description="Gaussian noise on every numeric feature, as a share of the "
        "feature's standard deviation on test.",
    )
    perturbed_row_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Share of test rows set missing / given an unseen "
        "category, one feature at a time.",
    )
    max_flip_rate: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Largest share of customers whose contact decision "
        "flips under any one perturbation.",
    )
    max_profit_drop_share: float = Field(
        0.1,
        gt=0,
        description="Largest drop of policy profit per customer under any one perturbation, "
        + MARGIN_SHARE_DOC
        + ".",
    )
    max_rows: int = Field(
        100_000,
        gt=0,
        description="A larger test split is perturbed on a label-stratified seeded sample of "
        "this many rows (recorded as sampled_rows): every perturbation re-scores its rows, and "
        "a flip rate's standard error at 100,000 rows is under 0.001 (rows).",
    )


class GatesConfig(Section):
    baseline: BaselineGateConfig = BaselineGateConfig()
    business: BusinessGateConfig = BusinessGateConfig()
    calibration: CalibrationGateConfig = CalibrationGateConfig()
    threshold: ThresholdGateConfig = ThresholdGateConfig()
    segments: SegmentsGateConfig = SegmentsGateConfig()
    stability: StabilityGateConfig = StabilityGateConfig()
    error_cost: ErrorCostGateConfig = ErrorCostGateConfig()
    technical: TechnicalGateConfig = TechnicalGateConfig()
    champion: ChampionGateConfig = ChampionGateConfig()
    robustness: RobustnessGateConfig = RobustnessGateConfig()


class ImpactConfig(Section):
    """Measured retention impact from randomized outcomes (``tasks.impact``): the holdout
    (never contacted) against the group assigned to contact, among customers the policy would
    contact."""

    confidence: float = Field(
        0.95, gt=0.5, lt=1, description="Two-sided confidence level (0-1) of every interval."
    )
    min_segment_customers: int = Field(
        100,
        ge=1,
        description="A segment is reported only with at least this many customers in each arm "
        "(holdout and assigned).",
    )
    conservative: Literal["lower_bound", "posterior", "point"] = Field(
        "lower_bound",
        description="Save rate handed to a policy update: the interval's lower bound, the mean "
        "of a Beta posterior shrunk towards economics.save_rate, or the point estimate.",
    )
    prior_strength_customers: float = Field(
        400.0,
        gt=0,
        description="Weight of the configured save rate in the Beta posterior, in "
        "pseudo-customers (the posterior mean moves halfway to the data when the data carry "
        "as much information).",
    )
    min_save_rate: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Floor (0-1) of the save rate handed to a policy update when the evidence "
        "shows no positive effect (economics.save_rate must be positive).",
    )
    cace_resamples: int = Field(
        2000, ge=100, description="Parametric bootstrap draws for the complier (CACE) interval."
    )
    seed: int = 17


class UpliftGatesConfig(Section):
    """Gates of a treatment-effect (uplift) candidate, judged on randomized rows held out from
    fitting (``tasks.gates.uplift``)."""

    enabled: bool = True
    min_qini_gain: float = Field(
        0.0,
        description="The lower bound of the Qini-coefficient gain of the uplift ranking over the "
        "churn-risk ranking must exceed this (retained customers per customer, 0-1 scale).",
    )
    min_profit_gain_usd: float = Field(
        0.0,
        description="The lower bound of the incremental profit per customer (USD) of the uplift "
        "policy over the current policy must exceed this.",
    )
    calibration_deciles: int = Field(
        10, ge=2, le=50, description="Bins (by predicted effect) of the effect calibration check."
    )
    calibration_alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Level of the chi-square test that the predicted effect per bin matches the "
        "observed effect (holdout vs assigned churn); fails when p < alpha.",
    )


class UpliftConfig(Section):
    """Treatment-effect candidates (``tasks.uplift``) fitted on randomized outcomes."""

    learners: list[Literal["t_learner", "x_learner"]] = Field(
        ["t_learner", "x_learner"], min_length=1, description="Uplift learners fitted."
    )
    base_model: Literal["logistic_regression", "random_forest", "gradient_boosting"] = Field(
        "gradient_boosting", description="candidates.* model each learner's outcome models use."
    )
    min_randomized_customers: int = Field(
        2000,
        ge=10,
        description="Fewest customers in the smaller arm (holdout or assigned) before uplift "
        "candidates are fitted.",
    )
    evaluation_share: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="Share (0-1) of randomized customers held out from fitting to judge the "
        "uplift gates.",
    )
    gates: UpliftGatesConfig = UpliftGatesConfig()
    seed: int = 19


class PromotionConfig(Section):
    model_name: str = "churn-risk"
    register_as: Literal["champion", "challenger"] = Field(
        "champion",
        description="challenger: a passing candidate is registered with alias "
        "'challenger' and scored on the champion's stored decisions (monitoring or "
        "`bayespilot challenger-score`) instead of replacing it.",
    )
    experiment: str = "churn-promotion"
    lock_timeout_s: float = Field(60.0, gt=0, description="Wait for the record lock (seconds).")


class MonitoringConfig(Section):
    """Drift alerts: a two-sample test per feature, the score and the contact rate, Holm over
    all of them at ``drift_alpha``; a significant test alerts when its effect reaches the
    floor below (``tasks/monitor.py`` states the rule in every monitoring record)."""

    drift_alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Family-wise false-alarm rate (probability) of one day's drift tests.",
    )
    psi_alert: float = Field(
        0.2,
        gt=0,
        description="Effect floor (PSI) for a significant categorical or discrete feature.",
    )
    ks_alert: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Effect floor (KS statistic, 0-1) for a significant continuous feature or "
        "the score.",
    )
    contact_rate_alert: float = Field(
        0.1,
        gt=0,
        description="Effect floor: absolute change of the contact rate (0-1) that, when "
        "significant, raises an alert.",
    )
    reference_sample_rows: int = Field(
        2000,
        ge=50,
        description="Training values kept per continuous feature (and test scores) in the "
        "record, as the KS test's reference sample (rows, seeded).",
    )
    discrete_max_values: int = Field(
        20,
        ge=1,
        description="A numeric feature with at most this many distinct training values is "
        "tested on its counts (chi-square), not with KS (which assumes no ties).",
    )
    reference_seed: int = Field(7, description="Seed of the reference sample.")
    window_sample_rows: int = Field(
        200_000,
        ge=1000,
        description="Monitoring reads the window's decisions in one streaming pass: counts "
        "(chi-square tests, contact rate, score bins) and outcome joins use every row; the KS "
        "tests and the skew join use a seeded sample of at most this many rows (rows).",
    )
    profit_decay_alert: float = Field(
        0.3,
        gt=0,
        description="Alert when the realised profit's upper bound is this share "
        "below the profit the promotion expected.",
    )
    calibration_gap_alert: float = Field(
        0.05, gt=0, description="Alert when mean predicted and observed churn differ by more."
    )
    calibration_bins: int = Field(10, ge=2)
    min_segment_rows: int = Field(100, ge=1)
    min_rows: int = Field(200, ge=1, description="Logged predictions needed to judge drift.")
    retrain: Literal["off", "inline", "deployment"] = Field(
        "off",
        description="On an alert: nothing, run the promotion pipeline in-process, or "
        "start the promotion deployment (run_deployment).",
    )
    deployment: str = Field("churn-promotion/adhoc", description="Deployment to start.")
    contacted_column: str = Field(
        "contacted",
        min_length=1,
        description="Column of an outcomes file saying whether each customer was actually "
        "contacted (true/false, 1/0, yes/no), used when the file has it (`bayespilot outcomes "
        "--contacted-column` makes one required); measures non-compliance (CACE).",
    )
    impact_min_events: int = Field(
        10,
        ge=1,
        description="Fewest churners and fewest stayers (customers) in each arm of the holdout "
        "experiment (holdout, assigned; among customers the policy would contact) before the "
        "measured save rate counts as evidence for policy-update --from-outcomes (what the "
        "normal approximation of its interval needs).",
    )
    score_challenger: bool = Field(
        True,
        description="Each monitoring run first scores the active challenger, in batch, on "
        "the window's stored champion decisions not scored yet (the evidence "
        "promote-challenger gates on); off: only `bayespilot challenger-score` does.",
    )
    challenger_batch_rows: int = Field(
        65_536,
        ge=1,
        description="Stored champion decisions (rows) read and scored per batch by the "
        "challenger scoring: memory grows with this, not with the window.",
    )


class ExplainConfig(Section):
    enabled: bool = True
    repeats: int = Field(5, ge=1, description="Permutation repeats per feature.")
    max_rows: int = Field(
        10_000,
        gt=0,
        description="Test rows used (seeded subsample). Each feature costs repeats passes "
        "of the model over them (rows).",
    )
    top_features: int = Field(10, ge=1)
    top_slices: int = Field(5, ge=1)
    min_slice_rows: int = Field(100, ge=1, description="Smallest slice reported (rows).")


class TrainSampleCheckConfig(Section):
    """A learning-curve check run only when the train split was sampled (``scale``): the
    chosen candidate is refitted on a label-stratified seeded half of its train rows and both
    fits score the selection split (raw probabilities). The record's ``data.plan.train.
    sample_check`` states both log losses, the paired gain of the full sample over the half
    and its standard error, both ROC-AUCs, and whether the curve is still ``climbing``:
    the full sample beats the half by more than ``z`` standard errors AND by more than
    ``min_relative_gain`` of the full sample's log loss. Evidence only: no gate or decision
    reads it. It costs one more fit of the chosen candidate on half the sample."""

    enabled: bool = Field(
        True, description="Run the check when the train split was sampled (off: never)."
    )
    z: float = Field(
        2.0,
        gt=0,
        description="Standard errors of the paired per-row log-loss difference (selection "
        "rows) the full sample's gain over the half must exceed to count as climbing "
        "(standard errors).",
    )
    min_relative_gain: float = Field(
        0.005,
        ge=0,
        lt=1,
        description="Practical threshold: doubling the train rows (half -> full sample) that "
        "lowered the selection log loss by less than this share of the full sample's log "
        "loss is not climbing, however significant (share of log loss, 0-1; 0.005 = 0.5 %).",
    )
    seed: int = Field(29, description="Seed of the half sample (label-stratified).")
    max_selection_rows: int = Field(
        200_000,
        gt=0,
        description="The two fits are compared on at most this many selection rows (a "
        "label-stratified seeded sample when the judged selection split has more): the "
        "standard error of the gain is already a few ten-thousandths of a nat there, and "
        "each row costs a pass of the half-sample model (rows).",
    )


class ScaleConfig(Section):
    """Large tables: candidates train on a sample, calibration, selection and the gates judge
    on enough rows, and the data passes work in chunks. Nothing here changes a run whose splits
    are at or below the thresholds (the default 20k run uses every row, as before).

    The size rule: a split larger than its cap is replaced by a seeded sample of exactly the
    cap, stratified by label (each class keeps its share, rounded), drawn from that split only
    (so train, selection and test stay disjoint). The record's ``data.plan`` states, per split,
    the rows available, the rows used, the seed and the reason. The caps are compute budgets,
    not statistics fitted to any data set: a model with a few dozen features gains little past
    about a hundred thousand fitting rows, while cross-fitted calibration costs ``cv_folds``
    more fits on every fitting row; the judging caps keep a standard error of a rate or of a
    profit per customer under about 1/sqrt(cap) of its spread (0.1 % at 1M rows). Raise them
    where a learning curve on your data still climbs (``train_sample_check`` measures it on
    every sampled run). The existing per-stage caps still apply inside
    the sample: ``candidates.random_forest.max_train_rows``, ``bootstrap.max_rows``,
    ``gates.stability.max_rows``, ``explain.max_rows``."""

    train_sample_above_rows: int = Field(
        200_000,
        gt=0,
        description="When the train split has more than this many rows, candidates, their "
        "cross-fitted calibrators, the baselines, stability folds and the monitoring reference "
        "use a label-stratified seeded sample of train_sample_rows train rows (rows).",
    )
    train_sample_rows: int = Field(
        100_000, gt=0, description="Size of that train sample (rows); at most the threshold."
    )
    judge_max_rows: int = Field(
        1_000_000,
        gt=0,
        description="Selection and test splits above this many rows are judged (calibration "
        "method, candidate and policy selection, the gates) on a label-stratified seeded "
        "sample of this many rows each (rows).",
    )
    calibration_max_rows: int = Field(
        50_000,
        gt=0,
        description="Calibrators fit on the out-of-fold scores of at most this many of a "
        "candidate's train rows (a label-stratified seeded sample when it has more; recorded "
        "in the calibration reason). The cross-fit then takes ceil(cv_folds x this / train "
        "rows) folds (at least 2) whose models fit on all the other train rows, so no fold "
        "model sees less than (cv_folds - 1)/cv_folds of train, as in the full cross-fit. A "
        "calibrator has 2 (sigmoid) to 2 x (1 + segment levels) (segment_sigmoid) parameters; "
        "at this size the standard error of a calibrated rate of 0.3 is 0.002 overall and "
        "about 0.015 in a segment holding 2 % of the rows (rows).",
    )
    seed: int = Field(17, description="Seed of the samples (split seed-independent).")
    chunk_rows: int = Field(
        250_000,
        gt=0,
        description="Rows per chunk for validation and data hashing (memory per chunk grows "
        "with it; results do not depend on it).",
    )
    evidence_threads: int = Field(
        2,
        ge=1,
        description="Threads that compute a stage's independent pieces of evidence at once: "
        "the calibration cross-fit folds, the gates, the robustness perturbations, the "
        "permutation-importance features "
        "(threads; NumPy and the models release the GIL). Results do not depend on it; "
        "memory grows with it (one gate's bootstrap chunk per thread).",
    )
    fit_processes: int = Field(
        2,
        ge=0,
        description="Worker processes the evidence refits run in: the calibration cross-fit "
        "folds, the stability folds and the train sample check (model fits whose "
        "Python-level work would otherwise queue on the flow process's interpreter lock "
        "beside every other stage); 0 runs them in threads of the flow process. With "
        "scaleout.engine dask the folds run on the cluster instead. Results do not depend "
        "on it (processes).",
    )
    train_sample_check: TrainSampleCheckConfig = Field(
        default_factory=TrainSampleCheckConfig,
        description="Whether a sampled train split was large enough (a learning-curve "
        "check; evidence in the record, never a gate).",
    )

    @model_validator(mode="after")
    def _sample_within_threshold(self) -> ScaleConfig:
        if self.train_sample_rows > self.train_sample_above_rows:
            raise ValueError(
                "scale.train_sample_rows must be <= scale.train_sample_above_rows (a table "
                "just above the threshold would otherwise be sampled to more rows than it has)"
            )
        return self


class ScaleOutConfig(Section):
    """Where concurrent task runs (candidates, calibration, stability folds) execute."""

    engine: Literal["threads", "dask"] = Field(
        "threads",
        description="threads: Prefect's thread pool in the flow process; dask: a Parquet "
        "table is loaded, validated and split on partitions on a Dask cluster (the flow "
        "process receives summaries, the label vector and the sampled split rows) and the "
        "concurrent task runs use prefect-dask's DaskTaskRunner on the same cluster.",
    )
    max_threads: int = Field(4, ge=1, description="Thread-pool width for concurrent tasks.")
    dask_address: str | None = Field(
        None,
        description="Scheduler address (tcp://host:8786) of an existing cluster; null "
        "starts a distributed.LocalCluster for the run.",
    )
    dask_workers: int = Field(2, ge=1, description="LocalCluster worker processes.")
    dask_threads_per_worker: int = Field(1, ge=1)
    dask_memory_limit: str | None = Field(
        None,
        description="Memory limit per worker of a LocalCluster started for the run, as Dask "
        "reads it (bytes or a string such as '2GiB'); null: Dask's default (the machine's "
        "memory shared among the workers). Unused with dask_address.",
    )
    dask_partition_rows: int = Field(
        500_000,
        gt=0,
        description="With engine dask, a Parquet table is read on the workers in partitions of "
        "consecutive row groups of about this many rows each (rows; a row group is never "
        "split), and a CSV table is staged as Parquet in row groups of this many rows. Worker "
        "memory per data task grows with it; results do not depend on it.",
    )


class BackendsConfig(Section):
    """Where MLflow and Prefect keep their state. Null: SQLite files in the workspace."""

    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking + registry store, e.g. "
        "postgresql+psycopg2://user:pass@127.0.0.1:5432/mlflow (artifacts stay in the workspace).",
    )
    prefect_database_url: str | None = Field(
        None,
        description="Database of the embedded (ephemeral) Prefect API, e.g. "
        "postgresql+asyncpg://user:pass@127.0.0.1:5432/prefect. A separate `prefect server` "
        "takes PREFECT_API_DATABASE_CONNECTION_URL itself.",
    )
    prefect_startup_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Seconds a Prefect-run command waits for its embedded Prefect API server "
        "(started as a child that dies with the command) to answer; unused when "
        "PREFECT_API_URL names a server.",
    )


class ServingConfig(Section):
    host: str = Field("127.0.0.1", description="Bind address of `bayespilot serve`.")
    port: int = Field(8000, ge=0, le=65535)
    workers: int | None = Field(
        None,
        ge=1,
        description="uvicorn worker processes (null: one per CPU core; scoring is "
        "CPU-bound and each worker runs one OpenMP thread).",
    )
    reload_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often (seconds) each worker runs the full check even when nothing "
        "changed: the chain, the MLflow alias and the artifact and policy hashes.",
    )
    watch_interval_s: float = Field(
        0.2,
        gt=0,
        description="How often (seconds) each worker stats the signed chain head marker and "
        "the serving generation file (written by /v1/admin/reload) and re-checks when "
        "either changed: a promotion, rollback or reload reaches every worker this fast.",
    )
    restart_backoff_s: float = Field(
        0.5,
        gt=0,
        description="`bayespilot serve` restarts a crashed worker after "
        "this delay (seconds), doubled for each further crash of the same process within "
        "crash_window_s, up to restart_backoff_max_s.",
    )
    restart_backoff_max_s: float = Field(
        10.0, gt=0, description="Longest delay (seconds) before restarting a crashed process."
    )
    crash_loop_restarts: int = Field(
        5,
        ge=1,
        description="A process that crashes more than this many times within crash_window_s "
        "makes `bayespilot serve` stop every process and exit 1 (a crash loop).",
    )
    crash_window_s: float = Field(
        60.0, gt=0, description="Window (seconds) in which crashes count toward a crash loop."
    )
    max_batch_customers: int = Field(1000, ge=1, description="Customers per /v1/score call.")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Largest request body (bytes).")
    log_inputs: Literal["full", "hashed", "none"] = Field(
        "full",
        description="What the decision store keeps of each decision (HTTP and batch): full (every "
        "feature value and the id), hashed (each value and the id as a keyed HMAC-SHA256 "
        "with the workspace's secret log key: equal values stay equal, outcome joins work, "
        "drift on inputs and challenger scoring do not) or none (no feature values; the id "
        "hashed, so outcomes still join). Both keep the policy's customer value column raw "
        "(realised profit needs it).",
    )
    log_file_mode: str = Field(
        "0600",
        pattern=r"^0?[0-7]{3}$",
        description="Permission bits (octal) of every decision-store file (HTTP, batch and "
        "challenger decisions) when created.",
    )
    max_imputed_share: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Share (0-1) of the model's features a customer may leave missing; "
        "one with more missing is refused (422, listing the missing fields) rather than "
        "scored on imputed values.",
    )
    max_abs_feature_value: float = Field(
        1e12,
        gt=0,
        description="Largest absolute value (in the feature's unit) accepted for a numeric "
        "input; larger ones (1e308, which overflows in the model's arithmetic) are refused.",
    )
    admin_token_env: str = Field(
        "BAYESPILOT_ADMIN_TOKEN",
        description="Environment variable holding the bearer token "
        "for /v1/admin/*; admin routes are disabled when it is unset.",
    )
    check_registry_alias: bool = Field(
        True, description="Cross-check the record's champion against the MLflow alias."
    )
    batch_chunk_rows: int = Field(200_000, ge=1, description="Rows per chunk in batch scoring.")
    batch_threads: int = Field(
        1,
        ge=1,
        description="Threads that score batch chunks at the same time, beside the thread that "
        "reads and writes and the decision writer's thread (reading, scoring and writing "
        "always overlap; about this many + 1 chunks of batch_chunk_rows rows are in memory). "
        "More than 1 helps only on idle cores: much of scoring holds Python's GIL.",
    )
    holdout_share: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Share (0-1) of customers held out of contact in the randomized holdout "
        "experiment (issue 17; serving/experiment.py states the assignment rule). It takes "
        "effect only together with serving.experiment_id; 0 switches the holdout off. "
        "A share without an experiment id: no holdout (logged once at start).",
    )
    experiment_id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Id of the running holdout experiment, hashed with each customer id to "
        "assign the holdout (a new id draws a new holdout). Set together with "
        "holdout_share > 0; an id with holdout_share 0 is a config error.",
    )

    @model_validator(mode="after")
    def _experiment_has_a_holdout(self) -> ServingConfig:
        if self.experiment_id is not None and self.holdout_share == 0:
            raise ValueError(
                "serving.experiment_id is set but serving.holdout_share is 0: an experiment "
                "without a holdout measures nothing; set holdout_share > 0 (e.g. 0.05) or "
                "remove experiment_id"
            )
        return self


class DecisionsConfig(Section):
    """The decision store (tasks/decision_store.py): every HTTP, batch and challenger decision
    in hourly Parquet partitions under the workspace's decisions/."""

    retention_days: float = Field(
        30.0,
        gt=0,
        description="Hour partitions that ended more than this many days ago are deleted "
        "(at service start, hourly by each serving worker, and by `bayespilot monitor`).",
    )
    flush_rows: int = Field(
        50_000,
        ge=1,
        description="A serving worker writes its buffered decisions once it holds this many "
        "rows; with flush_interval_s the most a killed worker can lose (rows).",
    )
    flush_interval_s: float = Field(
        10.0,
        gt=0,
        description="A serving worker writes its buffered decisions at the latest this many "
        "seconds after the first one; the most a killed worker can lose (seconds).",
    )
    batch_flush_rows: int = Field(
        500_000,
        ge=1,
        description="Batch `score` writes its decisions in files of this many rows; it holds "
        "at most about three times this many decision rows in memory (rows).",
    )
    compression: Literal["zstd", "snappy", "lz4", "none"] = Field(
        "zstd", description="Parquet compression codec of the decision files."
    )


class SigningConfig(Section):
    """Promotion-record signatures (Ed25519). Paths null: the defaults under
    $XDG_CONFIG_HOME/bayespilot (~/.config/bayespilot), outside the workspace."""

    private_key_path: str | None = Field(
        None,
        description="PEM private key that signs records (null: "
        "$XDG_CONFIG_HOME/bayespilot/promotion-key.pem). Keep it outside the workspace.",
    )
    key_env: str = Field(
        "BAYESPILOT_SIGNING_KEY",
        description="Environment variable that, when set, holds the private key (PEM text) "
        "or a path to it and overrides private_key_path (CI, secret managers).",
    )
    create_key: bool = Field(
        True,
        description="Create the private key (mode 0600) on the first signed append when it is "
        "missing. The service never creates one.",
    )
    trusted_keys_dir: str | None = Field(
        None,
        description="Folder of trusted public keys (*.pub); signers publish theirs here "
        "(null: $XDG_CONFIG_HOME/bayespilot/trusted).",
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description="More trusted public keys: .pub files or folders of them.",
    )
    trust_workspace_keys: bool = Field(
        False,
        description="Also trust <workspace>/keys/*.pub. Only for a workspace nobody else can "
        "write: whoever can write it could add a key of their own.",
    )
    state_dir: str | None = Field(
        None,
        description="Folder of the newest record each chain was seen at, kept outside the "
        "workspace so a chain cut back to an older, validly signed state is refused (null: "
        "$XDG_STATE_HOME/bayespilot/chains).",
    )


class BayesPilotConfig(Section):
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    split: SplitConfig = SplitConfig()
    validation: ValidationConfig = ValidationConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    economics: EconomicsConfig = EconomicsConfig()
    policy: PolicyConfig = PolicyConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    gates: GatesConfig = GatesConfig()
    promotion: PromotionConfig = PromotionConfig()
    impact: ImpactConfig = ImpactConfig()
    uplift: UpliftConfig = UpliftConfig()
    serving: ServingConfig = ServingConfig()
    backends: BackendsConfig = BackendsConfig()
    scaleout: ScaleOutConfig = ScaleOutConfig()
    scale: ScaleConfig = ScaleConfig()
    explain: ExplainConfig = ExplainConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    signing: SigningConfig = SigningConfig()
    decisions: DecisionsConfig = DecisionsConfig()
    # dotted ``economics`` keys given for this run by the environment or ``--set`` (not the
    # YAML file): set by ``load_config``, not part of the dumped config or its hash
    _explicit_economics: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @property
    def explicit_economics(self) -> frozenset[str]:
        """Economics keys (dotted, below ``economics``) set by the environment or an override
        rather than the config file (``tasks/economics.py`` decides what that means)."""
        return self._explicit_economics

    def mlflow_uri(self) -> str:
        """The MLflow tracking/registry URI: the configured backend or the workspace SQLite."""
        from configs.paths import Workspace

        return (
            self.backends.mlflow_tracking_uri
            or Workspace.from_setting(self.paths.workspace).mlflow_tracking_uri
        )

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-ready data with secrets masked (see ``redact_secrets``): what
        records store, ``bayespilot config`` prints and logs show."""
        return redact_secrets(self.model_dump(mode="json"))

    def canonical_json(self) -> str:
        """The redacted config as sorted, compact JSON (what its hash is taken over), so a
        record never carries, nor lets anyone confirm a guess of, a password or token."""
        return json.dumps(self.redacted(), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


REDACTED = "***"
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^@\s/]*)@")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key)=)"
    r"(?P<pw>[^&;#\s]*)",
    re.IGNORECASE,
)
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_?key|credential)", re.IGNORECASE)


def redact_uri(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` and every
    ``?password=``/``token=``/``secret=``/``api_key=`` query value replaced by ``***``."""
    text = _URI_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['head']}{REDACTED}", text)


def redact_secrets(tree: Any) -> Any:
    """A copy of JSON-like ``tree`` with secrets masked: passwords inside URIs (any string
    value), and the whole value of a key naming a secret (password, secret, token, api key,
    credential), except keys ending in ``_env``, which name an environment variable rather
    than hold its value. The one place redaction happens (records, printed config, logs)."""
    if isinstance(tree, Mapping):
        return {
            k: REDACTED
            if isinstance(k, str)
            and _SECRET_KEY.search(k)
            and not k.endswith("_env")
            and tree[k] not in (None, "")
            and not isinstance(tree[k], Mapping | list)
            else redact_secrets(tree[k])
            for k in tree
        }
    if isinstance(tree, list):
        return [redact_secrets(v) for v in tree]
    if isinstance(tree, str):
        return redact_uri(tree)
    return tree


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {text!r}: {exc}") from exc


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ConfigError(f"{origin}: empty key")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: '{part}' in '{dotted}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``section.key=value`` strings into a nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects section.key=value, got {pair!r}")
        key, _, raw = pair.partition("=")
        _set_dotted(tree, key.strip(), _parse_scalar(raw), f"--set {pair!r}")
    return tree


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collect ``BAYESPILOT__SECTION__KEY=value`` variables and ``BAYESPILOT_HOME``."""
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            dotted = ".".join(p.lower() for p in name[len(ENV_PREFIX) :].split("__"))
            _set_dotted(tree, dotted, _parse_scalar(raw), f"environment {name}")
    home = environ.get(HOME_ENV)
    if home:
        _set_dotted(tree, "paths.workspace", home, f"environment {HOME_ENV}")
    return tree


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the section at ``loc`` accepts (empty when ``loc`` is not a section)."""
    model: Any = BayesPilotConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
        if item["type"] == "extra_forbidden":
            known = _known_keys(tuple(item["loc"][:-1]))
            close = difflib.get_close_matches(str(item["loc"][-1]), known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            lines.append(f"{key}: unknown key{hint}")
        else:
            msg = str(item["msg"]).removeprefix("Value error, ")
            lines.append(f"{key}: {msg} (got {item.get('input')!r})")
    return "; ".join(lines)


def build_config(*layers: Mapping[str, Any]) -> BayesPilotConfig:
    """Merge layers (lowest precedence first) and validate them into a config tree."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer)
    try:
        return BayesPilotConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_describe(exc)}") from None


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> BayesPilotConfig:
    """Load the config: defaults < YAML ``path`` < environment < ``overrides``."""
    file_layer: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections")
        file_layer = loaded
    env_layer = env_overrides(os.environ if environ is None else environ)
    override_layer = parse_overrides(overrides)
    config = build_config(file_layer, env_layer, override_layer)
    config._explicit_economics = frozenset(
        key
        for layer in (env_layer, override_layer)
        for key in _dotted_keys(layer.get("economics") or {})
    )
    return config


def _dotted_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        out.extend(_dotted_keys(value, dotted) if isinstance(value, Mapping) else [dotted])
    return out
