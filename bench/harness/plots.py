"""PNG plots of a comparison and of kernel results (matplotlib, Agg backend).

distributions(): per benchmark, base and head samples relative to the base median
  (box: quartiles, whiskers 5-95 %, dots: each round's median), the ±threshold band
  shaded, the panel titled with the verdict.
roofline(): kernel records on a roofline, arithmetic intensity against achieved
  TFLOP/s, under the read-bandwidth and matmul ceilings measured in the same run.
The engine's throughput plot is in plots_engine.py; which suite gets which plot is
said in suites.py (figures.py draws them).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.harness.compare import Comparison

COLOURS = {"slower": "#c0392b", "removed": "#c0392b", "faster": "#27ae60", "same": "#555555",
           "inconclusive": "#d68910", "too noisy": "#7f8c8d", "new": "#2e86c1"}
PER_PAGE = 12


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ValueError("--plots needs matplotlib (pip install matplotlib)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _short(name: str) -> str:
    return name.split("::", 1)[-1]


def distributions(c: Comparison, folder: Path) -> list[Path]:
    """One PNG per PER_PAGE compared benchmarks; returns their paths."""
    plt = _pyplot()
    rows = [v for v in c.verdicts if v.base_median is not None]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    t = c.settings.threshold
    for page in range(0, len(rows), PER_PAGE):
        chunk = rows[page:page + PER_PAGE]
        cols = min(3, len(chunk))
        nrows = -(-len(chunk) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
        for ax, v in zip(axes.flat, chunk):
            b_series, h_series = c.base.benchmarks[v.name], c.head.benchmarks[v.name]
            scale = v.base_median
            data = [np.asarray(b_series.samples) / scale, np.asarray(h_series.samples) / scale]
            ax.axhspan(1 - t, 1 + t, color="#d5f5e3", zorder=0, label=f"±{t:.0%} threshold")
            box = ax.boxplot(data, showfliers=False, widths=0.5, tick_labels=["base", "head"],
                             medianprops={"color": "k"})
            for x, series in ((1, b_series), (2, h_series)):
                meds = [np.median(r) / scale for r in series.rounds]
                jitter = np.linspace(-0.12, 0.12, len(meds)) if len(meds) > 1 else [0.0]
                ax.scatter(x + np.asarray(jitter), meds, s=14, color="#2e86c1", zorder=3,
                           label="round medians" if x == 1 else None)
            ax.axhline(1.0, color="#999999", lw=0.8, zorder=1)
            # the view: boxes, whiskers and the band; the far tail (a preempted step) would squash them
            ends = [float(y) for w in box["whiskers"] for y in w.get_ydata()]
            lo, hi = min(min(ends), 1 - 1.5 * t), max(max(ends), 1 + 1.5 * t)
            ax.set_ylim(lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo))
            ax.set_ylabel("time / base median")
            label = v.verdict.upper() if v.fails else v.verdict
            ax.set_title(f"{_short(v.name)}\n{label}: {v.change:+.1%}", fontsize=9, color=COLOURS[v.verdict])
            ax.tick_params(labelsize=8)
        for ax in list(axes.flat)[len(chunk):]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
        fig.suptitle("base vs head samples (box: quartiles; whiskers: 1.5 IQR; slower outliers off the view)",
                     fontsize=10)
        fig.tight_layout(rect=(0, 0.05, 1, 0.96))
        path = folder / f"distributions_{page // PER_PAGE + 1}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def kernel_point(info: dict) -> tuple[float, float, str] | None:
    """(FLOPs per byte, achieved TFLOP/s, kind) of a kernel record, or None where the
    record has no FLOPs (write_kv only moves bytes). Decode: FLOPs = 4·B·Hq·L·D (QKᵀ and
    PV); prefill: its recorded causal FLOPs over Q, K, V and O bytes at 2 bytes each."""
    kind, t = info.get("kind"), info.get("median_s")
    if not t:
        return None
    if kind == "decode":
        flops = 4 * info["batch"] * info["num_heads"] * info["context"] * info["head_dim"]
        nbytes = info["bytes"]
    elif kind == "prefill":
        flops = info["flops"]
        tokens = info["batch"] * info["seq_len"]
        nbytes = 2 * tokens * info["head_dim"] * (2 * info["num_heads"] + 2 * info["num_kv_heads"])
    else:
        return None
    return flops / nbytes, flops / t / 1e12, kind


def roofline(records: list[dict], path: Path, title: str, theoretical_gbps: float | None = None) -> Path:
    """The roofline PNG of kernel records (pytest-benchmark 'benchmarks' entries); with
    `theoretical_gbps` (the driver's datasheet bandwidth, bench/gpu_spec.py) its roof
    dashed above the measured one."""
    plt = _pyplot()
    infos = [r.get("extra_info", {}) for r in records]
    points = [(kernel_point(i), i) for i in infos]
    points = [(p, i) for p, i in points if p is not None]
    if not points:
        raise ValueError(f"roofline: no decode or prefill records to plot for {title}")
    read = max(i["ceiling_read_gbps"] for _, i in points)
    peak = max(i["ceiling_matmul_tflops"] for _, i in points)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ai = np.logspace(-0.5, 4, 200)
    ax.plot(ai, np.minimum(ai * read / 1e3, peak), color="k", lw=1.5,
            label=f"roofline: read {read:.0f} GB/s, bf16 matmul {peak:.0f} TFLOP/s (measured)")
    if theoretical_gbps:
        ax.plot(ai, np.minimum(ai * theoretical_gbps / 1e3, peak), color="#7f8c8d", lw=1, ls="--",
                label=f"theoretical bandwidth {theoretical_gbps:.0f} GB/s (driver: 2 x memory clock x bus width)")
    markers = {"decode": ("o", "#2e86c1"), "prefill": ("s", "#c0392b")}
    for kind, (marker, colour) in markers.items():
        mine = [(p, i) for p, i in points if p[2] == kind]
        if not mine:
            continue
        dtypes = sorted({i.get("cache_dtype", "bf16") for _, i in mine})
        for dtype in dtypes:
            pts = [p for p, i in mine if i.get("cache_dtype", "bf16") == dtype]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=28,
                       facecolors=colour if dtype == "bf16" else "none", edgecolors=colour,
                       label=f"{kind} ({dtype} cache)", zorder=3)
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOPs / byte)",
           ylabel="achieved TFLOP/s", title=title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")   # the empty corner: high intensity, low throughput
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
