"""The prediction log: JSONL under the workspace, one line per scored customer.

Safe under concurrent requests (a thread lock in the process and an exclusive file lock across
worker processes around each append), rotated by size (``predictions.jsonl.1`` ...).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class PredictionLog:
    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._lock_path = path.with_name(path.name + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        self._fd: int | None = None

    def write(self, entries: Iterable[dict[str, Any]]) -> None:
        data = "".join(
            json.dumps(e, separators=(",", ":"), default=str) + "\n" for e in entries
        ).encode()
        if not data:
            return
        with self._lock:
            if self._lock_fd is None:
                self._lock_fd = os.open(self._lock_path, os.O_WRONLY | os.O_CREAT, 0o644)
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
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

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
