"""Rich tables for reports shown in the terminal, narrow enough for an 80-column terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def fusion_table(reports: dict[str, dict[str, Any]], title: str) -> Table:
    """One row per component: conv/linear kernels executing in int8, on int8/int4 weights only, and in float;
    FakeQuantize fused vs still executing. The caption names the int8 kernels (`svdtool inspect --json` has all)."""
    table = Table(title=title, title_justify="left", caption_justify="left")
    for column in ("component", "int8", "share", "int weights", "float", "FQ fused/left"):
        table.add_column(column, justify="left" if column == "component" else "right", no_wrap=True)
    int8_kernels: set[str] = set()
    for name, report in reports.items():
        classes: dict[str, int] = {}
        for op_type in ("Convolution", "FullyConnected", "MatMul", "Deconvolution"):
            for kind, count in report["executed"].get(op_type, {}).items():
                classes[kind] = classes.get(kind, 0) + count
        weights_only = sum(count for kind, count in classes.items() if kind.endswith("-weights"))
        floating = report["conv_linear_total"] - report["conv_linear_int8"] - weights_only
        label = name.replace("deepcache/branch_", "DC ").replace("/", " ")  # "DC 0 shallow": fits 80 columns
        table.add_row(label, f"{report['conv_linear_int8']}/{report['conv_linear_total']}",
                      f"{100 * report['conv_linear_int8_fraction']:.0f}%", str(weights_only), str(floating),
                      f"{report['fake_quantize_fused']}/{report['fake_quantize_executing']}")
        int8_kernels |= {kernel for kernel in report["kernels"] if kernel.lower().endswith("_i8")}
    table.caption = "int8 kernels: " + (", ".join(sorted(int8_kernels)) or "none")
    if any(name.startswith("deepcache/") for name in reports):
        table.caption += "\nDC K full/shallow: DeepCache's UNet pair of branch K"
    return table
