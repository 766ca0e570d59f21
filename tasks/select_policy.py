"""The operating policy from business economics.

Expected value of contacting a customer (USD) = ``p * save_rate * value - contact_cost``.
Contact when it is at least the policy's cut-off: 0 without a capacity, otherwise the value that
meets the capacity on the selection split (as a share of customers, so one request can be decided
alone). Tiers come from expected-value bands, never from fixed probabilities.

The policy is a JSON document whose id is the SHA-256 of its canonical content; serving applies
it as is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from configs.settings import BootstrapConfig, EconomicsConfig, PolicyConfig
from tasks.evaluate import (
    EPS,
    Interval,
    PairedBootstrap,
    customer_values,
    expected_value,
    interval,
    realised_profit,
    weighted_mean,
)

CONTACT = "contact"
NO_CONTACT = "no_contact"
POLICY_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Policy:
    """The served decision rule. ``document`` is the JSON content; ``policy_id`` its SHA-256."""

    document: dict[str, Any]

    @property
    def policy_id(self) -> str:
        return policy_sha256(self.document)

    @property
    def cutoff_usd(self) -> float:
        return float(self.document["cutoff_expected_value_usd"])

    @property
    def value_column(self) -> str | None:
        """The column customer value comes from (None: a constant value)."""
        column = self.document["economics"]["customer_value"].get("column")
        return str(column) if column else None

    def values(self, column_values: np.ndarray | None, n: int) -> np.ndarray:
        """Customer values (USD) for ``n`` rows: ``column x multiplier`` or the constant."""
        cv = self.document["economics"]["customer_value"]
        if self.value_column is None:
            return np.full(n, float(cv["constant_usd"]))
        if column_values is None:
            raise ValueError(f"the policy needs column {self.value_column!r}")
        return np.asarray(column_values, dtype=float) * float(cv["multiplier"])

    def to_json(self) -> str:
        return json.dumps({**self.document, "policy_id": self.policy_id}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Policy:
        doc = json.loads(text)
        claimed = doc.pop("policy_id", None)
        policy = cls(doc)
        if claimed is not None and claimed != policy.policy_id:
            raise ValueError(
                f"policy id mismatch: file says {claimed}, content is {policy.policy_id}"
            )
        return policy


def policy_sha256(document: dict[str, Any]) -> str:
    body = {k: v for k, v in document.items() if k != "policy_id"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


@dataclass(frozen=True)
class Decisions:
    """Per-customer outputs of applying a policy."""

    expected_value_usd: np.ndarray
    contact: np.ndarray  # bool
    tier: np.ndarray  # object (str)


def _economics_from(document: dict[str, Any]) -> EconomicsConfig:
    return EconomicsConfig.model_validate(document["economics"])


def capacity_share(economics: EconomicsConfig, population_rows: int) -> float | None:
    """Capacity as a share of customers: a share as given, a count over the population."""
    cap = economics.capacity
    if cap is None:
        return None
    return float(cap) if cap < 1 else min(1.0, float(cap) / max(population_rows, 1))


def assign_tiers(ev: np.ndarray, contact: np.ndarray, tiers: list[dict[str, Any]]) -> np.ndarray:
    """Tier by expected-value band; the action wins where a band and the action disagree
    (e.g. a positive value beyond capacity is shown in the highest non-contact tier)."""
    mins = np.array(
        [
            -np.inf if t["min_expected_value_usd"] is None else t["min_expected_value_usd"]
            for t in tiers
        ],
        dtype=float,
    )
    names = np.array([t["name"] for t in tiers], dtype=object)
    is_contact = np.array([t["contact"] for t in tiers], dtype=bool)
    band = np.clip(np.searchsorted(mins, ev, side="right") - 1, 0, len(tiers) - 1)
    lowest_contact = int(np.argmax(is_contact))
    highest_quiet = int(len(tiers) - 1 - np.argmax(~is_contact[::-1]))
    band = np.where(contact & ~is_contact[band], lowest_contact, band)
    band = np.where(~contact & is_contact[band], highest_quiet, band)
    out: np.ndarray = names[band]
    return out


def policy_values(frame: pd.DataFrame, policy: Policy) -> np.ndarray:
    """Customer values (USD) as the policy's economics define them."""
    return customer_values(frame, economics=_economics_from(policy.document))


def decide(p: np.ndarray, values: np.ndarray, document: dict[str, Any]) -> Decisions:
    """The policy rule on arrays: expected value (USD), contact or not, tier. Serving and
    batch scoring call exactly this."""
    econ = document["economics"]
    ev = p * float(econ["save_rate"]) * values - float(econ["contact_cost_usd"])
    cutoff = float(document["cutoff_expected_value_usd"])
    contact = ev >= cutoff
    # A cut-off of 0 contacts only customers worth contacting (ties at exactly 0 do not pay).
    if cutoff <= 0:
        contact &= ev > 0
    return Decisions(ev, contact, assign_tiers(ev, contact, document["tiers"]))


def apply_policy(p: np.ndarray, frame: pd.DataFrame, policy: Policy) -> Decisions:
    """Decide for each row of ``frame`` (which carries the value column, if one is used)."""
    return decide(p, policy_values(frame, policy), policy.document)


def _tier_dicts(config: PolicyConfig, cutoff: float) -> list[dict[str, Any]]:
    def low(t: Any) -> float:
        return -np.inf if t.min_expected_value_usd is None else float(t.min_expected_value_usd)

    tiers = sorted(config.tiers, key=low)
    return [
        {
            "name": t.name,
            "min_expected_value_usd": t.min_expected_value_usd,
            "contact": low(t) >= min(cutoff, 0.0),
        }
        for t in tiers
    ]


@dataclass(frozen=True)
class PolicyEvidence:
    """How the policy was chosen and what it earns on the selection split."""

    policy: Policy
    profit_per_customer_usd: Interval
    contact_rate: float
    probability_threshold: float | None
    curve: pd.DataFrame  # contacts share vs expected profit per customer (USD), by cut-off


def profit_per_customer(
    y: np.ndarray, values: np.ndarray, contact: np.ndarray, *, economics: EconomicsConfig
) -> np.ndarray:
    """Realised profit of each customer under a contact decision (USD; 0 if not contacted)."""
    return np.where(contact, realised_profit(y, values, economics=economics), 0.0)


def select_policy(
    p: np.ndarray,
    y: np.ndarray,
    frame: pd.DataFrame,
    *,
    economics: EconomicsConfig,
    policy: PolicyConfig,
    bootstrap: BootstrapConfig,
    calibration_method: str,
    population_rows: int,
) -> PolicyEvidence:
    """Choose the operating policy on the selection split (``p`` calibrated probabilities)."""
    values = customer_values(frame, economics=economics)
    ev = expected_value(p, values, economics=economics)
    share = capacity_share(economics, population_rows)
    cutoff = 0.0
    if share is not None and share < 1:
        k = int(np.floor(share * len(ev)))
        top = np.sort(ev)[::-1]
        kth = top[k - 1] if k >= 1 else np.inf
        cutoff = float(max(0.0, kth))
    threshold = None
    if not economics.customer_value.column:
        # constant value: the rule is a probability threshold
        threshold = float(
            (cutoff + economics.contact_cost_usd)
            / (economics.save_rate * economics.customer_value.constant_usd)
        )
    document: dict[str, Any] = {
        "schema_version": POLICY_SCHEMA_VERSION,
        "rule": "contact when p * save_rate * value - contact_cost_usd >= cutoff (and > 0)",
        "economics": economics.model_dump(mode="json"),
        "capacity_share": share,
        "cutoff_expected_value_usd": round(cutoff, 6),
        "probability_threshold": None if threshold is None else round(threshold, 6),
        "tiers": _tier_dicts(policy, cutoff),
        "calibration_method": calibration_method,
    }
    chosen = Policy(document)
    decisions = apply_policy(p, frame, chosen)
    prof = profit_per_customer(y, values, decisions.contact, economics=economics)
    boot = PairedBootstrap(
        len(y), config=bootstrap, resamples=policy.bootstrap_resamples, seed_offset=101
    )
    samples = boot.run(lambda c: weighted_mean(c, prof[boot.rows]))
    return PolicyEvidence(
        policy=chosen,
        profit_per_customer_usd=interval(samples, float(prof.mean()), bootstrap.confidence),
        contact_rate=float(decisions.contact.mean()),
        probability_threshold=threshold,
        curve=profit_curve(ev, realised_profit(y, values, economics=economics)),
    )


def profit_curve(
    ev: np.ndarray, profit_if_contacted: np.ndarray, points: int = 200
) -> pd.DataFrame:
    """Expected profit per customer (USD) when contacting the top share by expected value."""
    order = np.argsort(-ev, kind="mergesort")
    cum = np.r_[0.0, np.cumsum(profit_if_contacted[order])] / len(ev)
    ks = np.unique(np.linspace(0, len(ev), points).astype(int))
    cut = np.r_[np.inf, ev[order]][ks]
    return pd.DataFrame(
        {"contact_share": ks / len(ev), "cutoff_usd": cut, "profit_per_customer_usd": cum[ks]}
    )


def optimal_cutoffs(
    ev: np.ndarray, profit_if_contacted: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each resample (rows of ``counts``): the cut-off that maximises realised profit and
    the contact rate it implies. Vectorised: one sort, cumulative sums per resample."""
    order = np.argsort(-ev, kind="mergesort")
    c = counts[:, order]
    cum = np.cumsum(c * profit_if_contacted[order], axis=1)
    best = np.argmax(np.concatenate([np.zeros((len(c), 1)), cum], axis=1), axis=1)
    sorted_ev = ev[order]
    cut = np.where(best > 0, sorted_ev[np.maximum(best - 1, 0)], np.inf)
    rate = np.where(best > 0, np.cumsum(c, axis=1)[np.arange(len(c)), np.maximum(best - 1, 0)], 0)
    return cut, rate / c.sum(axis=1)


@dataclass(frozen=True)
class CandidateFigures:
    """One calibrated candidate on the selection split. Log loss in nats per customer,
    profits in USD per customer (expected: under the candidate's own calibrated p; realised:
    under the observed labels), each decided by the candidate's own policy. Gains are paired
    bootstrap intervals of (this candidate - the lowest-log-loss candidate)."""

    name: str
    calibration_method: str
    log_loss: float
    brier: float
    roc_auc: float
    contact_rate: float
    expected_profit_usd: Interval
    realised_profit_usd: Interval
    log_loss_gain: Interval
    realised_profit_gain_usd: Interval

    def as_dict(self) -> dict[str, Any]:
        return {
            "calibration_method": self.calibration_method,
            "log_loss": round(self.log_loss, 6),
            "brier": round(self.brier, 6),
            "roc_auc": round(self.roc_auc, 6),
            "contact_rate": round(self.contact_rate, 6),
            "expected_profit_per_customer_usd": round(self.expected_profit_usd.point, 6),
            "expected_profit_interval": self.expected_profit_usd.as_list(),
            "realised_profit_per_customer_usd": round(self.realised_profit_usd.point, 6),
            "realised_profit_interval": self.realised_profit_usd.as_list(),
            "log_loss_minus_best": round(self.log_loss_gain.point, 6),
            "log_loss_minus_best_interval": self.log_loss_gain.as_list(),
            "realised_profit_minus_best_usd": round(self.realised_profit_gain_usd.point, 6),
            "realised_profit_minus_best_interval": self.realised_profit_gain_usd.as_list(),
        }


@dataclass(frozen=True)
class Selection:
    """The chosen candidate, each candidate's policy evidence and figures on the selection
    split, and why the chosen one won."""

    chosen: str
    evidence: dict[str, PolicyEvidence]
    brier: dict[str, float]
    reason: str
    figures: dict[str, CandidateFigures] = field(default_factory=dict)


def row_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Log loss of each row (nats), probabilities clipped as ``probability_metrics`` does."""
    pc = np.clip(p, EPS, 1 - EPS)
    out: np.ndarray = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    return out


def select_candidate(
    probabilities: dict[str, np.ndarray],
    y: np.ndarray,
    frame: pd.DataFrame,
    *,
    calibration_methods: dict[str, str],
    economics: EconomicsConfig,
    policy: PolicyConfig,
    bootstrap: BootstrapConfig,
    population_rows: int,
) -> Selection:
    """Choose among calibrated candidates by log loss on the selection split, a proper
    scoring rule: stable, and what the expected-value policy needs (calibrated p). Candidates
    whose log loss is not worse than the best beyond noise (the paired bootstrap interval of
    the difference reaches 0) are tied; among them, realised profit overrides the log loss
    only when its gain over the lowest-log-loss candidate is itself beyond noise (the lower
    bound of the paired interval is above 0). Scaling every USD amount scales the profits and
    their intervals alike, so it never changes the choice."""
    if not probabilities:
        raise ValueError("no candidate produced probabilities; nothing to select")
    names = list(probabilities)
    evidence = {
        name: select_policy(
            p,
            y,
            frame,
            economics=economics,
            policy=policy,
            bootstrap=bootstrap,
            calibration_method=calibration_methods[name],
            population_rows=population_rows,
        )
        for name, p in probabilities.items()
    }
    values = customer_values(frame, economics=economics)
    losses, realised, expected = {}, {}, {}
    for name in names:
        p = probabilities[name]
        contact = apply_policy(p, frame, evidence[name].policy).contact
        losses[name] = row_log_loss(y, p)
        realised[name] = profit_per_customer(y, values, contact, economics=economics)
        expected[name] = np.where(contact, expected_value(p, values, economics=economics), 0.0)
    boot = PairedBootstrap(len(y), config=bootstrap, seed_offset=202)
    rows = boot.rows

    def mean_of(a: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        return lambda c: weighted_mean(c, a[rows])

    stats = [mean_of(d[n]) for n in names for d in (losses, realised, expected)]
    draws = boot.run_many(*stats)
    ll_s = {n: draws[3 * i] for i, n in enumerate(names)}
    real_s = {n: draws[3 * i + 1] for i, n in enumerate(names)}
    exp_s = {n: draws[3 * i + 2] for i, n in enumerate(names)}
    conf = bootstrap.confidence
    mean_ll = {n: float(losses[n].mean()) for n in names}
    best = min(names, key=lambda n: (round(mean_ll[n], 12), n))
    figures = {}
    for n in names:
        p = probabilities[n]
        figures[n] = CandidateFigures(
            name=n,
            calibration_method=calibration_methods[n],
            log_loss=mean_ll[n],
            brier=float(np.mean((p - y) ** 2)),
            roc_auc=float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
            contact_rate=evidence[n].contact_rate,
            expected_profit_usd=interval(exp_s[n], float(expected[n].mean()), conf),
            realised_profit_usd=interval(real_s[n], float(realised[n].mean()), conf),
            log_loss_gain=interval(ll_s[n] - ll_s[best], mean_ll[n] - mean_ll[best], conf),
            realised_profit_gain_usd=interval(
                real_s[n] - real_s[best],
                float(realised[n].mean() - realised[best].mean()),
                conf,
            ),
        )
    tied = [n for n in names if n != best and figures[n].log_loss_gain.low <= 0]
    beyond = [n for n in tied if figures[n].realised_profit_gain_usd.low > 0]
    chosen = best
    table = "; ".join(
        f"{n} ({calibration_methods[n]}): log loss {f.log_loss:.5f} "
        f"(minus best [{f.log_loss_gain.low:+.5f}, {f.log_loss_gain.high:+.5f}]), "
        f"realised profit {f.realised_profit_usd.point:.3f} USD/customer"
        for n, f in figures.items()
    )
    if beyond:
        chosen = max(beyond, key=lambda n: figures[n].realised_profit_gain_usd.low)
        g = figures[chosen].realised_profit_gain_usd
        why = (
            f"{chosen}: log loss tied with {best} within noise, and its realised profit gain "
            f"over {best} is beyond noise ({g.point:+.3f} USD/customer, interval "
            f"[{g.low:+.3f}, {g.high:+.3f}])"
        )
    elif tied:
        why = (
            f"{best}: lowest selection log loss; tied within noise with {', '.join(tied)}, "
            "none of which earns a realised profit gain beyond noise"
        )
    else:
        why = f"{best}: lowest selection log loss, every other candidate worse beyond noise"
    return Selection(
        chosen,
        evidence,
        {n: f.brier for n, f in figures.items()},
        f"{why}. {table}",
        figures,
    )
