"""Uplift vs churn-risk vs oracle policies, and the measured save rate's coverage, on the
synthetic generator with a known treatment response (``synthetic.treatment`` defaults).

Part 1, per sleeping-dog share (default 0 and 0.1) and seed: 100k customers, half of them a
fully randomized campaign (holdout share ``--train-holdout``) that the uplift learners fit on
(minus ``uplift.evaluation_share`` kept for the uplift gates), the other half the evaluation
population. The churn-risk model is the gradient-boosting candidate fitted on the same half's
historical (no-contact) labels, its policy ``p x save_rate x value - cost > 0`` with the
configured save rate. Each policy's **true** expected incremental profit per customer (USD)
comes from the known effects of the evaluation half: ``mean(contact x delivery x (effect x
value - cost))``; the oracle contacts exactly where that is positive.

Part 2: over ``--coverage-seeds`` fresh populations, a campaign with the churn-risk policy and a
``--holdout`` share measures the ITT save rate among would-contact customers; we report how
often its interval covers the true expected save rate.

    nice -n 10 .venv/bin/python benchmarks/bench_uplift.py
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd

from configs.settings import (
    BootstrapConfig,
    CandidatesConfig,
    DataConfig,
    EconomicsConfig,
    ImpactConfig,
    TreatmentResponseConfig,
    UpliftConfig,
)
from tasks.evaluate import customer_values
from tasks.gates.uplift import UpliftGateInputs, run_uplift_gates
from tasks.generate_data import LABEL_COLUMN, TRUTH_COLUMN, generate_data
from tasks.impact import estimate_impact_frame
from tasks.load_data import ColumnRoles, resolve_roles
from tasks.simulate_campaign import (
    ASSIGNED_COLUMN,
    CONTACTED_COLUMN,
    EFFECT,
    simulate_campaign,
    true_itt_save_rate,
)
from tasks.train_candidates import build_candidate
from tasks.uplift import fit_uplift, uplift_contact

log = logging.getLogger("bench_uplift")
ECON = EconomicsConfig(customer_value={"column": "monthly_charges_usd", "multiplier": 3.0})


def _roles(frame: pd.DataFrame) -> ColumnRoles:
    data = DataConfig(segment_columns=["region", "contract", "acquisition_channel"])
    return resolve_roles(frame.drop(columns=[TRUTH_COLUMN]), data=data)


def true_profit(
    contact: np.ndarray, effect: np.ndarray, values: np.ndarray, delivery: float
) -> float:
    """Expected incremental profit per customer (USD) of assigning ``contact``."""
    return float(np.mean(contact * delivery * (effect * values - ECON.contact_cost_usd)))


def policy_run(
    *,
    rows: int,
    seed: int,
    dogs: float,
    train_holdout: float,
    candidates: CandidatesConfig,
    uplift: UpliftConfig,
    bootstrap: BootstrapConfig,
) -> dict[str, float | str]:
    treatment = TreatmentResponseConfig(sleeping_dog_share=dogs, seed=seed + 1000)
    frame = generate_data(rows=rows, seed=seed)
    roles = _roles(frame)
    rng = np.random.default_rng(seed)
    fit_half = rng.random(rows) < 0.5
    fit, ev = frame[fit_half].reset_index(drop=True), frame[~fit_half].reset_index(drop=True)

    # churn-risk model on historical (no-contact) labels
    risk_model = build_candidate("gradient_boosting", roles, config=candidates)
    risk_model.fit(fit[list(roles.features)], (fit[LABEL_COLUMN] == "yes").to_numpy(int))

    # randomized campaign on the fitting half; the learners see (1 - evaluation_share) of it
    camp = simulate_campaign(fit, config=treatment, holdout_share=train_holdout, seed=seed + 7)
    cf = camp.frame
    y = (cf[LABEL_COLUMN] == "yes").to_numpy(int)
    a = cf[ASSIGNED_COLUMN].to_numpy()
    judge = np.random.default_rng(seed + 3).random(len(cf)) < uplift.evaluation_share
    models = {
        name: fit_uplift(
            name,
            cf[~judge],
            y[~judge],
            a[~judge],
            roles=roles,
            base_model=uplift.base_model,
            config=candidates,
        )
        for name in uplift.learners
    }

    # truth on the evaluation half
    truth_ev = simulate_campaign(ev, config=treatment, holdout_share=0.0, seed=seed).truth
    tau = truth_ev[EFFECT].to_numpy()
    values = customer_values(ev, economics=ECON)
    d = treatment.delivery_rate
    X_ev = ev[list(roles.features)]
    p_risk = risk_model.predict_proba(X_ev)[:, 1]
    risk_contact = p_risk * ECON.save_rate * values - ECON.contact_cost_usd > 0
    oracle_contact = tau * values - ECON.contact_cost_usd > 0
    out: dict[str, float | str] = {
        "dogs": dogs,
        "seed": seed,
        "oracle": true_profit(oracle_contact, tau, values, d),
        "risk": true_profit(risk_contact, tau, values, d),
        "risk_contact_rate": float(risk_contact.mean()),
        "oracle_contact_rate": float(oracle_contact.mean()),
    }
    # gates judged on the held-out randomized rows
    jf = cf[judge]
    j_values = customer_values(jf, economics=ECON)
    j_risk = risk_model.predict_proba(jf[list(roles.features)])[:, 1]
    j_current = j_risk * ECON.save_rate * j_values - ECON.contact_cost_usd > 0
    for name, model in models.items():
        eff = model.predict_effect(X_ev)
        contact = uplift_contact(eff, values, contact_cost_usd=ECON.contact_cost_usd)
        out[name] = true_profit(contact, tau, values, d)
        out[f"{name}_contact_rate"] = float(contact.mean())
        out[f"{name}_effect_corr"] = float(np.corrcoef(eff, tau)[0, 1])
        j_eff = model.predict_effect(jf)
        gates = run_uplift_gates(
            UpliftGateInputs(
                effect=j_eff,
                risk=j_risk,
                current_contact=j_current,
                churned=y[judge],
                assigned=a[judge],
                contacted=cf[CONTACTED_COLUMN].to_numpy()[judge],
                values_usd=j_values,
                contact_cost_usd=ECON.contact_cost_usd,
                cutoff_usd=0.0,
                bootstrap=bootstrap,
                config=uplift.gates,
            )
        )
        out[f"{name}_gates"] = " ".join(
            f"{g.gate.removeprefix('uplift-')}={'pass' if g.passed else 'FAIL'}" for g in gates
        )
    return out


def coverage_run(
    *, rows: int, seeds: int, holdout: float, dogs: float, candidates: CandidatesConfig
) -> pd.DataFrame:
    base = generate_data(rows=rows, seed=10_000)
    roles = _roles(base)
    risk_model = build_candidate("gradient_boosting", roles, config=candidates)
    risk_model.fit(base[list(roles.features)], (base[LABEL_COLUMN] == "yes").to_numpy(int))
    out = []
    for s in range(seeds):
        frame = generate_data(rows=rows, seed=20_000 + s)
        values = customer_values(frame, economics=ECON)
        p = risk_model.predict_proba(frame[list(roles.features)])[:, 1]
        wc = p * ECON.save_rate * values - ECON.contact_cost_usd > 0
        camp = simulate_campaign(
            frame,
            config=TreatmentResponseConfig(sleeping_dog_share=dogs, seed=30_000 + s),
            holdout_share=holdout,
            seed=40_000 + s,
            would_contact=wc,
        )
        est = estimate_impact_frame(
            camp.frame,
            churned_column=LABEL_COLUMN,
            holdout_column="holdout",
            positive_label="yes",
            would_contact_column="would_contact",
            contacted_column=CONTACTED_COLUMN,
            economics=ECON,
            config=ImpactConfig(),
        )
        truth = true_itt_save_rate(camp)
        m = est.overall.save_rate_itt
        out.append(
            {
                "seed": s,
                "true": truth,
                "measured": m.point,
                "low": m.low,
                "high": m.high,
                "covered": m.covers(truth),
                "holdout_customers": est.overall.holdout_customers,
            }
        )
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seeds", type=int, default=3, help="policy comparison seeds per setting")
    ap.add_argument("--dogs", type=float, nargs="+", default=[0.0, 0.1])
    ap.add_argument("--train-holdout", type=float, default=0.5)
    ap.add_argument("--coverage-seeds", type=int, default=25)
    ap.add_argument("--holdout", type=float, default=0.05)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    candidates, uplift, bootstrap = CandidatesConfig(), UpliftConfig(), BootstrapConfig()

    t0 = time.perf_counter()
    rows = [
        policy_run(
            rows=args.rows,
            seed=s,
            dogs=dogs,
            train_holdout=args.train_holdout,
            candidates=candidates,
            uplift=uplift,
            bootstrap=bootstrap,
        )
        for dogs in args.dogs
        for s in range(args.seeds)
    ]
    res = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    print(
        f"\n== policies: true expected incremental profit per customer (USD), {args.rows} "
        f"customers, fit on a randomized half (holdout {args.train_holdout}) =="
    )
    print(res.round(3).to_string(index=False))
    for dogs, g in res.groupby("dogs"):
        line = [
            f"sleeping dogs {dogs:.2f}: oracle {g.oracle.mean():.2f}, risk {g.risk.mean():.2f} "
            f"({g.risk.mean() / g.oracle.mean():.3f} of oracle)"
        ]
        for name in uplift.learners:
            beats = (g[name] > g.risk).mean()
            line.append(
                f"{name} {g[name].mean():.2f} ({g[name].mean() / g.oracle.mean():.3f} of "
                f"oracle, beats risk in {beats:.0%} of seeds)"
            )
        print("; ".join(line))
        for name in uplift.learners:
            ratio = g[name].mean() / g.oracle.mean()
            beats = bool((g[name] > g.risk).all())
            print(
                f"  target {name}: >= 0.85 of oracle: {'met' if ratio >= 0.85 else 'NOT met'}"
                + (
                    f"; beats churn-risk in every seed: {'met' if beats else 'NOT met'}"
                    if g.dogs.iloc[0] > 0
                    else ""
                )
            )

    cov_all = []
    for dogs in args.dogs:
        cov = coverage_run(
            rows=args.rows,
            seeds=args.coverage_seeds,
            holdout=args.holdout,
            dogs=dogs,
            candidates=candidates,
        )
        cov_all.append(cov.assign(dogs=dogs))
        print(
            f"\n== save rate, holdout {args.holdout}, sleeping dogs {dogs}: "
            f"{args.coverage_seeds} seeds =="
        )
        print(
            f"true {cov.true.mean():.4f} (sd {cov.true.std():.4f}), measured mean "
            f"{cov.measured.mean():.4f} (sd {cov.measured.std():.4f}), mean width "
            f"{(cov.high - cov.low).mean():.4f}, holdout customers "
            f"{cov.holdout_customers.mean():.0f}, coverage {cov.covered.mean():.3f} "
            f"(target >= 0.9: {'met' if cov.covered.mean() >= 0.9 else 'NOT met'})"
        )
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
