"""``bayespilot replay RECORD``: retrain from the record's config on data whose hash must
match, re-run every gate, and report per gate whether decision and value agree."""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs.paths import Workspace
from configs.settings import build_config
from flows import distributed
from flows.promotion import evaluate
from flows.runner import DirectRunner
from tasks.history import compare_gates
from tasks.record_models import (
    ChallengerRecord,
    GateRecord,
    PromotionRecord,
    Record,
    body_dict,
    parse_record,
)


@dataclass(frozen=True)
class ReplayReport:
    record_id: str
    rows: list[dict[str, Any]]
    abs_tolerance: float
    rel_tolerance: float

    @property
    def agrees(self) -> bool:
        return all(r["agrees"] for r in self.rows)


def replay(
    stored: Record | dict[str, Any],
    *,
    workspace: Workspace,
    abs_tolerance: float = 1e-6,
    rel_tolerance: float = 1e-6,
) -> ReplayReport:
    """Re-run the record's evaluation (never writes a record, model version or alias).
    ``stored``: the record, typed or as stored (``RecordStore.find``)."""
    record = parse_record(stored) if isinstance(stored, dict) else stored
    if not isinstance(record, PromotionRecord | ChallengerRecord):
        raise ValueError(f"only promotion records can be replayed, not {record.kind!r}")
    if record.config is None or record.data is None:
        raise ValueError(
            f"record {record.sequence} names no config or data to replay (a promoted "
            "challenger's record: replay the challenger record it names)"
        )
    layers = dict(record.config)
    layers["paths"] = {"workspace": str(workspace.root)}
    config = build_config(layers)
    run_id = f"replay-{uuid.uuid4().hex[:8]}"
    with (
        tempfile.TemporaryDirectory(prefix="bayespilot-replay-") as tmp,
        distributed.staging_for_run(config, workspace.run_staging(run_id)),
    ):
        ev = evaluate(
            config,
            runner=DirectRunner(),
            run_id=run_id,
            workspace=workspace,
            models_dir=Path(tmp),
            champion=body_dict(record.previous_champion) if record.previous_champion else None,
            champion_record_id="",
            expected_data_sha256=record.data.sha256,
        )
    rows = compare_gates(
        record.gates,
        [GateRecord.model_validate(g.as_dict()) for g in ev.gates],
        abs_tolerance=abs_tolerance,
        rel_tolerance=rel_tolerance,
    )
    return ReplayReport(record.record_id, rows, abs_tolerance, rel_tolerance)
