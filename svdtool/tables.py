"""Rich tables for reports shown in the terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def fusion_table(reports: dict[str, dict[str, Any]], title: str) -> Table:
    """One row per component: executed conv/linear kernels by class, int8 share, FakeQuantize fused/left."""
    table = Table(title=title)
    for column in ("component", "executed kernels (type: class×count)", "conv+linear int8", "FQ fused / executing", "kernels"):
        table.add_column(column)
    for name, report in reports.items():
        executed = "; ".join(f"{t}: " + ", ".join(f"{k}×{n}" for k, n in counts.items()) for t, counts in report["executed"].items())
        share = f"{report['conv_linear_int8']}/{report['conv_linear_total']} ({100 * report['conv_linear_int8_fraction']:.1f} %)"
        fq = f"{report['fake_quantize_fused']} / {report['fake_quantize_executing']}"
        kernels = ", ".join(list(report["kernels"])[:3])
        table.add_row(name, executed, share, fq, kernels)
    return table
