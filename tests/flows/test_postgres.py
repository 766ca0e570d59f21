"""A promotion with MLflow's backend store and Prefect's database on a throwaway PostgreSQL
(Debian's server binaries: initdb + pg_ctl in a temp dir, on a free port on 127.0.0.1)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ..conftest import free_port, small_layers

pytestmark = [pytest.mark.server, pytest.mark.slow]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_pg(cmd: list[str]) -> list[str]:
    """initdb refuses root: run the server tools as the postgres user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[str]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed; "
            "`apt-get install postgresql` (.ci/run does)"
        )
    # pytest's tmp dirs are private to root; the postgres user needs its own readable dir
    root = Path(tempfile.mkdtemp(prefix="bayespilot-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    subprocess.run(
        _as_pg(
            [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_pg(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-o",
                f"-p {port} -h 127.0.0.1 -k {root}",
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        for db in ("mlflow", "prefect"):
            subprocess.run(
                [
                    str(bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    db,
                ],
                check=True,
                capture_output=True,
            )
        yield f"postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_pg([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_promotion_on_postgres_backends(postgres: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    mlflow_uri = f"postgresql+psycopg2://{postgres}/mlflow"
    layers = small_layers(tmp_path / "ws", rows=8000)
    layers["backends"] = {
        "mlflow_tracking_uri": mlflow_uri,
        "prefect_database_url": f"postgresql+asyncpg://{postgres}/prefect",
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(layers))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "decision: PROMOTED" in proc.stdout
    assert not (tmp_path / "ws" / "mlflow.db").exists()  # nothing went to SQLite
    client = MlflowClient(tracking_uri=mlflow_uri)
    mv = client.get_model_version_by_alias("churn-risk", "champion")
    assert str(mv.version) == "1"
    bindir = _pg_bin()
    assert bindir is not None
    host, port = postgres.split("@")[1].split(":")
    out = subprocess.run(
        [
            str(bindir / "psql"),
            "-h",
            host,
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            "prefect",
            "-tAc",
            "select count(*) from flow_run",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert int(out.strip()) >= 1
