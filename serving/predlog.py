"""The prediction log: JSONL under the workspace, one line per scored customer.

Safe under concurrent requests (a thread lock in the process and an exclusive file lock across
worker processes around each append), rotated by size (``predictions.jsonl.1`` ...), rotated
files older than ``max_age_days`` removed, every file created with ``file_mode`` (0600 by
default). The shadow log (``shadow.jsonl``) is the same class with the same settings.

What a line keeps of the request is ``InputPolicy`` (``serving.log_inputs``):

- ``full``: every feature value and the id, as sent (monitoring measures input drift and
  training/serving skew, and the shadow sidecar re-scores the challenger, from them);
- ``hashed``: the id and every value as a keyed hash (HMAC-SHA256 with the workspace's secret
  log key, see ``log_key``): equal values stay equal, so outcomes still join on the hashed id,
  but nothing in the log can be read back or measured for drift;
- ``none``: no feature value; only the hashed id, so outcomes still join.

In ``hashed`` and ``none`` the customer value column (the policy's, e.g. monthly charges) stays
raw: monitoring's realised profit per customer needs it.

The log key is a random 32-byte file (mode 0600) beside the serving generation, outside
``logs/``: a copy of the logs alone cannot be brute-forced back to ids. Deleting it makes
earlier hashed ids unjoinable (a deliberate way to forget them).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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


class PredictionLog:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        backups: int,
        max_age_days: float | None = None,
        file_mode: int = 0o600,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.max_age_s = None if max_age_days is None else max_age_days * SECONDS_PER_DAY
        self.file_mode = file_mode
        self._lock = threading.Lock()
        self._lock_path = path.with_name(path.name + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        self._fd: int | None = None

    def _open(self, path: Path, flags: int) -> int:
        """Open (creating with ``file_mode``, whatever the umask says)."""
        fd = os.open(path, flags | os.O_CREAT, self.file_mode)
        if os.fstat(fd).st_mode & 0o777 != self.file_mode:
            os.fchmod(fd, self.file_mode)  # the umask, or a file from before the setting
        return fd

    def write(self, entries: Iterable[dict[str, Any]]) -> None:
        data = "".join(
            json.dumps(e, separators=(",", ":"), default=str) + "\n" for e in entries
        ).encode()
        if not data:
            return
        with self._lock:
            if self._lock_fd is None:
                self._lock_fd = self._open(self._lock_path, os.O_WRONLY)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                self._rotate_if_needed(len(data))
                os.write(self._data_fd(), data)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _data_fd(self) -> int:
        """The open log file; reopened when another worker rotated it away."""
        if self._fd is not None:
            try:
                if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                    return self._fd
            except FileNotFoundError:
                pass
            os.close(self._fd)
        self._fd = self._open(self.path, os.O_WRONLY | os.O_APPEND)
        return self._fd

    def rotated(self) -> list[Path]:
        """The rotated files that exist (``name.1`` ... ``name.N``, newest first)."""
        out = []
        for i in range(1, self.backups + 1):
            p = self.path.with_name(f"{self.path.name}.{i}")
            if p.exists():
                out.append(p)
        return out

    def expire(self, now: float | None = None) -> list[Path]:
        """Delete rotated files last written more than ``max_age_days`` ago; returns them.
        The current file is never deleted (it is being written to)."""
        if self.max_age_s is None:
            return []
        cutoff = (time.time() if now is None else now) - self.max_age_s
        removed = []
        for p in self.rotated():
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:
                continue
        return removed

    def expire_locked(self) -> list[Path]:
        """``expire`` under the cross-process log lock (service start)."""
        with self._lock:
            if self._lock_fd is None:
                self._lock_fd = self._open(self._lock_path, os.O_WRONLY)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                return self.expire()
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self.max_bytes:
            return
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.expire()
