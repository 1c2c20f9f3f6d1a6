"""Summaries and the side-by-side table: per trainer, and Booth's ratio to each reference.

On a shared machine absolute speed drifts between runs, so ratios are taken within a round
(runs back to back) and the median over rounds is reported.
"""

from __future__ import annotations

import statistics


def summarize(runs: list[dict], flops_per_step: int, matmul_gflops: float) -> dict[str, dict]:
    """Per trainer: median seconds per step over its rounds (and the range), worst peak memory,
    achieved GFLOP/s and its share of the measured matmul rate, output size."""
    summary: dict[str, dict] = {}
    for name in dict.fromkeys(run["trainer"] for run in runs):
        mine = [run for run in runs if run["trainer"] == name and run["s_per_step"] is not None]
        if not mine:
            failed = [run for run in runs if run["trainer"] == name]
            summary[name] = {"failed": True, "peak_rss_bytes": max(run["peak_rss_bytes"] for run in failed),
                             "returncode": failed[-1]["returncode"]}
            continue
        per_run = [run["s_per_step"] for run in mine]
        seconds = statistics.median(per_run)
        gflops = flops_per_step / seconds / 1e9
        vram = [run["peak_vram_bytes"] for run in mine if run["peak_vram_bytes"]]
        summary[name] = {"s_per_step": round(seconds, 3), "s_per_step_min": round(min(per_run), 3),
                         "s_per_step_max": round(max(per_run), 3), "runs": len(mine),
                         "peak_rss_bytes": max(run["peak_rss_bytes"] for run in mine),
                         "peak_vram_bytes": max(vram) if vram else None,
                         "gflops": round(gflops, 1), "share_of_matmul_peak": round(gflops / matmul_gflops, 3),
                         "output_bytes": mine[-1]["output_bytes"]}
    return summary


def ratios(runs: list[dict], mine: str = "booth") -> dict[str, dict]:
    """Booth's time per step and peak memory divided by each other trainer's, median over rounds."""
    out: dict[str, dict] = {}
    rounds = sorted({run["round"] for run in runs})
    others = dict.fromkeys(run["trainer"] for run in runs if run["trainer"] != mine)
    for other in others:
        time_ratios, memory_ratios = [], []
        for number in rounds:
            pair = {run["trainer"]: run for run in runs if run["round"] == number and run["s_per_step"]}
            if mine in pair and other in pair:
                time_ratios.append(pair[mine]["s_per_step"] / pair[other]["s_per_step"])
                memory_ratios.append(pair[mine]["peak_rss_bytes"] / pair[other]["peak_rss_bytes"])
        if time_ratios:
            out[other] = {"time": round(statistics.median(time_ratios), 3),
                          "time_per_round": [round(r, 3) for r in time_ratios],
                          "peak_rss": round(statistics.median(memory_ratios), 3)}
    return out


def table(summary: dict[str, dict], ratio: dict[str, dict]) -> str:
    """Plain-text side-by-side table (Markdown-compatible)."""
    head = ("trainer", "s/step (min-max)", "Booth time ÷ this", "peak RSS", "peak VRAM", "GFLOP/s",
            "of matmul peak", "output")
    rows = [head, tuple("---" for _ in head)]
    for name, s in summary.items():
        if s.get("failed"):
            how = "killed" if s["returncode"] < 0 else "failed"
            rows.append((name, how, "", f"{_gb(s['peak_rss_bytes'])} when {how}", "", "", "", ""))
            continue
        rows.append((name, f"{s['s_per_step']:.2f} ({s['s_per_step_min']:.2f}-{s['s_per_step_max']:.2f})",
                     f"{ratio[name]['time']:.2f}" if name in ratio else ("1.00" if name == "booth" else ""),
                     _gb(s["peak_rss_bytes"]), _gb(s["peak_vram_bytes"]), f"{s['gflops']:.0f}",
                     f"{100 * s['share_of_matmul_peak']:.0f}%", _mb(s["output_bytes"])))
    return markdown(rows)


def profile_table(profiles: dict[str, dict]) -> str:
    """Where each trainer's step goes, by kind of work: profiled seconds per step and share, side by side."""
    names = list(profiles)
    totals = {name: profiles[name]["seconds_per_step"] or 1.0 for name in names}
    kinds = sorted({kind for profile in profiles.values() for kind in profile["kinds"]},
                   key=lambda kind: -max(profile["kinds"].get(kind, 0.0) for profile in profiles.values()))
    head = ("kind of work", *names)
    rows = [head, tuple("---" for _ in head)]
    for kind in kinds:
        cells = []
        for name in names:
            seconds = profiles[name]["kinds"].get(kind, 0.0)
            cells.append(f"{seconds:.2f} s ({seconds / totals[name]:.0%})")
        rows.append((kind, *cells))
    rows.append(("total (profiled)", *(f"{profiles[name]['seconds_per_step']:.2f} s" for name in names)))
    return markdown(rows)


def markdown(rows: list[tuple]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows)


def _gb(value: int | None) -> str:
    return "-" if not value else f"{value / 1e9:.2f} GB"


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f} MB"
