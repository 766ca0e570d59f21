"""Rollback protection for the record chain: the newest record each machine has seen.

Signatures and the signed ``promotions/HEAD`` marker show an edited, forged or reordered
record, and a newest record deleted *on its own*. They cannot show a newest record deleted
together with the marker put back from an older copy: what is left is an older chain, every
record and the marker validly signed. (Signed metadata systems call this a rollback or
freeze attack; TUF answers it the same way.)

Every process that writes or verifies a chain therefore keeps a high-water mark *outside* the
workspace: the sequence number and record id of the newest record it has seen verified, in
``<state dir>/<chain key>.json`` (default ``$XDG_STATE_HOME/bayespilot/chains``, that is
``~/.local/state/bayespilot/chains``; ``signing.state_dir`` moves it). The chain key is the
SHA-256 of the chain's directory (resolved) and its first record's id, so a copy of a
workspace elsewhere is a chain of its own. A chain that ends before the mark, or whose record
at the mark's sequence has another id, is refused with the reason.

What this cannot cover: a machine that has never seen the newer records (a fresh serving host)
has no mark to compare with. Deleting the mark itself needs write access outside the
workspace, to the same home as the signing key.

A workspace restored from a backup on purpose is an older chain too: the message names the
mark file to delete after checking that the restore was intended.

Standard library only; serving imports it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/bayespilot/chains``, else ``~/.local/state/bayespilot/chains``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(base).expanduser() / "bayespilot" / "chains"


@dataclass(frozen=True)
class Mark:
    """The newest record seen: its sequence number (1-based) and record id."""

    sequence: int
    record_id: str


@dataclass(frozen=True)
class HighWater:
    """The high-water marks in ``state_dir`` (one JSON file per chain)."""

    state_dir: Path

    def path_for(self, chain_dir: Path, records: Sequence[Mapping[str, Any]]) -> Path | None:
        """The mark file of this chain (None for an empty chain: nothing to protect yet)."""
        if not records:
            return None
        genesis = str(records[0].get("record_id", ""))
        key = hashlib.sha256(f"{chain_dir.resolve()}\n{genesis}".encode()).hexdigest()
        return self.state_dir / f"{key[:32]}.json"

    def read(self, path: Path) -> Mark | None:
        try:
            data = json.loads(path.read_text())
            return Mark(int(data["sequence"]), str(data["record_id"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("chain high-water mark %s unreadable (%s): ignored", path, exc)
            return None

    def problem(self, chain_dir: Path, records: Sequence[Mapping[str, Any]]) -> str | None:
        """Why this chain is older than (or differs from) the newest one seen, or None."""
        path = self.path_for(chain_dir, records)
        mark = None if path is None else self.read(path)
        if mark is None or path is None:
            return None
        last = len(records)
        if mark.sequence > last:
            return (
                f"this machine has seen record {mark.sequence} ({mark.record_id[:12]}) of this "
                f"chain, but the chain now ends at record {last}: newer records were deleted "
                f"(and the head marker put back). If the workspace was restored from a backup "
                f"on purpose, delete {path} to accept it"
            )
        seen = str(records[mark.sequence - 1].get("record_id", ""))
        if seen != mark.record_id:
            return (
                f"record {mark.sequence} is {seen[:12]}, but this machine saw "
                f"{mark.record_id[:12]} there: the chain was rewritten from that record on. "
                f"If that was intended, delete {path} to accept it"
            )
        return None

    def advance(self, chain_dir: Path, records: Sequence[Mapping[str, Any]]) -> None:
        """Raise the mark to the chain's newest record (call only for a verified chain).
        Never lowers it. A state dir that cannot be written is logged, not fatal: the
        protection is then only as good as the marks other processes keep."""
        path = self.path_for(chain_dir, records)
        if path is None:
            return
        newest = Mark(int(records[-1]["sequence"]), str(records[-1]["record_id"]))
        try:
            with _locked(path):
                current = self.read(path)
                if current is not None and current.sequence >= newest.sequence:
                    return
                _write_atomic(
                    path,
                    {
                        "chain": str(chain_dir.resolve()),
                        "sequence": newest.sequence,
                        "record_id": newest.record_id,
                        "seen_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    },
                )
        except OSError as exc:
            log.warning("cannot write the chain high-water mark %s: %s", path, exc)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path``: read-compare-write of a mark is one step."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: Path, body: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mark-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(body, indent=2, sort_keys=True))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
