"""What people read: data summary, gate tables, the decision in markdown, and plots (PNG)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.gates import GateResult
from tasks.load_data import ColumnRoles
from tasks.split_data import Splits
from tasks.validate_data import ValidationReport


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return round(value, 6) if np.isfinite(value) else str(value)
    return json.dumps(value, default=str)[:500]


def validation_rows(report: ValidationReport) -> list[dict[str, Any]]:
    return [
        {
            "column": i.column,
            "check": i.check,
            "failing_count": i.failing_count,
            "examples": ", ".join(i.examples),
        }
        for i in report.issues
    ]


def validation_headline(report: ValidationReport, report_path: Path | str) -> str:
    """One line for a failed validation (a flow state's message, a log line): how many
    problems, in which columns, and where the full report is. The CLI prints the report
    itself, once."""
    columns = list(dict.fromkeys(i.column for i in report.issues))
    shown = ", ".join(columns[:8]) + (f", ... (+{len(columns) - 8})" if len(columns) > 8 else "")
    return f"invalid data: {len(report.issues)} problem(s) in {shown}; full report: {report_path}"


def data_summary(source: str, roles: ColumnRoles, splits: Splits, report: ValidationReport) -> str:
    base = splits.positive_rate["train"]
    lines = [
        "## Data summary",
        f"- source: `{source}`",
        f"- rows: {report.rows}, columns: {report.columns}, base churn rate: {base:.3f}",
        f"- id: `{roles.id_column}`, label: `{roles.label_column}`",
        f"- numeric ({len(roles.numeric)}): {', '.join(roles.numeric)}",
        f"- categorical ({len(roles.categorical)}): {', '.join(roles.categorical)}",
        f"- ignored: {', '.join(roles.ignored) or 'none'}; "
        f"segments: {', '.join(roles.segment_columns) or 'none'}",
    ]
    if report.blank_as_missing:
        lines.append(f"- blank cells read as missing: {report.blank_as_missing}")
    lines += ["", "| split | rows | churn rate | sha256 |", "|---|---:|---:|---|"]
    for name, rows in splits.rows.items():
        lines.append(
            f"| {name} | {rows} | {splits.positive_rate[name]:.4f} | `{splits.hashes[name][:16]}` |"
        )
    return "\n".join(lines)


def gate_rows(gates: tuple[GateResult, ...]) -> list[dict[str, Any]]:
    return [
        {
            "gate": g.gate,
            "passed": g.passed,
            "metric": g.metric,
            "value": _cell(g.value),
            "interval": _cell(g.interval),
            "threshold": _cell(g.threshold),
            "reason": g.reason,
        }
        for g in gates
    ]


def gate_table(gates: tuple[GateResult, ...] | list[dict[str, Any]], title: str = "gates") -> Any:
    """The gates as a rich table: gate, PASS/FAIL, value, threshold (in the gate metric's
    unit) and the reason in full."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("gate", "left"),
        ("result", "left"),
        ("value", "right"),
        ("threshold", "right"),
        ("reason", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for g in (g.as_dict() if isinstance(g, GateResult) else g for g in gates):
        value, threshold = g.get("value"), g.get("threshold")
        table.add_row(
            g["gate"],
            "[green]PASS[/green]" if g["passed"] else "[red]FAIL[/red]",
            f"{value:.4g}" if isinstance(value, int | float) else str(value),
            f"{threshold:.4g}" if isinstance(threshold, int | float) else str(threshold),
            g.get("reason", ""),
        )
    return table


def gate_description(gate: GateResult) -> str:
    """A gate artifact's description: PASS or FAIL first (the UI cuts long ones short)."""
    return f"{'PASS' if gate.passed else 'FAIL'} {gate.gate}: {gate.reason}"[:500]


def economics_text(economics: dict[str, Any] | None) -> str:
    """One line: contact cost (USD), save rate (share), source and the record that set them."""
    if not economics:
        return "not recorded"
    values = economics.get("values") or economics
    text = (
        f"contact cost {values.get('contact_cost_usd')} USD, save rate {values.get('save_rate')}"
        f" (source {economics.get('source', '?')}"
    )
    by = economics.get("set_by_record")
    return text + (f", set by record {str(by)[:12]})" if by else ")")


def _image(path: Path) -> str:
    """An inline PNG (data URI) the Prefect UI's markdown renders without a file server."""
    import base64

    return f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"


def full_test_lines(full: dict[str, Any] | None) -> list[str]:
    """The record's evidence pass over the whole test split as markdown lines (none when
    the test split was not sampled)."""
    if not full:
        return []
    low, high = full["profit_interval_usd"]
    inside = full.get("sample_inside_interval")
    verdict = (
        "no business gate value to compare"
        if inside is None
        else "the sample represents the split"
        if inside
        else "**the sample does not represent the split**"
    )
    return [
        "",
        f"## The whole test split ({full['rows']:,} rows; the gates judged "
        f"{full['rows_judged']:,})",
        f"- profit {full['profit_per_customer_usd']:.4g} USD/customer "
        f"({full['confidence']:.0%} interval {low:.4g} to {high:.4g}); the judged sample's "
        f"{_cell(full.get('sample_profit_per_customer_usd'))}: {verdict}",
        f"- base rate {full['base_rate']:.4f}, mean probability {full['mean_probability']:.4f}, "
        f"contact rate {full['contact_rate']:.4f}, ECE {full['ece']:.4f} "
        f"({full['calibration_bins']} bins)",
    ]


def decision_markdown(
    record: dict[str, Any],
    plots: dict[str, str],
    *,
    mlflow_links: dict[str, str] | None = None,
) -> str:
    """The decision for the Prefect UI: decision, reasons, economics, gates, plots (PNGs
    inline, other files by their MLflow artifact URI) and ``mlflow_links`` (label -> URI)."""
    champ = record.get("champion") or {}
    lines = [
        f"# Decision: **{record['decision'].upper()}**",
        f"- record `{record['record_id'][:12]}` (sequence {record['sequence']}), "
        f"run `{record['run_id']}`",
        f"- candidate: `{record.get('candidate')}`, calibration: "
        f"`{record.get('calibration', {}).get('method')}`, "
        f"policy `{str(record.get('policy_id'))[:12]}`",
        f"- champion after this run: `{champ.get('model_name')}` v{champ.get('model_version')}"
        if champ
        else "- no champion",
        f"- economics: {economics_text(record.get('economics'))}",
        *[f"- {k}: `{v}`" for k, v in (mlflow_links or {}).items()],
        "",
        "## Why",
        *[f"- {r}" for r in record["reasons"]],
        *(
            [f"- {record['economics']['message']}"]
            if (record.get("economics") or {}).get("message")
            else []
        ),
        "",
        "## Gates",
        "| gate | passed | metric | value | interval | threshold |",
        "|---|---|---|---:|---|---:|",
    ]
    for g in record["gates"]:
        lines.append(
            f"| {g['gate']} | {'yes' if g['passed'] else '**no**'} | {g['metric']} | "
            f"{_cell(g['value'])} | {_cell(g['interval'])} | {_cell(g['threshold'])} |"
        )
    lines += full_test_lines((record.get("data") or {}).get("full_test"))
    expl = record.get("explanation") or {}
    imp = (expl.get("permutation_importance") or {}).get("profit_usd_per_customer") or []
    if imp:
        lines += [
            "",
            "## What drives the decisions (permutation importance, profit USD/customer)",
            *[f"- {d['feature']}: {d['mean_drop']:.3f} (sd {d['std']:.3f})" for d in imp[:5]],
        ]
    slices = expl.get("error_slices") or []
    if slices:
        lines += [
            "",
            "## Where errors cost most (USD per customer)",
            *[
                f"- {d['slice']} ({d['rows']} rows): {d['error_cost_per_customer_usd']:.2f}"
                for d in slices
            ],
        ]
    if plots:
        lines += ["", "## Plots"]
        for name, where in plots.items():
            path = Path(where)
            if path.suffix == ".png" and path.is_file():
                lines += [f"### {name}", f"![{name}]({_image(path)})"]
            else:
                lines.append(f"- {name}: `{where}`")
    return "\n".join(lines)


def _save(fig: Any, ax: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_reliability(table: pd.DataFrame, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect")
    for kind, grp in table.groupby("kind"):
        ax.plot(grp["predicted"], grp["observed"], marker="o", label=str(kind))
    ax.set(xlabel="mean predicted churn probability", ylabel="observed churn rate", title=title)
    return _save(fig, ax, path)


def plot_profit_curve(
    curve: pd.DataFrame, chosen_share: float, chosen_profit: float, path: Path, title: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["contact_share"], curve["profit_per_customer_usd"], label="top share by EV")
    ax.scatter([chosen_share], [chosen_profit], color="red", zorder=3, label="chosen policy")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set(xlabel="share of customers contacted", ylabel="profit per customer (USD)", title=title)
    return _save(fig, ax, path)


# ---------------------------------------------------------------- console (rich)
def console() -> Any:
    """A rich console on stdout: terminal width on a TTY, wide (no wrapping) otherwise."""
    import sys

    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, width=None if tty else 200, highlight=False, soft_wrap=not tty)


def _money(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, int | float) else str(value)


def history_table(rows: list[dict[str, Any]]) -> Any:
    """``tasks.history.history_rows`` as a rich table (economics: contact cost USD / save
    rate, and their source)."""
    from rich.table import Table

    table = Table(title="Decision history", title_justify="left")
    for name, justify in (
        ("seq", "right"),
        ("time", "left"),
        ("kind", "left"),
        ("decision", "left"),
        ("model", "right"),
        ("champ", "right"),
        ("profit/cust", "right"),
        ("ECE-noise", "right"),
        ("economics (cost/save, source)", "left"),
        ("failed gates", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        profit, ece, econ = (
            r.get("profit_usd_per_customer"),
            r.get("ece_above_noise"),
            r.get("economics"),
        )
        econ_text = (
            f"{_money(econ['contact_cost_usd'])}/{_money(econ['save_rate'])} {econ['source']}"
            + (f" {econ['set_by_record']}" if econ.get("set_by_record") else "")
            if econ
            else "-"
        )
        table.add_row(
            str(r["sequence"]),
            str(r["time"]),
            r["kind"],
            r["decision"],
            str(r["model_version"] or "-"),
            str(r["champion_version"] or "-"),
            "-" if profit is None else f"{profit:.3f}",
            "-" if ece is None else f"{ece:.4f}",
            econ_text,
            ", ".join(r["failed_gates"]) or "-",
        )
    return table


def record_summary(record: dict[str, Any]) -> list[Any]:
    """What ``bayespilot show`` prints: decision, reasons, gates, champion, economics, data
    (rich renderables; ``--json`` prints the full record instead)."""
    champ = record.get("champion") or {}
    data = record.get("data") or {}
    head = [
        f"[bold]record {record['sequence']:06d}[/bold] {record['record_id'][:12]}  "
        f"{record['kind']}  [bold]{record['decision'].upper()}[/bold]  "
        f"{record.get('finished_at') or ''}",
        "champion: "
        + (
            f"{champ.get('model_name')} v{champ.get('model_version')}, policy "
            f"{str(champ.get('policy_id'))[:12]}"
            if champ
            else "none"
        ),
        f"economics: {economics_text(record.get('economics'))}",
    ]
    if record.get("candidate"):
        cal = (record.get("calibration") or {}).get("method")
        head.append(f"candidate: {record['candidate']} (calibration {cal})")
    if data:
        rows = ", ".join(f"{k} {v}" for k, v in (data.get("split_rows") or {}).items())
        head.append(f"data: {data.get('source')} (sha256 {str(data.get('sha256'))[:12]}; {rows})")
    out: list[Any] = ["\n".join(head)]
    reasons = record.get("reasons") or []
    econ_msg = (record.get("economics") or {}).get("message")
    why = [*reasons, *([econ_msg] if econ_msg else [])]
    if why:
        out.append("why:\n" + "\n".join(f"  - {r}" for r in why))
    gates = record.get("gates") or []
    if gates:
        out.append(gate_table(gates))
    return out


@contextmanager
def row_progress(
    total: int | None, description: str = "scoring"
) -> Iterator[Callable[[int], None]]:
    """A callable taking rows done so far: a rich progress bar on a terminal (stderr); off a
    terminal no bar is drawn, a log line per update instead."""
    import logging
    import sys

    if not sys.stderr.isatty():
        log = logging.getLogger("bayespilot.progress")

        def note(done: int) -> None:
            log.info("%s: %s%s rows", description, f"{done:,}", f"/{total:,}" if total else "")

        yield note
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)

        def show(done: int) -> None:
            bar.update(task, completed=done)

        yield show
