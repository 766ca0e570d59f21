"""tasks/reconcile.py: the lagging-alias rule, the liveness lock, and the cleanup report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tasks.reconcile import (
    ALIVE_FILE,
    SEATED_BY_TAG,
    RegistryVersion,
    alias_state,
    reconcile,
    run_alive,
    run_scratch,
)

MODEL = "churn-risk"


def _block(version: int, run: str) -> dict[str, Any]:
    return {
        "model_name": MODEL,
        "model_version": str(version),
        "artifact_path": f"models/{run}/model.joblib",
        "policy_path": f"models/{run}/policy.json",
    }


def _chain() -> list[dict[str, Any]]:
    """v1 promoted, v2 promoted, a rejection (keeps v2), a monitoring record."""
    b1, b2 = _block(1, "r1"), _block(2, "r2")
    return [
        {"record_id": "a" * 64, "kind": "promotion", "champion": b1, "previous_champion": None},
        {"record_id": "b" * 64, "kind": "promotion", "champion": b2, "previous_champion": b1},
        {
            "record_id": "c" * 64,
            "kind": "promotion",
            "champion": b2,
            "previous_champion": b2,
            "artifact": {"path": "models/r3/model.joblib"},
        },
        {"record_id": "d" * 64, "kind": "monitoring", "champion": b2, "previous_champion": b2},
    ]


class FakeRegistry:
    def __init__(self, versions: dict[str, dict[str, str]], aliases: dict[str, str]) -> None:
        self.tags = versions
        self.aliases = aliases
        self.deleted: list[str] = []

    def alias_version(self, model_name: str, alias: str) -> str | None:
        return self.aliases.get(alias)

    def version_tag(self, model_name: str, version: str, key: str) -> str | None:
        return self.tags.get(version, {}).get(key)

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def delete_alias(self, model_name: str, alias: str) -> None:
        self.aliases.pop(alias, None)

    def set_tag(self, model_name: str, version: str, key: str, value: str) -> None:
        self.tags.setdefault(version, {})[key] = value

    def versions(self, model_name: str) -> list[RegistryVersion]:
        return [
            RegistryVersion(
                v, tuple(a for a, av in self.aliases.items() if av == v), t.get("run_id")
            )
            for v, t in self.tags.items()
        ]

    def delete_version(self, model_name: str, version: str) -> None:
        self.tags.pop(version)
        self.deleted.append(version)


def test_alias_state_in_force_lagging_and_moved() -> None:
    chain = _chain()
    assert alias_state(chain, "2", "b" * 64).status == "in-force"
    # the alias still names v1, the champion record b replaced, and v2 was never tagged by b
    lag = alias_state(chain, "1", None)
    assert lag.status == "lagging" and lag.seat_record_id == "b" * 64
    assert "lags the record chain" in lag.message(MODEL)
    # v2 carries b's id: the move after b completed, so v1 now is a hand move
    assert alias_state(chain, "1", "b" * 64).status == "moved"
    assert alias_state(chain, "7", None).status == "moved"
    # the first promotion: no alias yet lags; an alias with no champion at all is moved
    assert alias_state(chain[:1], None, None).status == "lagging"
    assert alias_state([], "1", None).status == "moved"


def test_run_alive_folder_survives_reconcile_while_its_run_lives(tmp_path: Path) -> None:
    models = tmp_path / "models"
    live = models / "live-run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from tasks.reconcile import run_alive\n"
            f"with run_alive(Path({str(live)!r})):\n"
            "    print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        dead = models / "dead-run"
        dead.mkdir(parents=True)
        (dead / ALIVE_FILE).touch()  # its run was killed: nobody holds the lock
        (dead / "model.joblib").write_bytes(b"x")
        report = reconcile(
            [],
            promotions_dir=tmp_path / "promotions",
            models_dir=models,
            model_name=MODEL,
            registry=None,
        )
        assert report.folders_removed == ("dead-run",) and report.folders_live == ("live-run",)
        assert live.is_dir() and not dead.exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not live.exists()  # a run that wrote nothing but its lock leaves no folder


def test_run_alive_removes_only_its_lock_file(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "run"
    with run_alive(folder):
        (folder / "model.joblib").write_bytes(b"x")
        assert (folder / ALIVE_FILE).exists()
    assert (folder / "model.joblib").exists() and not (folder / ALIVE_FILE).exists()


def test_reconcile_moves_a_lagging_alias_and_removes_leftovers(tmp_path: Path) -> None:
    promotions, models = tmp_path / "promotions", tmp_path / "models"
    promotions.mkdir()
    (promotions / ".record-x1.tmp").write_text("")
    for run in ("r1", "r2", "r3", "orphan"):
        (models / run).mkdir(parents=True)
    registry = FakeRegistry(
        {
            "1": {"run_id": "r1", SEATED_BY_TAG: "a" * 64},
            "2": {"run_id": "r2"},
            "3": {"run_id": "killed"},  # registered, killed before its record
            "4": {"run_id": "by-hand"},
        },
        {"champion": "1", "challenger": "4"},
    )
    report = reconcile(
        _chain(), promotions_dir=promotions, models_dir=models, model_name=MODEL, registry=registry
    )
    assert registry.aliases["champion"] == "2" and registry.aliases["previous"] == "1"
    assert registry.tags["2"][SEATED_BY_TAG] == "b" * 64
    assert report.alias is not None and "from v1 to v2" in report.alias
    assert report.temp_files_removed == (".record-x1.tmp",)
    assert report.versions_deleted == ("3",) and report.versions_kept == ("4",)
    assert report.folders_removed == ("orphan",)
    assert sorted(p.name for p in models.iterdir()) == ["r1", "r2", "r3"]
    notes = "\n".join(report.notes())
    assert ".record-x1.tmp" in notes and "v3" in notes and "orphan" in notes and "v4" in notes
    # the next run finds nothing to do
    again = reconcile(
        _chain(), promotions_dir=promotions, models_dir=models, model_name=MODEL, registry=registry
    )
    assert again.versions_kept == ("4",) and again.alias is None and not again.folders_removed


def test_reconcile_leaves_a_hand_moved_alias_and_reports_it(tmp_path: Path) -> None:
    registry = FakeRegistry(
        {"1": {SEATED_BY_TAG: "a" * 64}, "2": {SEATED_BY_TAG: "b" * 64}}, {"champion": "1"}
    )
    report = reconcile(
        _chain(),
        promotions_dir=tmp_path / "promotions",
        models_dir=tmp_path / "models",
        model_name=MODEL,
        registry=registry,
    )
    assert registry.aliases["champion"] == "1"
    assert report.alias is None and len(report.problems) == 1
    assert "points at v1" in report.problems[0] and "left as it is" in report.problems[0]


def test_promote_appends_the_record_before_moving_the_aliases(tmp_path: Path) -> None:
    """The record is the source of truth: when the aliases move it is already on disk (a
    kill during the move leaves a lagging alias, never an alias ahead of the chain)."""
    from configs.paths import Workspace
    from configs.settings import build_config
    from tasks.promote import Registration, promote
    from tasks.records import RecordStore
    from tests.tasks.test_train_and_promote import _evidence

    cfg = build_config({"paths": {"workspace": str(tmp_path)}})
    ws = Workspace.from_setting(str(tmp_path))
    on_disk: list[tuple[str, str]] = []

    def move(reg: Registration, record: dict[str, Any]) -> None:
        _, records = RecordStore(ws.promotions, ws.promotions_lock).verified_records()
        on_disk.append((record["record_id"], records[-1]["record_id"]))

    out = promote(
        _evidence(cfg),
        workspace=ws,
        register=lambda: Registration("m", "1", "models:/m/1"),
        move_aliases=move,
    )
    rid = out.record["record_id"]
    assert out.decision == "promoted" and on_disk == [(rid, rid)]


def test_run_scratch_is_removed_with_its_run_and_a_dead_runs_by_reconcile(
    tmp_path: Path,
) -> None:
    staging = tmp_path / "staging"
    with run_scratch(staging / "mine") as folder:
        (folder / "table.parquet").write_bytes(b"x")
        killed = staging / "killed"
        killed.mkdir()
        (killed / ALIVE_FILE).touch()  # nobody holds its lock
        (killed / "table.parquet").write_bytes(b"x")
        report = reconcile(
            [],
            promotions_dir=tmp_path / "promotions",
            models_dir=None,
            model_name=MODEL,
            registry=None,
            own_run="other",
            staging_dir=staging,
        )
        # this process holds "mine" alive: only the killed run's folder goes
        assert report.scratch_removed == ("killed",) and folder.is_dir()
        assert any("staging folders" in line for line in report.notes())
    assert not (staging / "mine").exists() and not killed.exists()
