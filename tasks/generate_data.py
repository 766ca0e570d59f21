"""Seeded synthetic subscription-churn data.

The generator draws customers with mixed features, a true churn probability from a nonlinear,
interacting model, and the label from that probability. A small segment (``region == "islands"``,
about 3 %) follows a weaker and different signal. The true probability is returned in
``TRUTH_COLUMN`` so benchmarks can compare against it; it is never a feature (the column-role
resolver drops it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

TRUTH_COLUMN = "true_churn_probability"
ID_COLUMN = "customer_id"
LABEL_COLUMN = "churned"
SEGMENT_COLUMNS = ("region", "contract", "acquisition_channel")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _choice(rng: np.random.Generator, values: list[str], p: list[float], n: int) -> np.ndarray:
    return np.asarray(values, dtype=object)[rng.choice(len(values), size=n, p=p)]


def _with_missing(rng: np.random.Generator, values: np.ndarray, share: float) -> np.ndarray:
    out = values.astype(float, copy=True)
    out[rng.random(len(out)) < share] = np.nan
    return out


def generate_data(*, rows: int, seed: int) -> pd.DataFrame:
    """Draw ``rows`` customers deterministically from ``seed``.

    Returns a frame with ``customer_id``, 15 features (charges in USD, durations in months,
    counts per period named in the column), the label ``churned`` (``"yes"``/``"no"``) and the
    true churn probability.
    """
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    return _draw(np.random.default_rng(seed), rows, first_id=1)


CATEGORY_COLUMNS = (
    "region",
    "contract",
    "plan",
    "payment_method",
    "acquisition_channel",
    "paperless_billing",
    LABEL_COLUMN,
)


def generate_blocks(*, rows: int, seed: int, block_rows: int) -> Iterator[pd.DataFrame]:
    """Draw ``rows`` customers in seeded blocks of at most ``block_rows`` rows (typed mode).

    Block ``i`` is drawn from the seed sequence ``(seed, i)``, so the table depends only on
    ``rows``, ``seed`` and ``block_rows`` and memory stays at one block. Ids run on across
    blocks (``CUST-00000001`` ..., Arrow strings); text columns are ``category`` dtype (no
    object columns).
    The rows differ from ``generate_data(rows=rows, seed=seed)``, which draws in one block.
    """
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    if block_rows <= 0:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    for i, start in enumerate(range(0, rows, block_rows)):
        n = min(block_rows, rows - start)
        frame = _draw(np.random.default_rng([seed, i]), n, first_id=start + 1)
        typed = {c: "category" for c in CATEGORY_COLUMNS}
        yield frame.astype({**typed, ID_COLUMN: "string[pyarrow]"})


def write_parquet(
    path: str | Path, *, rows: int, seed: int, block_rows: int = 250_000, truth: bool = False
) -> Path:
    """Write ``generate_blocks`` to a Parquet file, one row group per block, through a temp
    file and a rename. The true probability column is left out unless ``truth``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    writer: pq.ParquetWriter | None = None
    try:
        for block in generate_blocks(rows=rows, seed=seed, block_rows=block_rows):
            if not truth:
                block = block.drop(columns=[TRUTH_COLUMN])
            table = pa.Table.from_pandas(block, preserve_index=False)
            table = table.cast(
                pa.schema(
                    [
                        pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f
                        for f in table.schema
                    ]
                )
            )
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, use_dictionary=True)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(out)
    return out


def _draw(rng: np.random.Generator, n: int, *, first_id: int) -> pd.DataFrame:
    """``n`` customers from ``rng``, ids numbered from ``first_id``."""

    region = _choice(
        rng, ["north", "south", "east", "west", "islands"], [0.29, 0.25, 0.23, 0.20, 0.03], n
    )
    contract = _choice(rng, ["month-to-month", "one-year", "two-year"], [0.55, 0.25, 0.20], n)
    plan = _choice(rng, ["basic", "standard", "premium"], [0.4, 0.4, 0.2], n)
    payment = _choice(
        rng,
        ["card", "bank_transfer", "electronic_check", "mailed_check"],
        [0.3, 0.25, 0.3, 0.15],
        n,
    )
    channel = _choice(rng, ["online", "store", "partner", "telesales"], [0.45, 0.3, 0.15, 0.1], n)
    paperless = rng.random(n) < 0.6

    is_m2m = contract == "month-to-month"
    is_two = contract == "two-year"
    tenure = np.where(is_m2m, rng.exponential(14, n), rng.exponential(34, n))
    tenure = np.clip(np.floor(tenure), 0, 72)

    plan_base = np.select([plan == "basic", plan == "standard"], [30.0, 60.0], 90.0)
    monthly = np.clip(plan_base + rng.normal(0, 9, n) + 8 * (rng.random(n) < 0.3), 18, 130)
    monthly = np.round(monthly, 2)
    total = np.round(tenure * monthly * rng.normal(1.0, 0.04, n), 2)
    total[tenure == 0] = np.nan  # new customers have no billed total yet (blank in exports)

    age = np.clip(rng.normal(45, 15, n), 18, 90).round()
    products = np.clip(rng.poisson(1.2, n) + 1, 1, 6)
    support_calls = rng.poisson(np.where(plan == "premium", 1.6, 1.0) + 0.5 * is_m2m, n)
    late_payments = rng.poisson(np.where(payment == "electronic_check", 0.8, 0.35), n)
    usage = rng.lognormal(np.log(40) + 0.3 * (plan == "premium"), 0.6, n)
    satisfaction = np.clip(np.round(7.2 - 0.5 * support_calls + rng.normal(0, 1.6, n)), 1, 10)
    discount = np.where(rng.random(n) < 0.25, rng.choice([5.0, 10.0, 20.0], n), 0.0)

    # True log-odds: nonlinear in tenure/usage, saturating in calls, interactions with contract.
    logit = (
        -1.75
        + 1.2 * is_m2m
        - 0.5 * is_two
        - 0.9 * np.log1p(tenure / 6.0) * (1.0 - 0.4 * is_m2m)
        + 0.02 * (monthly - 60) * (1.0 + 0.6 * is_m2m)
        + 0.75 * np.tanh(support_calls / 2.0) * (1.0 + 0.5 * (plan == "premium"))
        + 0.4 * late_payments
        + 0.5 * (payment == "electronic_check")
        - 0.22 * (satisfaction - 7.0)
        + 0.35 * ((usage < 12) | (usage > 160))
        - 0.18 * (products - 1)
        - 0.02 * discount * is_m2m
        + 0.25 * paperless
        + 0.3 * ((age < 28) & is_m2m)
        + 0.15 * (channel == "telesales")
    )
    # Weaker, different signal in the small segment: flattened and shifted.
    islands = region == "islands"
    logit = np.where(islands, -1.0 + 0.3 * (logit + 1.0) + 0.6 * (age > 60), logit)
    prob = _sigmoid(logit)
    churned = np.where(rng.random(n) < prob, "yes", "no")

    ids = pd.Series(np.arange(first_id, first_id + n)).astype(str).str.zfill(8)
    frame = pd.DataFrame(
        {
            ID_COLUMN: ("CUST-" + ids).to_numpy(),
            "region": region,
            "contract": contract,
            "plan": plan,
            "payment_method": payment,
            "acquisition_channel": channel,
            "paperless_billing": np.where(paperless, "yes", "no"),
            "tenure_months": tenure.astype("int64"),
            "monthly_charges_usd": monthly,
            "total_charges_usd": total,
            "age_years": _with_missing(rng, age, 0.02),
            "num_products": products.astype("int64"),
            "support_calls_90d": support_calls.astype("int64"),
            "late_payments_12m": late_payments.astype("int64"),
            "usage_gb_30d": _with_missing(rng, np.round(usage, 2), 0.03),
            "satisfaction_score": _with_missing(rng, satisfaction, 0.08),
            "discount_pct": discount,
            LABEL_COLUMN: churned,
            TRUTH_COLUMN: prob,
        }
    )
    for col in CATEGORY_COLUMNS:
        frame[col] = frame[col].astype(str)
    return frame
