"""Monitoring's realised-outcome figures under treatment (tasks/monitor.py::outcome_metrics):
a delivered contact changes the label, so calibration is judged on customers not contacted and
realised profit comes from the randomized holdout when there is one. Simulated campaigns with
a known treatment response (tasks/simulate_campaign.py) give the truth to check against."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from configs.settings import (
    BootstrapConfig,
    EconomicsConfig,
    ImpactConfig,
    MonitoringConfig,
    TreatmentResponseConfig,
)
from tasks.generate_data import LABEL_COLUMN, TRUTH_COLUMN, generate_data
from tasks.impact import ImpactEstimate, estimate_impact
from tasks.monitor import PROFIT_ASSUMED, PROFIT_HOLDOUT, OutcomeReport, outcome_metrics
from tasks.select_policy import Policy
from tasks.simulate_campaign import P_CONTACTED, P_NOT_CONTACTED, simulate_campaign

VALUE_COLUMN = "monthly_charges_usd"
MULTIPLIER = 12.0  # a year of charges: the value (USD) of keeping a customer
SAVE_RATE = 0.25  # what the policy assumes
COST = 15.0
ROWS = 20_000


def _policy() -> Policy:
    econ = EconomicsConfig(
        save_rate=SAVE_RATE,
        contact_cost_usd=COST,
        customer_value={"column": VALUE_COLUMN, "multiplier": MULTIPLIER},
    )
    return Policy(
        {
            "economics": econ.model_dump(mode="json"),
            "cutoff_expected_value_usd": 0.0,
            "tiers": [
                {"name": "no_action", "min_expected_value_usd": None, "contact": False},
                {"name": "contact", "min_expected_value_usd": 0.0, "contact": True},
            ],
        }
    )


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return generate_data(rows=ROWS, seed=21)


class World:
    """A served day: the model's probability, the policy's decision on it, a simulated
    campaign (holdout, delivery, outcomes from the true response) as monitoring joins it."""

    def __init__(
        self,
        customers: pd.DataFrame,
        *,
        holdout_share: float,
        response: TreatmentResponseConfig,
        probability: np.ndarray | None = None,
        seed: int = 3,
    ) -> None:
        p0 = customers[TRUTH_COLUMN].to_numpy(float)
        self.p = p0 if probability is None else probability
        self.values = customers[VALUE_COLUMN].to_numpy(float) * MULTIPLIER
        self.would = self.p * SAVE_RATE * self.values - COST > 0
        c = simulate_campaign(
            customers,
            config=response,
            holdout_share=holdout_share,
            seed=seed,
            would_contact=self.would,
        )
        f = c.frame
        self.holdout = f["holdout"].to_numpy() & self.would
        self.contacted = f["contacted"].to_numpy()
        self.churned = (f[LABEL_COLUMN] == "yes").to_numpy()
        self.joined = pd.DataFrame(
            {
                "customer_id": f["customer_id"],
                "probability": self.p,
                "action": np.where(self.would & ~self.holdout, "contact", "no_contact"),
                "would_contact": self.would,
                "holdout": self.holdout,
                "experiment_id": "exp",
                "churned": self.churned.astype(int),
                "contacted": self.contacted,
                VALUE_COLUMN: f[VALUE_COLUMN],
                "region": f["region"],
            }
        )
        # the promoted expectation: the policy's profit per customer on a calibrated model
        self.expected = float(np.where(self.would, p0 * SAVE_RATE * self.values - COST, 0).mean())
        gain = (c.truth[P_NOT_CONTACTED] - c.truth[P_CONTACTED]).to_numpy() * self.values - COST
        # what the programme truly earns per customer (every would-contact customer assigned)
        self.true_profit = float(np.where(self.would, c.delivery_rate * gain, 0).mean())

    def impact(self) -> ImpactEstimate:
        return estimate_impact(
            self.churned,
            self.holdout,
            self.values,
            contact_cost_usd=COST,
            config=ImpactConfig(),
            would_contact=self.would,
            contacted=self.contacted,
        )

    def report(self, frame: pd.DataFrame | None = None, *, holdout: bool = True) -> OutcomeReport:
        return outcome_metrics(
            self.joined if frame is None else frame,
            _policy(),
            value_column=VALUE_COLUMN,
            segment_columns=("region",),
            expected_profit=self.expected,
            config=MonitoringConfig(),
            bootstrap=BootstrapConfig(resamples=300),
            impact=self.impact() if holdout else None,
        )

    def label_as_untreated(self) -> tuple[float, float]:
        """The figures read as if no one had been contacted (what monitoring did before):
        profit per customer and mean predicted minus observed churn over all rows."""
        contact = (self.joined["action"] == "contact").to_numpy()
        profit = np.where(contact, self.churned * SAVE_RATE * self.values - COST, 0.0).mean()
        return float(profit), float(self.p.mean() - self.churned.mean())


WORKS = TreatmentResponseConfig(mean_save_rate=0.4, sleeping_dog_share=0.0, delivery_rate=0.9)


def test_outcome_metrics_no_false_alert_when_programme_works(customers: pd.DataFrame) -> None:
    w = World(customers, holdout_share=0.2, response=WORKS)
    naive_profit, naive_gap = w.label_as_untreated()
    # the scenario where reading contacted labels as untreated raised false alerts
    assert naive_profit < (1 - MonitoringConfig().profit_decay_alert) * w.expected
    assert naive_gap > MonitoringConfig().calibration_gap_alert

    r = w.report()
    assert r.alerts == []
    assert r.profit_basis == PROFIT_HOLDOUT and "randomized holdout" in r.profit_note
    assert r.profit_interval is not None
    low, high = r.profit_interval
    assert low <= w.true_profit <= high
    assert r.realised_profit_per_customer_usd == pytest.approx(w.true_profit, rel=0.35)
    # calibration judged on the customers not contacted only
    assert r.treated_rows == int(w.contacted.sum()) and r.contacted_source == "reported"
    assert r.calibration_rows == len(w.joined) - r.treated_rows
    assert r.mean_predicted_churn is not None and r.mean_observed_churn is not None
    assert abs(r.mean_predicted_churn - r.mean_observed_churn) < 0.01
    assert "not contacted" in r.calibration_note
    # precision: the no-contact churn of would-contact customers, seen in the holdout
    truth = w.p[w.would].mean()
    assert r.precision == pytest.approx(truth, abs=0.03)
    assert all(s["untreated_rows"] < s["rows"] for s in r.segments)


def test_outcome_metrics_alerts_when_model_truly_miscalibrated(customers: pd.DataFrame) -> None:
    p0 = customers[TRUTH_COLUMN].to_numpy(float)
    over = np.clip(p0 + 0.12, 0, 0.99)  # the model overstates churn by 12 points
    w = World(customers, holdout_share=0.2, response=WORKS, probability=over)
    r = w.report()
    gap = [a for a in r.alerts if a.startswith("mean predicted churn")]
    assert gap and "not contacted" in gap[0]
    assert r.mean_predicted_churn is not None and r.mean_observed_churn is not None
    assert r.mean_predicted_churn - r.mean_observed_churn == pytest.approx(0.12, abs=0.02)


def test_outcome_metrics_holdout_alerts_when_contacts_do_not_work(
    customers: pd.DataFrame,
) -> None:
    fails = TreatmentResponseConfig(mean_save_rate=0.02, sleeping_dog_share=0.2)
    w = World(customers, holdout_share=0.2, response=fails)
    assert w.true_profit < 0
    r = w.report()
    profit = [a for a in r.alerts if a.startswith("realised profit")]
    assert profit and "randomized holdout" in profit[0]
    assert r.profit_interval is not None and r.profit_interval[1] < w.expected * 0.7
    assert not any(a.startswith("mean predicted churn") for a in r.alerts)


def test_outcome_metrics_without_holdout_states_the_assumed_save_rate(
    customers: pd.DataFrame,
) -> None:
    flat = TreatmentResponseConfig(
        mean_save_rate=SAVE_RATE, save_rate_spread=0.0, sleeping_dog_share=0.0, delivery_rate=1.0
    )
    w = World(customers, holdout_share=0.0, response=flat)
    r = w.report(holdout=False)
    assert r.profit_basis == PROFIT_ASSUMED and r.assumed_save_rate == SAVE_RATE
    assert "assumes the configured save rate 0.25" in r.profit_note
    assert "cannot separate the contact's effect" in r.profit_note
    # contacts worked as assumed: the figure matches what was promoted, no alert
    assert r.realised_profit_per_customer_usd == pytest.approx(w.expected, rel=0.1)
    assert r.alerts == []
    # without delivery reported, the served action counts as the contact made
    r2 = w.report(w.joined.drop(columns=["contacted"]), holdout=False)
    assert r2.contacted_source == "action" and "delivery not reported" in r2.profit_note
    assert r2.realised_profit_per_customer_usd == pytest.approx(r.realised_profit_per_customer_usd)
    assert r2.calibration_rows == int((~w.would).sum())


def test_outcome_metrics_alert_names_the_assumption_without_holdout(
    customers: pd.DataFrame,
) -> None:
    w = World(customers, holdout_share=0.0, response=WORKS)
    decayed = w.joined.assign(churned=0)  # nobody churns: every contact is wasted
    r = w.report(decayed, holdout=False)
    alert = next(a for a in r.alerts if a.startswith("realised profit"))
    assert "assumed save rate 0.25" in alert and "no holdout" in alert


def test_outcome_metrics_unchanged_when_no_contact_was_delivered(
    customers: pd.DataFrame,
) -> None:
    """Outcomes that report no delivered contact are untreated: the figures are the
    label-based ones (every row in calibration, profit at the assumed save rate)."""
    w = World(customers, holdout_share=0.0, response=WORKS)
    frame = w.joined.drop(columns=["would_contact", "holdout", "experiment_id"]).assign(
        contacted=False
    )
    r = w.report(frame, holdout=False)
    y, contact = w.churned.astype(int), w.would
    assert r.treated_rows == 0 and r.calibration_rows == len(frame)
    assert r.realised_profit_per_customer_usd == pytest.approx(
        np.where(contact, y * SAVE_RATE * w.values - COST, 0).mean()
    )
    assert r.precision == pytest.approx(y[contact].mean())
    assert r.recall == pytest.approx(contact[y == 1].mean())
    assert r.mean_observed_churn == pytest.approx(y.mean())
    assert sum(b["rows"] for b in r.calibration) == len(frame)
    assert r.calibration_note == "all rows: no contact delivered"


def test_outcome_metrics_empty_join_keeps_its_shape() -> None:
    r = outcome_metrics(
        pd.DataFrame(),
        _policy(),
        value_column=VALUE_COLUMN,
        segment_columns=(),
        expected_profit=5.0,
        config=MonitoringConfig(),
        bootstrap=BootstrapConfig(),
    )
    assert r.rows == 0 and r.alerts == ["no outcomes joined to logged predictions yet"]
    assert r.realised_profit_per_customer_usd is None and r.assumed_save_rate == SAVE_RATE
