"""Rich rendering of scenario summaries (kept apart from the commands that print them)."""

from __future__ import annotations

from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from lumen.scenarios.summary import LengthStats, ScenarioSummary


def fmt_bytes(n: float) -> str:
    """Decimal units, as disks and GPU spec sheets use (1 GB = 10^9 bytes)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min"


def _lengths(st: LengthStats) -> str:
    return f"mean {st.mean:.0f}, p50 {st.p50:.0f}, p99 {st.p99:.0f}, max {st.max}"


def summary_panel(s: ScenarioSummary) -> Panel:
    """One panel per scenario: configuration, derived capacities and times, workload, failures."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column()
    gpus = f"{s.gpus} x {s.hardware}"
    t.add_row("cluster", f"{s.workers} workers on {s.nodes} nodes, {gpus} (TP {s.tensor_parallel})")
    draft = f", draft {s.draft_model}" if s.draft_model else ", no draft model"
    t.add_row("model", f"{s.model} ({fmt_bytes(s.weight_bytes)} of weights){draft}")
    t.add_row(
        "engine",
        f"compute {s.compute_efficiency:.3f}, memory {s.memory_efficiency:.3f} of peak:"
        f" {escape(s.calibration)}",
    )
    t.add_row(
        "KV per token", f"{s.kv_bytes_per_token:,} bytes ({s.kv_bytes_per_token / 1024:.0f} KiB)"
    )
    t.add_row(
        "links per worker",
        f"network {s.network_bytes_per_s * 8 / 1e9:.1f} Gbit/s,"
        f" SSD {fmt_bytes(s.ssd_bytes_per_s)}/s,"
        f" host->GPU {fmt_bytes(s.host_to_gpu_bytes_per_s)}/s",
    )
    t.add_row("GPU KV capacity", f"{s.gpu_kv_capacity_tokens:,} tokens per worker")
    t.add_row(
        "reload",
        f"{fmt_seconds(s.reload_total_s)} = SSD->host {fmt_seconds(s.reload_ssd_to_host_s)}"
        f" + host->GPU {fmt_seconds(s.reload_host_to_gpu_s)}",
    )
    if s.draft_load_s is not None and s.draft_weight_bytes is not None:
        t.add_row(
            "draft load",
            f"{fmt_seconds(s.draft_load_s)} ({fmt_bytes(s.draft_weight_bytes)} of weights)",
        )
    t.add_row(
        "checkpoints",
        f"{fmt_bytes(s.checkpoint_budget_bytes)} host budget per worker ="
        f" {s.checkpoint_capacity_tokens:,} tokens; streaming"
        f" {fmt_bytes(s.checkpoint_stream_bytes_per_s)}/s per worker on average",
    )
    t.add_row(
        "workload",
        f"{s.requests:,} requests over {fmt_seconds(s.duration_s)} ({s.rate_qps:.2f} QPS)",
    )
    t.add_row("prompt tokens", _lengths(s.prompt_tokens))
    t.add_row("output tokens", _lengths(s.output_tokens))
    if s.failures:
        shown = [f"t={f.at_s:.0f}s workers {list(f.workers)}" for f in s.failures[:6]]
        more = f" (+{len(s.failures) - 6} more)" if len(s.failures) > 6 else ""
        t.add_row("failures", "; ".join(shown) + more)
    else:
        t.add_row("failures", "none")
    t.add_row("policies", ", ".join(s.policies))
    # Names, descriptions and paths are user text: escaped, never read as rich markup.
    body = Group(escape(s.description), "", t) if s.description else t
    return Panel(
        body, title=f"[bold]{escape(s.name)}[/bold]", subtitle=escape(s.source), expand=False
    )
