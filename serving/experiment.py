"""The randomized holdout (issue 17): which customers the policy would contact are left alone,
so that monitoring can measure what contacting them achieves.

Assignment rule (the same in every worker, process, restart, machine and Python version; no
state is kept):

    u = first 8 bytes of SHA-256( utf8(experiment_id) + 0x1F + utf8(customer id text) ),
        read as a big-endian unsigned integer, divided by 2**64       (uniform in [0, 1))
    holdout  <=>  u < holdout_share

The customer id text is ``str(id)``, except that a whole-number float is written as an integer
(``17.0`` -> ``"17"``, so an id read from a CSV as a float and one sent as an integer hash
alike) and ``True``/``False`` as ``true``/``false``. The id is the raw id as scored, before any
log hashing (``serving.log_inputs``). Because the experiment id is hashed in, a new experiment
id draws a fresh, independent holdout from the same customers; the same id keeps it.

A table without ids (``data.id_column: null``) identifies customers by ``row_id``, their row
position in the file; their assignment is then stable only as long as each customer keeps
their row position: give the table an id column for an experiment that spans files.

A holdout customer's action is always ``no_contact`` (tier ``holdout``); ``would_contact``
keeps what the policy would have done. Framework-free (numpy, hashlib): serving and the batch
command share it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from configs.settings import ServingConfig

log = logging.getLogger(__name__)
HOLDOUT_TIER = "holdout"  # the tier of a holdout customer (an instruction not to act)
SEPARATOR = b"\x1f"
HASH_RULE = (
    "u = int.from_bytes(sha256(utf8(experiment_id) + b'\\x1f' + utf8(customer_id_text))"
    ".digest()[:8], 'big') / 2**64; holdout when u < holdout_share. customer_id_text: "
    "str(id), whole-number floats as integers, booleans as true/false; the raw id, before "
    "log hashing"
)


def id_text(value: Any) -> str:
    """The text of a customer id that the assignment hashes (module docstring)."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value):
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def assignment_uniform(experiment_id: str, ids: Iterable[Any]) -> np.ndarray:
    """The uniform draw u in [0, 1) of each id for ``experiment_id`` (float64)."""
    prefix = experiment_id.encode("utf-8") + SEPARATOR
    sha = hashlib.sha256
    raw = b"".join(sha(prefix + id_text(v).encode("utf-8")).digest()[:8] for v in ids)
    words = np.frombuffer(raw, dtype=">u8").astype(np.float64)
    # float64 rounds the largest 64-bit words up to 2**64: clip so that u < 1 always
    return np.minimum(words / 2.0**64, np.nextafter(1.0, 0.0))


@dataclass(frozen=True)
class Experiment:
    """A running holdout experiment: its id and the share (0-1) of customers held out."""

    experiment_id: str
    holdout_share: float

    def __post_init__(self) -> None:
        if not self.experiment_id:
            raise ValueError("experiment_id: expected a non-empty id")
        if not 0.0 < self.holdout_share < 1.0:
            raise ValueError(f"holdout_share: expected a share in (0, 1), got {self.holdout_share}")

    def holdout(self, ids: Iterable[Any]) -> np.ndarray:
        """Boolean mask: which of ``ids`` fall in the holdout."""
        return assignment_uniform(self.experiment_id, ids) < self.holdout_share

    def describe(self) -> dict[str, Any]:
        """What ``/v1/model`` and the monitoring record say about the experiment."""
        return {
            "experiment_id": self.experiment_id,
            "holdout_share": self.holdout_share,
            "hash_rule": HASH_RULE,
            "holdout_action": "no_contact",
            "holdout_tier": HOLDOUT_TIER,
        }


@dataclass(frozen=True)
class Assigned:
    """Actions after the holdout: ``contact`` is what is done, ``would_contact`` what the
    policy decided, ``holdout`` the mask; ``experiment_id`` None when no experiment runs."""

    contact: np.ndarray
    would_contact: np.ndarray
    holdout: np.ndarray
    experiment_id: str | None


def apply_holdout(
    experiment: Experiment | None, ids: Iterable[Any], would_contact: np.ndarray
) -> Assigned:
    """The policy's contact decisions with the holdout applied (no experiment: unchanged)."""
    would = np.asarray(would_contact, dtype=bool)
    if experiment is None:
        return Assigned(would, would, np.zeros(len(would), dtype=bool), None)
    held = experiment.holdout(ids)
    if len(held) != len(would):
        raise ValueError(f"{len(held)} ids for {len(would)} decisions")
    return Assigned(would & ~held, would, held, experiment.experiment_id)


def experiment_from_config(serving: ServingConfig) -> Experiment | None:
    """The experiment ``serving`` configures: ``experiment_id`` and ``holdout_share`` > 0
    (the config refuses an id with share 0). A share without an id runs no holdout: that is
    logged (info), since the share's default is not 0."""
    if serving.experiment_id is None:
        if serving.holdout_share > 0:
            log.info(
                "no holdout: serving.holdout_share=%g takes effect only with "
                "serving.experiment_id (none set)",
                serving.holdout_share,
            )
        return None
    return Experiment(serving.experiment_id, serving.holdout_share)
