"""What the service keeps of each decision (``serving.log_inputs``), for the decision store.

Every HTTP decision goes to the decision store (``tasks/decision_store.py``, under the
workspace's ``decisions/``): each worker buffers its rows (``decision_records``) in a
``DecisionWriter`` that a background thread writes to hourly Parquet files, every
``decisions.flush_interval_s`` seconds or ``decisions.flush_rows`` rows, and at shutdown; files
are created with ``serving.log_file_mode`` (0600 by default) and deleted by age
(``decisions.retention_days``).

What a decision row keeps of the request is ``InputPolicy`` (``serving.log_inputs``):

- ``full``: every feature value and the id, as sent (monitoring measures input drift and
  training/serving skew, and the challenger is scored on the stored inputs, from them);
- ``hashed``: the id and every value as a keyed hash (HMAC-SHA256 with the workspace's secret
  log key, see ``log_key``): equal values stay equal, so outcomes still join on the hashed id,
  but nothing in the log can be read back or measured for drift;
- ``none``: no feature value; only the hashed id, so outcomes still join.

The id goes to the store's ``customer_id`` column (as text), the other kept values to
``input.<feature>`` columns.

In ``hashed`` and ``none`` the customer value column (the policy's, e.g. monthly charges) stays
raw: monitoring's realised profit per customer needs it.

The log key is a random 32-byte file (mode 0600) beside the serving generation, outside
``logs/``: a copy of the logs alone cannot be brute-forced back to ids. Deleting it makes
earlier hashed ids unjoinable (a deliberate way to forget them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from tasks.decision_store import INPUT_PREFIX

InputsMode = Literal["full", "hashed", "none"]
HASH_PREFIX = "hmac:"  # marks a hashed value in the log
LOG_KEY_BYTES = 32
SECONDS_PER_DAY = 86_400


def log_key(path: Path) -> bytes:
    """The workspace's secret log key at ``path``, created (0600, atomically: the first
    writer wins) when missing."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(LOG_KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process created it first
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def hash_value(key: bytes, value: Any, *, field: str = "") -> str:
    """Keyed hash of one value (its JSON text; ``field`` mixes the column name in so equal
    values of different columns differ). Ids use ``field=""`` and ``str(value)``, see
    ``hash_id``."""
    text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=True)
    mac = hmac.new(key, f"{field}\x00{text}".encode(), hashlib.sha256)
    return HASH_PREFIX + mac.hexdigest()


def hash_id(key: bytes, value: Any) -> str:
    """Keyed hash of a customer id, of its text (``str(value)``), so an id logged as 17 and
    one read from an outcomes file as "17" hash alike: what outcome joins use."""
    return hash_value(key, str(value), field="id")


@dataclass(frozen=True)
class InputPolicy:
    """What a log line keeps of a customer's inputs (module docstring)."""

    mode: InputsMode
    key: bytes | None = None  # required unless mode == "full"

    def apply(
        self, row: Mapping[str, Any], id_column: str, value_column: str | None = None
    ) -> dict[str, Any]:
        """The ``inputs`` a log line keeps of ``row`` (a validated customer). The customer
        value column (``value_column``), if any, stays raw in every mode: monitoring's
        realised profit is computed from it."""
        if self.mode == "full":
            return dict(row)
        assert self.key is not None, "hashed/none logging needs the log key"
        out: dict[str, Any] = {id_column: hash_id(self.key, row.get(id_column))}
        if self.mode == "hashed":
            out.update(
                (c, hash_value(self.key, v, field=c))
                for c, v in row.items()
                if c not in (id_column, value_column)
            )
        if value_column is not None and value_column in row:
            out[value_column] = row[value_column]
        return out


def _hash_column(key: bytes, values: pd.Series, field: str) -> np.ndarray:
    """``hash_value`` of every value of a column, computed once per distinct value (missing
    values hash as JSON null, as a missing field of a request does)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    hashed = np.array(
        [hash_value(key, _plain(v), field=field) for v in uniques]
        + [hash_value(key, None, field=field)],
        dtype=object,
    )
    return hashed[codes]  # code -1 (missing) picks the last entry


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python value a validated request holds."""
    return v.item() if isinstance(v, np.generic) else v


def frame_inputs(
    policy: InputPolicy,
    frame: pd.DataFrame,
    *,
    id_column: str,
    columns: Sequence[str],
    value_column: str | None = None,
) -> dict[str, Any]:
    """``policy`` applied to a whole frame of validated customers (batch scoring): the
    ``customer_id`` column (text, or ``hmac:...``) and ``input.<feature>`` columns for the
    kept ``columns``, the same values ``InputPolicy.apply`` keeps of each row (hashes are
    computed once per distinct value)."""
    ids = frame[id_column]
    out: dict[str, Any] = {}
    if policy.mode == "full":
        out["customer_id"] = ids
        out.update((INPUT_PREFIX + c, frame[c]) for c in columns if c != id_column)
        return out
    assert policy.key is not None, "hashed/none logging needs the log key"
    key = policy.key
    text_ids = ids.astype(str)
    codes, uniques = pd.factorize(text_ids)
    out["customer_id"] = np.array([hash_id(key, v) for v in uniques], dtype=object)[codes]
    if policy.mode == "hashed":
        out.update(
            (INPUT_PREFIX + c, _hash_column(key, frame[c], c))
            for c in columns
            if c not in (id_column, value_column)
        )
    if value_column is not None and value_column in frame.columns:
        out[INPUT_PREFIX + value_column] = frame[value_column]
    return out


def decision_records(
    policy: InputPolicy,
    *,
    rows: Sequence[Mapping[str, Any]],
    results: Sequence[Mapping[str, Any]],
    id_column: str,
    value_column: str | None,
    request_id: str,
    at: datetime,
    latency_ms: float,
) -> list[dict[str, Any]]:
    """Decision-store rows (``tasks.decision_store`` columns) of one scored request: each
    validated customer ``rows[i]`` with its response ``results[i]``, the inputs as ``policy``
    keeps them. ``at``: when decided (UTC); ``latency_ms``: the request's time to score
    (milliseconds). Result keys
    ``would_contact``, ``holdout`` and ``experiment_id`` are carried when present."""
    out = []
    for row, res in zip(rows, results, strict=True):
        inputs = policy.apply(row, id_column, value_column)
        cid = inputs.pop(id_column, None)
        rec: dict[str, Any] = {
            "time": at,
            "request_id": request_id,
            "model_version": res["model_version"],
            "policy_id": res["policy_id"],
            "customer_id": None if cid is None else str(cid),
            "probability": res["churn_probability"],
            "action": res["action"],
            "expected_value_usd": res["expected_value_usd"],
            "tier": res["tier"],
            "latency_ms": latency_ms,
        }
        for key in ("would_contact", "holdout", "experiment_id"):
            if key in res:
                rec[key] = res[key]
        for k, v in inputs.items():
            rec[INPUT_PREFIX + k] = v
        out.append(rec)
    return out
