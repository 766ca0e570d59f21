"""The append-only promotion record chain (standard library only; serving reads it too).

Each record is one JSON file ``<sequence:06d>-<kind>-<short hash>.json`` under
``<workspace>/promotions/``. ``record_id`` is the SHA-256 of the record's canonical JSON without
``record_id``; ``previous_record_id`` chains it to the record before, so any edit, deletion or
reordering shows. Appends happen under an exclusive file lock, are written to a temp file and
linked into place (never overwriting), so two concurrent runs cannot fork the chain.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RECORD_NAME = re.compile(r"^(?P<seq>\d{6})-(?P<kind>[a-z-]+)-(?P<short>[0-9a-f]{12})\.json$")
KINDS = ("promotion", "rollback", "policy-update", "monitoring")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_state() -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args],
                cwd=_REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # never rewrite .git/index
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = run("rev-parse", "HEAD")
    dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    return {"git_commit": commit or None, "git_dirty": dirty if commit else None}


class ChainError(RuntimeError):
    """The record chain is broken or a record is unreadable."""


class LockTimeout(RuntimeError):
    pass


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "record_id"}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    head_id: str | None
    problems: tuple[str, ...]


class RecordStore:
    def __init__(self, directory: Path, lock_path: Path | None = None) -> None:
        self.directory = directory
        self.lock_path = lock_path or directory.parent / "promotions.lock"

    def paths(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if RECORD_NAME.match(p.name))

    def load(self, path: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        except (OSError, json.JSONDecodeError) as exc:
            raise ChainError(f"record {path.name} is unreadable: {exc}") from None

    def records(self) -> list[dict[str, Any]]:
        return [self.load(p) for p in self.paths()]

    def verify(self) -> ChainReport:
        """Recompute every hash and link; report every problem found."""
        problems: list[str] = []
        previous: str | None = None
        head: str | None = None
        paths = self.paths()
        for expected_seq, path in enumerate(paths, start=1):
            m = RECORD_NAME.match(path.name)
            assert m is not None
            try:
                rec = self.load(path)
            except ChainError as exc:
                problems.append(str(exc))
                previous = None
                continue
            actual = record_hash(rec)
            if rec.get("record_id") != actual:
                problems.append(
                    f"{path.name}: content hash {actual[:12]} does not match its "
                    f"record_id {str(rec.get('record_id'))[:12]} (edited?)"
                )
            if m["short"] != str(rec.get("record_id", ""))[:12]:
                problems.append(f"{path.name}: file name does not match its record_id")
            if int(m["seq"]) != expected_seq or rec.get("sequence") != expected_seq:
                problems.append(
                    f"{path.name}: sequence {rec.get('sequence')} where {expected_seq} "
                    "was expected (missing or reordered record)"
                )
            if rec.get("previous_record_id") != previous:
                problems.append(
                    f"{path.name}: previous_record_id does not name the record "
                    "before it (chain broken)"
                )
            previous = rec.get("record_id")
            head = previous
        return ChainReport(not problems, len(paths), head, tuple(problems))

    def head(self) -> dict[str, Any] | None:
        paths = self.paths()
        return self.load(paths[-1]) if paths else None

    def find(self, ref: str) -> dict[str, Any]:
        """A record by sequence number, record id (prefix) or file name."""
        for path in self.paths():
            m = RECORD_NAME.match(path.name)
            assert m is not None
            rec = self.load(path)
            if ref in (path.name, m["seq"], str(int(m["seq"]))) or (
                len(ref) >= 6 and str(rec.get("record_id", "")).startswith(ref)
            ):
                return rec
        raise KeyError(f"no record matches {ref!r}")

    @contextlib.contextmanager
    def locked(self, timeout_s: float) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as fh:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockTimeout(
                            f"record lock {self.lock_path} busy for {timeout_s}s"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def append_locked(
        self, build: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> tuple[Path, dict[str, Any]]:
        """Append ``build(head)`` as the next record. Call while holding ``locked()``.

        ``build`` gets the current head (or None) and returns the record body; sequence,
        previous_record_id and record_id are filled in here."""
        report = self.verify()
        if not report.ok:
            raise ChainError("refusing to append to a broken chain: " + "; ".join(report.problems))
        head = self.head()
        body = dict(build(head))
        body["sequence"] = report.records + 1
        body["previous_record_id"] = head["record_id"] if head else None
        body.pop("record_id", None)
        body["record_id"] = record_hash(body)
        kind = body.get("kind")
        if kind not in KINDS:
            raise ValueError(f"record kind must be one of {KINDS}, got {kind!r}")
        name = f"{body['sequence']:06d}-{kind}-{body['record_id'][:12]}.json"
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / name
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".record-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(body, indent=2, sort_keys=True, allow_nan=False))
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, final)  # fails if the name exists: never overwrite
        finally:
            Path(tmp).unlink(missing_ok=True)
        return final, body

    def append(
        self, build: Callable[[dict[str, Any] | None], dict[str, Any]], *, timeout_s: float = 60.0
    ) -> tuple[Path, dict[str, Any]]:
        with self.locked(timeout_s):
            return self.append_locked(build)


def champion_of(head: dict[str, Any] | None) -> dict[str, Any] | None:
    """The champion block the head record says should serve (None: no champion yet)."""
    if head is None:
        return None
    champ = head.get("champion")
    return champ if isinstance(champ, dict) else None


class VerificationError(RuntimeError):
    """An artifact or policy does not match what the record says."""


def resolve_artifact(workspace_root: Path, relative: str) -> Path:
    path = (workspace_root / relative).resolve()
    if workspace_root.resolve() not in path.parents:
        raise VerificationError(f"artifact path {relative!r} leaves the workspace")
    return path


def verify_file(path: Path, expected_sha256: str, what: str) -> None:
    """Raise unless ``path`` exists and hashes to ``expected_sha256`` (checked before load)."""
    if not path.is_file():
        raise VerificationError(f"{what} missing: {path}")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected_sha256:
        raise VerificationError(
            f"{what} {path.name} SHA-256 {digest.hexdigest()[:12]} does not "
            f"match the record's {expected_sha256[:12]} (tampered or replaced)"
        )


def load_verified_model(workspace_root: Path, champion: dict[str, Any]) -> Any:
    """Verify the champion's artifact hash, then (and only then) unpickle it."""
    path = resolve_artifact(workspace_root, champion["artifact_path"])
    verify_file(path, champion["artifact_sha256"], "model artifact")
    import joblib  # deserialising runs code: only after the hash matched

    return joblib.load(path)


def load_verified_policy_text(workspace_root: Path, champion: dict[str, Any]) -> str:
    path = resolve_artifact(workspace_root, champion["policy_path"])
    verify_file(path, champion["policy_sha256"], "policy document")
    return path.read_text()
