"""Crash recovery: the registry alias against the record chain, and the leftovers of killed runs.

The record chain is the source of truth. A promotion writes, in this order: the MLflow
version (tagged with the run id) -> the record (fsynced, with its directory and the signed
head marker) -> alias ``previous`` -> alias ``champion`` -> tag ``seated_by_record`` (the
record id) on the new champion's version. A rollback: record -> alias ``champion`` -> tag.
A SIGKILL anywhere leaves one of two states:

* before the record: the old champion is fully in force; the new MLflow version and the
  run's ``models/<run>/`` folder are leftovers that no record names;
* after the record, before the alias: the alias **lags**.

**Lagging alias** (precise): the newest *seat-changing* record (one whose ``champion`` names
another model version than its ``previous_champion``: a promotion or a rollback; later
records that keep the seat, such as a rejection or a monitoring record, do not count) names
version N; the alias names exactly that record's ``previous_champion`` version (or is unset
when there was none); and version N does not carry that record's id in its
``seated_by_record`` tag (so the alias move after that record never completed). A lagging
alias is reconcilable, not an outage: serving serves the chain's champion and says so in
``/readyz``, ``bayespilot verify`` prints a note and exits 0, and the next run (promotion,
policy update or rollback, under the record lock) moves the alias and logs that it did.

Any other mismatch is a **moved** alias (moved by hand): ``verify`` exits 1, a fresh service
is not ready and says why, a running one keeps its verified model, and no run moves it back.

Leftovers the next run removes (``reconcile``, under the record lock): ``.record-*.tmp`` and
``.head-*.tmp`` files in ``promotions/``; MLflow versions of the model that no record names
(never served; a version that carries an alias is reported, not deleted); and
``models/<run>/`` folders that no record names and whose run is not alive. A run is alive
while it holds an ``fcntl.flock`` on ``models/<run>/.alive`` (``run_alive``): the lock dies
with the process, so a concurrent run's folder is never touched and no age threshold is
needed.

Standard library only (MLflow imported lazily by ``MlflowRegistry``): serving imports it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

ALIVE_FILE = ".alive"
SEATED_BY_TAG = "seated_by_record"  # record id that last put this version in the champion seat
TEMP_PATTERNS = (".record-*.tmp", ".head-*.tmp")


# ---------------------------------------------------------------- alias against the chain
def _version(block: Any) -> str | None:
    if isinstance(block, dict) and block.get("model_version") is not None:
        return str(block["model_version"])
    return None


def seat_change(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest record that put another model version in the champion seat (promotion or
    rollback); None when no record ever seated a champion."""
    for rec in reversed(records):
        if _version(rec.get("champion")) != _version(rec.get("previous_champion")):
            return rec
    return None


@dataclass(frozen=True)
class AliasState:
    """The registry alias ``champion`` compared with the chain (see the module docstring).

    ``status``: ``in-force`` (alias = chain), ``lagging`` (crash between record and alias:
    reconcilable), ``moved`` (anything else: a problem)."""

    status: Literal["in-force", "lagging", "moved"]
    alias_version: str | None
    chain_version: str | None
    seat_record_id: str | None
    previous_version: str | None  # the version the seat-changing record replaced
    seat_kind: str | None  # "promotion" | "rollback" | ...

    def message(self, model_name: str, alias: str = "champion") -> str:
        shown = "nothing" if self.alias_version is None else f"v{self.alias_version}"
        if self.status == "lagging":
            return (
                f"MLflow alias '{alias}' of {model_name} lags the record chain: it names "
                f"{shown}, the champion before record {str(self.seat_record_id)[:12]} seated "
                f"v{self.chain_version} (a run stopped between the record and the alias move); "
                "the chain's champion is in force and the next run moves the alias"
            )
        if self.chain_version is None:
            return (
                f"MLflow alias '{alias}' of {model_name} points at {shown} but the record chain "
                "has no champion (moved by hand?)"
            )
        return (
            f"MLflow alias '{alias}' of {model_name} points at {shown} but the record chain "
            f"head says v{self.chain_version}: move the alias back, or append a record that "
            "explains the change"
        )


def alias_state(
    records: Sequence[dict[str, Any]], alias_version: str | None, seated_by: str | None
) -> AliasState:
    """Classify the alias. ``records``: the verified chain; ``alias_version``: the version the
    registry alias names (None: unset); ``seated_by``: the ``seated_by_record`` tag of the
    chain champion's version (None: untagged)."""
    chain = _version(records[-1].get("champion")) if records else None
    seat = seat_change(records)
    previous = _version(seat.get("previous_champion")) if seat else None
    seat_id = str(seat["record_id"]) if seat else None
    kind = str(seat.get("kind")) if seat else None
    if alias_version == chain:
        status: Literal["in-force", "lagging", "moved"] = "in-force"
    elif seat is not None and alias_version == previous and seated_by != seat_id:
        status = "lagging"
    else:
        status = "moved"
    return AliasState(status, alias_version, chain, seat_id, previous, kind)


# ---------------------------------------------------------------- the registry
@dataclass(frozen=True)
class RegistryVersion:
    version: str
    aliases: tuple[str, ...]
    run_id: str | None  # the ``run_id`` tag the promotion set at registration


class Registry(Protocol):
    """What reconciliation needs from a model registry (MLflow: ``MlflowRegistry``)."""

    def alias_version(self, model_name: str, alias: str) -> str | None: ...

    def version_tag(self, model_name: str, version: str, key: str) -> str | None: ...

    def set_alias(self, model_name: str, alias: str, version: str) -> None: ...

    def delete_alias(self, model_name: str, alias: str) -> None: ...

    def set_tag(self, model_name: str, version: str, key: str, value: str) -> None: ...

    def versions(self, model_name: str) -> list[RegistryVersion]: ...

    def delete_version(self, model_name: str, version: str) -> None: ...


class MlflowRegistry:
    """``Registry`` over an MLflow tracking URI (MLflow imported on first use)."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: Any = None

    @staticmethod
    def available(tracking_uri: str) -> bool:
        """False for a SQLite registry file that does not exist (never create one here)."""
        if tracking_uri.startswith("sqlite:///"):
            return Path(tracking_uri.removeprefix("sqlite:///")).is_file()
        return True

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @staticmethod
    def _missing(exc: Exception) -> bool:
        from mlflow.exceptions import MlflowException

        return isinstance(exc, MlflowException) and exc.error_code in (
            "RESOURCE_DOES_NOT_EXIST",
            "INVALID_PARAMETER_VALUE",
        )

    def alias_version(self, model_name: str, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(model_name, alias).version)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise

    def version_tag(self, model_name: str, version: str, key: str) -> str | None:
        try:
            tags = self.client.get_model_version(model_name, version).tags or {}
        except Exception as exc:
            if self._missing(exc):
                return None
            raise
        value = tags.get(key)
        return None if value is None else str(value)

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name, alias, version)

    def delete_alias(self, model_name: str, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(model_name, alias)
        except Exception as exc:
            if not self._missing(exc):
                raise

    def set_tag(self, model_name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(model_name, version, key, value)

    def versions(self, model_name: str) -> list[RegistryVersion]:
        try:
            found = self.client.search_model_versions(f"name='{model_name}'")
        except Exception as exc:
            if self._missing(exc):
                return []
            raise
        return [
            RegistryVersion(str(mv.version), tuple(mv.aliases or ()), (mv.tags or {}).get("run_id"))
            for mv in found
        ]

    def delete_version(self, model_name: str, version: str) -> None:
        self.client.delete_model_version(model_name, version)


def move_champion_alias(
    registry: Registry, model_name: str, version: str, record: dict[str, Any], *, stage: str
) -> None:
    """The alias moves that follow a seat-changing ``record``, in crash-safe order: alias
    ``previous`` (promotion: the replaced version; rollback: removed), then ``champion``,
    then the ``seated_by_record`` tag that marks the move complete. ``stage`` names the
    failpoint between the two alias moves (``<stage>:between-aliases``)."""
    from tasks.failpoints import failpoint

    previous = record.get("previous_champion")
    if record.get("kind") == "rollback":
        registry.delete_alias(model_name, "previous")
    elif isinstance(previous, dict) and previous.get("model_name") == model_name:
        registry.set_alias(model_name, "previous", str(previous["model_version"]))
    failpoint(f"{stage}:between-aliases")
    registry.set_alias(model_name, "champion", version)
    registry.set_tag(model_name, version, SEATED_BY_TAG, str(record["record_id"]))


# ---------------------------------------------------------------- run liveness
@contextlib.contextmanager
def run_alive(folder: Path) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``folder/.alive`` for the block (the run's life): while
    held, ``reconcile`` never removes the folder. The lock dies with the process, so a killed
    run's folder is recognised at once. The lock file (and the folder, if the run wrote nothing
    into it) is removed on a normal exit."""
    path = folder / ALIVE_FILE
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a reconciler removed the folder in between: again
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file a reconciler unlinked: take a fresh one
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
        with contextlib.suppress(OSError):  # a run that wrote nothing leaves no folder
            folder.rmdir()


@contextlib.contextmanager
def run_scratch(folder: Path) -> Iterator[Path]:
    """A scratch folder for the run's life (``run_alive``'s lock): removed with everything in
    it when the block ends; a killed run's is removed by the next ``reconcile``."""
    try:
        with run_alive(folder):
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_if_dead(folder: Path) -> bool:
    """Remove ``folder`` unless a live run holds its ``.alive`` lock. True if removed."""
    path = folder / ALIVE_FILE
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        shutil.rmtree(folder, ignore_errors=True)  # no lock file: its run has ended
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its run is alive
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reconcile
@dataclass(frozen=True)
class ReconcileReport:
    """What the start of a run found and did. ``problems`` are left for a person."""

    alias: str | None = None  # what happened to the alias, if anything
    temp_files_removed: tuple[str, ...] = ()
    versions_deleted: tuple[str, ...] = ()  # MLflow versions no record names
    versions_kept: tuple[str, ...] = ()  # unrecorded but carrying an alias: reported only
    folders_removed: tuple[str, ...] = ()  # models/<run> no record names, run not alive
    folders_live: tuple[str, ...] = ()  # unrecorded folders of runs still alive
    problems: tuple[str, ...] = ()
    registry_checked: bool = True
    scratch_removed: tuple[str, ...] = ()  # staging/<run> of runs no longer alive

    @property
    def empty(self) -> bool:
        return not (
            self.alias
            or self.temp_files_removed
            or self.versions_deleted
            or self.versions_kept
            or self.folders_removed
            or self.scratch_removed
            or self.problems
        )

    def notes(self) -> tuple[str, ...]:
        """One line per action, for the run's log and its record notes."""
        out: list[str] = []
        if self.alias:
            out.append(f"reconcile: {self.alias}")
        if self.temp_files_removed:
            out.append(
                "reconcile: removed leftover temp files " + ", ".join(self.temp_files_removed)
            )
        if self.versions_deleted:
            out.append(
                "reconcile: deleted MLflow versions no record names (never served): "
                + ", ".join(f"v{v}" for v in self.versions_deleted)
            )
        if self.versions_kept:
            out.append(
                "reconcile: MLflow versions no record names but carrying an alias, left alone: "
                + ", ".join(f"v{v}" for v in self.versions_kept)
            )
        if self.folders_removed:
            out.append(
                "reconcile: removed model folders no record names (killed or failed runs): "
                + ", ".join(self.folders_removed)
            )
        if self.scratch_removed:
            out.append(
                "reconcile: removed the staging folders of runs no longer alive: "
                + ", ".join(self.scratch_removed)
            )
        out += [f"reconcile problem: {p}" for p in self.problems]
        return tuple(out)


def _named_versions(records: Sequence[dict[str, Any]], model_name: str) -> set[str]:
    named: set[str] = set()
    for rec in records:
        for seat in ("champion", "previous_champion", "challenger"):
            block = rec.get(seat)
            if isinstance(block, dict) and block.get("model_name") == model_name:
                v = _version(block)
                if v is not None:
                    named.add(v)
        if rec.get("model_name") == model_name and rec.get("model_version") is not None:
            named.add(str(rec["model_version"]))
    return named


def _named_folders(records: Sequence[dict[str, Any]]) -> set[str]:
    """``models/<run>`` folder names any record points into."""
    paths: list[Any] = []
    for rec in records:
        for seat in ("champion", "previous_champion", "challenger"):
            block = rec.get(seat)
            if isinstance(block, dict):
                paths += [block.get("artifact_path"), block.get("policy_path")]
        art = rec.get("artifact")
        if isinstance(art, dict):
            paths.append(art.get("path"))
    names: set[str] = set()
    for p in paths:
        parts = Path(str(p)).parts if p else ()
        if len(parts) >= 2 and parts[0] == "models":
            names.add(parts[1])
    return names


def reconcile(
    records: Sequence[dict[str, Any]],
    *,
    promotions_dir: Path,
    models_dir: Path | None,
    model_name: str,
    registry: Registry | None,
    own_run: str | None = None,
    staging_dir: Path | None = None,
) -> ReconcileReport:
    """Repair what a killed run left. Call holding the record lock, with the chain's verified
    records (``RecordStore.verified_records`` with ``ok``): a lagging alias is moved to the
    chain's champion, leftovers are removed (see the module docstring). ``registry`` None: the
    registry part is skipped (no registry yet); ``models_dir`` None: folders are not looked
    at. ``own_run``: the caller's run (never touched). ``staging_dir``: the runs' scratch
    folders (``run_scratch``), those of runs no longer alive are removed."""
    temp: list[str] = []
    if promotions_dir.is_dir():
        for pattern in TEMP_PATTERNS:
            for p in sorted(promotions_dir.glob(pattern)):
                p.unlink(missing_ok=True)
                temp.append(p.name)
    alias_note: str | None = None
    problems: list[str] = []
    deleted: list[str] = []
    kept: list[str] = []
    if registry is not None:
        chain = _version(records[-1].get("champion")) if records else None
        current = registry.alias_version(model_name, "champion")
        seated_by = registry.version_tag(model_name, chain, SEATED_BY_TAG) if chain else None
        state = alias_state(records, current, seated_by)
        seat = seat_change(records)
        if state.status == "lagging" and seat is not None and chain is not None:
            move_champion_alias(registry, model_name, chain, seat, stage="reconcile")
            alias_note = (
                f"moved the lagging MLflow alias 'champion' of {model_name} from "
                f"{'nothing' if current is None else 'v' + current} to v{chain}, the champion "
                f"record {str(seat['record_id'])[:12]} seated"
            )
            log.warning("%s", alias_note)
        elif state.status == "moved":
            problems.append(state.message(model_name) + " (left as it is)")
        named = _named_versions(records, model_name)
        for mv in registry.versions(model_name):
            if mv.version in named:
                continue
            if mv.aliases:
                kept.append(mv.version)
                continue
            registry.delete_version(model_name, mv.version)
            deleted.append(mv.version)
    removed: list[str] = []
    live: list[str] = []
    if models_dir is not None and models_dir.is_dir():
        keep = _named_folders(records) | ({own_run} if own_run else set())
        for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
            if folder.name in keep:
                continue
            if _remove_if_dead(folder):
                removed.append(folder.name)
            else:
                live.append(folder.name)
    scratch: list[str] = []
    if staging_dir is not None and staging_dir.is_dir():
        for folder in sorted(p for p in staging_dir.iterdir() if p.is_dir()):
            if folder.name != own_run and _remove_if_dead(folder):
                scratch.append(folder.name)
    report = ReconcileReport(
        alias_note,
        tuple(temp),
        tuple(sorted(deleted, key=int)),
        tuple(sorted(kept, key=int)),
        tuple(removed),
        tuple(live),
        tuple(problems),
        registry is not None,
        tuple(scratch),
    )
    for line in report.notes():
        log.info("%s", line)
    return report


def reconcile_workspace(
    store: Any,
    models_dir: Path,
    *,
    tracking_uri: str,
    model_name: str,
    own_run: str | None = None,
    staging_dir: Path | None = None,
) -> ReconcileReport:
    """``reconcile`` for a workspace: ``store`` is its ``RecordStore``, ``models_dir`` its
    ``models/`` folder; call holding
    ``store.locked()``. A broken chain is left alone (the run stops on it anyway); only
    temp files and dead runs' staging folders are removed then."""
    report, records = store.verified_records()
    registry = MlflowRegistry(tracking_uri) if MlflowRegistry.available(tracking_uri) else None
    if not report.ok:
        return reconcile(
            [],
            promotions_dir=store.directory,
            models_dir=None,
            model_name=model_name,
            registry=None,
            own_run=own_run,
            staging_dir=staging_dir,
        )
    return reconcile(
        records,
        promotions_dir=store.directory,
        models_dir=models_dir,
        model_name=model_name,
        registry=registry,
        own_run=own_run,
        staging_dir=staging_dir,
    )
