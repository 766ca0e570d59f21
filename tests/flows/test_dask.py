"""The flow on a real distributed.LocalCluster through prefect-dask's DaskTaskRunner."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.settings import build_config

from ..conftest import small_layers

pytestmark = pytest.mark.slow


def test_flow_on_dask_local_cluster_matches_threads(prefect_harness, tmp_path: Path) -> None:
    from flows.promotion import run_direct, run_prefect, task_runner_for

    dask_cfg = build_config(
        small_layers(tmp_path / "dask", rows=8000, scaleout={"engine": "dask", "dask_workers": 2})
    )
    runner = task_runner_for(dask_cfg)
    assert type(runner).__name__ == "DaskTaskRunner"
    on_dask = run_prefect(dask_cfg).outcome.record
    direct = run_direct(build_config(small_layers(tmp_path / "direct", rows=8000))).outcome.record
    assert on_dask["flow_run_id"]
    assert on_dask["decision"] == direct["decision"]
    assert [(g["gate"], g["passed"]) for g in on_dask["gates"]] == [
        (g["gate"], g["passed"]) for g in direct["gates"]
    ]
    values = {g["gate"]: g["value"] for g in on_dask["gates"] if g["gate"] != "technical"}
    assert values == {g["gate"]: g["value"] for g in direct["gates"] if g["gate"] != "technical"}
