"""The append-only promotion record chain and the queries over it (standard library plus the
record models; serving reads it too).

Each record is one JSON file ``<sequence:06d>-<kind>-<short hash>.json`` under
``<workspace>/promotions/``. ``record_id`` is the SHA-256 of the record's canonical JSON without
``record_id`` and ``signature``; ``previous_record_id`` chains it to the record before, so any
edit, deletion or reordering shows. The hash alone is unkeyed (anyone can recompute it), so
every record also carries an Ed25519 ``signature`` over its canonical JSON including
``record_id`` (``tasks/signing.py``); a chain verifies only when every record is signed by a
trusted public key. Appends happen under an exclusive file lock, are written to a temp file and
linked into place (never overwriting), so two concurrent runs cannot fork the chain.

Files a record names (model artifact, policy) are read once into memory, hashed, and only those
same bytes are parsed or unpickled (``read_verified``, ``load_verified_model``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

from tasks.failpoints import failpoint
from tasks.freshness import HighWater, default_state_dir
from tasks.record_models import (
    ChallengerRecord,
    ChampionBlock,
    MonitoringRecord,
    PolicyUpdateRecord,
    PromotionRecord,
    Record,
    SeatingRecord,
)
from tasks.signing import (
    UNSIGNED,
    KeySettings,
    Signer,
    SigningError,
    TrustStore,
    load_signer,
    load_trust,
)

HEAD_FILE = "HEAD"  # signed marker naming the newest record (shows a deleted newest record)
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


def fsync_dir(directory: Path) -> None:
    """Make a new or replaced name in ``directory`` durable (POSIX: fsync the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChainError(RuntimeError):
    """The record chain is broken or a record is unreadable."""


class LockTimeout(RuntimeError):
    pass


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid in a record (canonical JSON has no NaN/Infinity)")


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k not in ("record_id", "signature")}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def signed_message(record: dict[str, Any]) -> bytes:
    """What a record's signature covers: its canonical JSON with ``record_id``."""
    return canonical({k: v for k, v in record.items() if k != "signature"}).encode()


# sha256(record file bytes) -> (record_hash, id of the trusted key whose signature checked).
# Files seen before are not hashed and verified again: a check of a long chain costs its new
# records only. The key is the bytes themselves (read every time), never a file's name or
# mtime, so an edited file is always checked afresh.
_CHECKED: dict[bytes, tuple[str, str | None]] = {}
_CHECKED_MAX = 50_000


def _check_record(raw: bytes, rec: dict[str, Any], trust: TrustStore) -> tuple[str, str | None]:
    """(content hash, signature problem or None) of a record parsed from ``raw``."""
    digest = hashlib.sha256(raw).digest()
    actual, verified_by = _CHECKED.get(digest) or (None, None)
    if actual is None:
        actual = record_hash(rec)
    sig = rec.get("signature")
    key_id = str(sig.get("key_id")) if isinstance(sig, dict) else None
    if key_id is not None and verified_by == key_id and key_id in trust.keys:
        problem = None  # these very bytes were verified with this same public key
    else:
        problem = trust.problem(signed_message(rec), sig)
        verified_by = key_id if problem is None else None
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()
    _CHECKED[digest] = (actual, verified_by)
    return actual, problem


def default_key_settings(workspace: Path) -> KeySettings:
    """Key settings from the config defaults and the environment (``BAYESPILOT__SIGNING__*``,
    ``BAYESPILOT_SIGNING_KEY``, ``XDG_CONFIG_HOME``), for callers without a config."""
    from configs.settings import load_config

    return KeySettings.from_config(load_config(None).signing, workspace)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    head_id: str | None
    problems: tuple[str, ...]


class RecordStore:
    """``keys``: where the signing key and the trusted public keys are (default: the config
    defaults plus the environment; see ``default_key_settings``)."""

    def __init__(
        self, directory: Path, lock_path: Path | None = None, *, keys: KeySettings | None = None
    ) -> None:
        self.directory = directory
        self.lock_path = lock_path or directory.parent / "promotions.lock"
        self._keys = keys

    @classmethod
    def for_config(cls, config: Any) -> RecordStore:
        """The config's workspace chain, signing and verifying with its ``signing`` keys."""
        from configs.paths import Workspace

        ws = Workspace.from_setting(config.paths.workspace)
        keys = KeySettings.from_config(config.signing, ws.root)
        return cls(ws.promotions, ws.promotions_lock, keys=keys)

    @property
    def keys(self) -> KeySettings:
        if self._keys is None:
            self._keys = default_key_settings(self.directory.parent)
        return self._keys

    def trust(self) -> TrustStore:
        return load_trust(self.keys)

    def paths(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if RECORD_NAME.match(p.name))

    def load(self, path: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(path.read_text(), parse_constant=_no_constants)
            return data
        except (OSError, ValueError) as exc:
            raise ChainError(f"record {path.name} is unreadable: {exc}") from None

    def records(self) -> list[dict[str, Any]]:
        return [self.load(p) for p in self.paths()]

    def verify(self, trust: TrustStore | None = None) -> ChainReport:
        """Recompute every hash, link and signature; report every problem found."""
        return self.verified_records(trust)[0]

    def verified_records(
        self, trust: TrustStore | None = None
    ) -> tuple[ChainReport, list[dict[str, Any]]]:
        """The chain report and the very records it was computed on (read once: nothing
        can be swapped between the check and the use). Only trust the list when ``ok``."""
        trust = self.trust() if trust is None else trust
        problems: list[str] = []
        records: list[dict[str, Any]] = []
        previous: str | None = None
        head: str | None = None
        paths = self.paths()
        for expected_seq, path in enumerate(paths, start=1):
            m = RECORD_NAME.match(path.name)
            assert m is not None
            try:
                raw = path.read_bytes()
                rec = json.loads(raw, parse_constant=_no_constants)
            except (OSError, ValueError) as exc:
                problems.append(f"record {path.name} is unreadable: {exc}")
                previous = None
                continue
            records.append(rec)
            actual, sig_problem = _check_record(raw, rec, trust)
            if rec.get("record_id") != actual:
                problems.append(
                    f"{path.name}: content hash {actual[:12]} does not match its "
                    f"record_id {str(rec.get('record_id'))[:12]} (edited?)"
                )
            if rec.get("kind") not in KINDS:
                problems.append(f"{path.name}: unknown record kind {rec.get('kind')!r}")
            if sig_problem:
                problems.append(f"{path.name}: {sig_problem}")
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
        problems.extend(self._head_marker_problems(records, trust))
        high_water = self.high_water()
        rolled_back = high_water.problem(self.directory, records)
        if rolled_back:
            problems.append(rolled_back)
        elif not problems:
            high_water.advance(self.directory, records)
        return ChainReport(not problems, len(paths), head, tuple(problems)), records

    def high_water(self) -> HighWater:
        """The newest record this machine has seen of each chain (``tasks/freshness.py``)."""
        keys = self.keys
        return HighWater(keys.state_dir or default_state_dir(keys.environ))

    @property
    def head_marker_path(self) -> Path:
        return self.directory / HEAD_FILE

    def _head_marker_problems(self, records: list[dict[str, Any]], trust: TrustStore) -> list[str]:
        """The signed head marker must name the newest record. One record behind is a crash
        between writing a record and its marker (the next append repairs it); naming a record
        the chain does not end with means records were deleted (or the marker replaced)."""
        path = self.head_marker_path
        if not path.exists():
            if not records:
                return []
            return [
                f"head marker {HEAD_FILE} is missing: the newest record(s) may have been deleted "
                "(or the chain was written before head markers)"
            ]
        try:
            marker = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return [f"head marker {HEAD_FILE} is unreadable: {exc}"]
        body = {k: marker.get(k) for k in ("kind", "sequence", "record_id")}
        sig_problem = trust.problem(canonical(body).encode(), marker.get("signature"))
        if body["kind"] != "chain-head" or sig_problem:
            return [f"head marker {HEAD_FILE}: {sig_problem or 'not a chain-head marker'}"]
        seq, rid = marker.get("sequence"), marker.get("record_id")
        by_seq = {r.get("sequence"): r.get("record_id") for r in records}
        last = records[-1].get("sequence") if records else 0
        if by_seq.get(seq) == rid and seq in (last, (last or 0) - 1):
            return []
        if isinstance(seq, int) and isinstance(last, int) and seq > last:
            return [
                f"head marker names record {seq} ({str(rid)[:12]}) but the chain ends at {last}: "
                "the newest record(s) were deleted"
            ]
        return [
            f"head marker names record {seq} ({str(rid)[:12]}), which is not the chain's newest "
            f"record {last} (replaced marker or rewritten chain)"
        ]

    def sign_unsigned(self, *, timeout_s: float = 60.0) -> int:
        """Sign the records written before records were signed (an operator's explicit
        decision, after reviewing them: ``bayespilot verify --sign-unsigned``) and write the
        head marker. Refused unless unsigned records and the missing marker are the chain's
        only problems: a record edited, reordered or signed by an unknown key stays refused.
        ``record_id`` does not cover the signature, so links are unchanged. Returns how many
        records were signed."""
        signer = self.signer()
        missing_marker = f"head marker {HEAD_FILE} is missing"
        with self.locked(timeout_s):
            paths = self.paths()
            report, records = self.verified_records(self.trust().with_key(signer.public_key))
            other = [p for p in report.problems if UNSIGNED not in p and missing_marker not in p]
            if other:
                raise ChainError(
                    "refusing to sign a chain with other problems: " + "; ".join(other)
                )
            signed = 0
            for path, rec in zip(paths, records, strict=True):
                if rec.get("signature"):
                    continue
                rec["signature"] = signer.sign(signed_message(rec))
                fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".record-", suffix=".tmp")
                try:
                    with os.fdopen(fd, "w") as fh:
                        fh.write(json.dumps(rec, indent=2, sort_keys=True, allow_nan=False))
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, path)
                finally:
                    Path(tmp).unlink(missing_ok=True)
                signed += 1
            if records:
                self._write_head_marker(records[-1], signer)
        return signed

    def _write_head_marker(self, record: dict[str, Any], signer: Signer) -> None:
        body = {
            "kind": "chain-head",
            "sequence": record["sequence"],
            "record_id": record["record_id"],
        }
        marker = {**body, "signature": signer.sign(canonical(body).encode())}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".head-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(marker, indent=2, sort_keys=True))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.head_marker_path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        fsync_dir(self.directory)

    def head(self) -> dict[str, Any] | None:
        """The newest record, only if the whole chain verifies (``ChainError`` otherwise):
        what it names may be unpickled next. ``records()`` reads without verifying."""
        report, records = self.verified_records()
        if not report.ok:
            raise ChainError("record chain broken: " + "; ".join(report.problems))
        return records[-1] if records else None

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
        previous_record_id, record_id and signature are filled in here. Needs the private
        key (``SigningError`` otherwise); the signer's own public key counts as trusted."""
        signer = self.signer()
        report, records = self.verified_records(self.trust().with_key(signer.public_key))
        if not report.ok:
            raise ChainError("refusing to append to a broken chain: " + "; ".join(report.problems))
        head = records[-1] if records else None
        body = dict(build(head))
        body["sequence"] = report.records + 1
        body["previous_record_id"] = head["record_id"] if head else None
        body.pop("record_id", None)
        body.pop("signature", None)
        body["record_id"] = record_hash(body)
        body["signature"] = signer.sign(signed_message(body))
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
            failpoint("record:temp-written")
            os.link(tmp, final)  # fails if the name exists: never overwrite
        finally:
            Path(tmp).unlink(missing_ok=True)
        fsync_dir(self.directory)  # the new name is durable before anything acts on it
        failpoint("record:linked")
        self._write_head_marker(body, signer)
        self.high_water().advance(self.directory, [*records, body])
        return final, body

    def signer(self) -> Signer:
        try:
            return load_signer(self.keys)
        except SigningError as exc:
            raise SigningError(f"cannot sign a record: {exc}") from None

    def append(
        self, build: Callable[[dict[str, Any] | None], dict[str, Any]], *, timeout_s: float = 60.0
    ) -> tuple[Path, dict[str, Any]]:
        with self.locked(timeout_s):
            return self.append_locked(build)


# ---------------------------------------------------------------- chain queries
# Pure functions over the typed records (``tasks/record_models.py``), oldest first.
INTRODUCING = ("promoted", "policy-updated")  # decisions that put a champion in the seat


class RecordNotFound(LookupError):
    """The chain has no record of the kind a query asks for; the message says which."""


class NoChampion(RecordNotFound):
    """A job that acts on the champion (monitoring, a policy update) found none in the chain."""


@overload
def champion_of(head: None) -> None: ...
@overload
def champion_of(head: dict[str, Any]) -> dict[str, Any] | None: ...
@overload
def champion_of(head: Record) -> ChampionBlock | None: ...
def champion_of(head: Record | dict[str, Any] | None) -> ChampionBlock | dict[str, Any] | None:
    """The champion block the head record says should serve (None: no champion yet); typed
    for a typed record, the stored dict for a stored dict."""
    if head is None:
        return None
    if isinstance(head, dict):
        champ = head.get("champion")
        return champ if isinstance(champ, dict) else None
    return head.champion


def current_champion(records: Sequence[Record]) -> ChampionBlock | None:
    """The champion the newest record says should serve (None: no champion yet)."""
    return records[-1].champion if records else None


def introducing_record(records: Sequence[Record], block: ChampionBlock) -> SeatingRecord:
    """The latest record that put this model version and policy in the champion seat (a
    promotion, or a policy update of the same model). ``RecordNotFound`` if none did."""
    for rec in reversed(records):
        champ = rec.champion
        if (
            isinstance(rec, PromotionRecord | PolicyUpdateRecord)
            and rec.decision in INTRODUCING
            and champ is not None
            and champ.model_version == block.model_version
            and champ.policy_id == block.policy_id
            and champ.artifact_sha256 == block.artifact_sha256
        ):
            return rec
    raise RecordNotFound(
        f"no promotion record introduced model v{block.model_version} with policy "
        f"{block.policy_id[:12]}"
    )


def model_record(records: Sequence[Record], block: ChampionBlock) -> PromotionRecord:
    """The promotion record that gated this model artifact (a policy update keeps it)."""
    for rec in reversed(records):
        if (
            isinstance(rec, PromotionRecord)
            and rec.decision == "promoted"
            and rec.champion is not None
            and rec.champion.artifact_sha256 == block.artifact_sha256
        ):
            return rec
    raise RecordNotFound(f"no promotion record gated model v{block.model_version}")


def active_challenger(records: Sequence[Record]) -> ChallengerRecord | None:
    """The shadow challenger: the latest ``challenger`` record after the record that
    introduced the current champion (a new champion, or a policy update, retires it). None
    without a champion or challenger; ``RecordNotFound`` if no record introduced the
    champion."""
    champ = current_champion(records)
    if champ is None:
        return None
    since = introducing_record(records, champ).sequence
    for rec in reversed(records):
        if rec.sequence <= since:
            return None
        if isinstance(rec, ChallengerRecord):
            return rec
    return None


def latest_monitoring(records: Sequence[Record], *, after: int = 0) -> MonitoringRecord | None:
    """The newest monitoring record with a sequence above ``after`` (None if there is none)."""
    for rec in reversed(records):
        if rec.sequence <= after:
            return None
        if isinstance(rec, MonitoringRecord):
            return rec
    return None


class VerificationError(RuntimeError):
    """An artifact or policy does not match what the record says."""


def resolve_artifact(workspace_root: Path, relative: str) -> Path:
    path = (workspace_root / relative).resolve()
    if workspace_root.resolve() not in path.parents:
        raise VerificationError(f"artifact path {relative!r} leaves the workspace")
    return path


def read_verified(path: Path, expected_sha256: str, what: str) -> bytes:
    """The bytes of ``path``, read once, after checking they hash to ``expected_sha256``.
    Use these bytes, never the path again: the file may change after the check."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VerificationError(f"{what} missing: {path}") from None
    except OSError as exc:
        raise VerificationError(f"{what} {path} is unreadable: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise VerificationError(
            f"{what} {path.name} SHA-256 {digest[:12]} does not "
            f"match the record's {str(expected_sha256)[:12]} (tampered or replaced)"
        )
    return data


def verify_file(path: Path, expected_sha256: str, what: str) -> None:
    """Raise unless ``path`` exists and hashes to ``expected_sha256``."""
    read_verified(path, expected_sha256, what)


def _seat_file(champion: ChampionBlock | dict[str, Any], what: str) -> tuple[str, str]:
    """(relative path, SHA-256) of a seat's ``artifact`` or ``policy`` file."""
    if isinstance(champion, ChampionBlock):
        if what == "artifact":
            return champion.artifact_path, champion.artifact_sha256
        return champion.policy_path, champion.policy_sha256
    return str(champion[f"{what}_path"]), str(champion[f"{what}_sha256"])


def load_verified_model(workspace_root: Path, champion: ChampionBlock | dict[str, Any]) -> Any:
    """Read the artifact once, check its SHA-256 (the value in the signed record), and
    unpickle those same bytes: nothing that failed the check reaches joblib."""
    rel, sha = _seat_file(champion, "artifact")
    data = read_verified(resolve_artifact(workspace_root, rel), sha, "model artifact")
    import joblib  # deserialising runs code: only the verified bytes

    return joblib.load(io.BytesIO(data))


def load_verified_policy_text(
    workspace_root: Path, champion: ChampionBlock | dict[str, Any]
) -> str:
    rel, sha = _seat_file(champion, "policy")
    return read_verified(resolve_artifact(workspace_root, rel), sha, "policy document").decode()


# ---------------------------------------------------------------- full audit (`verify`)
@dataclass(frozen=True)
class AuditReport:
    """Everything ``bayespilot verify`` checked: chain, signatures, files, alias."""

    chain: ChainReport
    problems: tuple[str, ...]  # every problem, the chain's included
    notes: tuple[str, ...]  # checks that could not run, with why
    files_checked: int

    @property
    def ok(self) -> bool:
        return not self.problems


def _file_refs(rec: dict[str, Any]) -> list[tuple[str, str | None, str | None, bool]]:
    """(what, relative path, sha256, required) for every file a record names. Files a record
    puts in a seat (champion, challenger, the one it replaced) are required; a rejected run's
    artifact may have been cleaned up, but if present it must still match."""
    refs: list[tuple[str, str | None, str | None, bool]] = []
    for seat in ("champion", "challenger", "previous_champion"):
        block = rec.get(seat)
        if isinstance(block, dict):
            refs.append(
                (
                    f"{seat} model artifact",
                    block.get("artifact_path"),
                    block.get("artifact_sha256"),
                    True,
                )
            )
            refs.append(
                (
                    f"{seat} policy document",
                    block.get("policy_path"),
                    block.get("policy_sha256"),
                    True,
                )
            )
    art = rec.get("artifact")
    if isinstance(art, dict) and art.get("path"):
        refs.append(("run artifact", art.get("path"), art.get("sha256"), False))
    ref = rec.get("reference")
    if isinstance(ref, dict) and ref.get("path"):  # monitoring needs a seated model's reference
        seated = rec.get("decision") in ("promoted", "challenger")
        refs.append(("drift reference", ref.get("path"), ref.get("sha256"), seated))
    return refs


def audit(
    store: RecordStore,
    workspace_root: Path,
    *,
    alias_check: Callable[[list[dict[str, Any]]], tuple[str | None, str | None]] | None = None,
) -> AuditReport:
    """The chain (hashes, links, sequence, signatures) plus every file each record names,
    hashed. ``alias_check(verified records)`` returns (problem, note) for the registry
    (``tasks.promote.mlflow_alias_check``: a lagging alias is a note, a moved one a problem)."""
    chain, records = store.verified_records()
    problems = list(chain.problems)
    notes: list[str] = []
    checked: set[tuple[str, str]] = set()
    for rec in records:
        name = f"{int(rec.get('sequence') or 0):06d}-{rec.get('kind')}"
        for what, rel, sha, required in _file_refs(rec):
            if not rel or not sha:
                if required:
                    problems.append(f"{name}: {what} has no path or SHA-256 in the record")
                continue
            if (rel, sha) in checked:
                continue
            checked.add((rel, sha))
            try:
                path = resolve_artifact(workspace_root, rel)
                if not required and not path.exists():
                    notes.append(f"{name}: {what} {rel} no longer exists (not served)")
                    continue
                read_verified(path, sha, what)
            except VerificationError as exc:
                problems.append(f"{name}: {exc}")
    if alias_check is not None:
        problem, note = alias_check(records)
        if problem:
            problems.append(problem)
        if note:
            notes.append(note)
    return AuditReport(chain, tuple(problems), tuple(notes), len(checked))
