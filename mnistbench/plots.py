"""PNG charts of the reports, drawn with matplotlib's file-only backend."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from .history import Series  # noqa: E402
from .ratio import Pair  # noqa: E402


def ratio_chart(pairs: list[Pair], path) -> None:
    """Horizontal bars of the speedup of each comparable pair, the value written at the end of each bar."""
    comparable = [pair for pair in pairs if pair.speedup is not None]
    if not comparable:
        raise ValueError("no comparable CPU/accelerator pairs to plot")
    labels = [f"{p.cpu.label}\n{p.accelerator.device} vs cpu" for p in comparable]
    speedups = [p.speedup for p in comparable]
    figure, axes = plt.subplots(figsize=(9, 1.0 + 0.55 * len(comparable)), layout="constrained")
    bars = axes.barh(range(len(comparable)), speedups, color="tab:green")
    axes.bar_label(bars, labels=[f"{s:.1f}x" for s in speedups], padding=3)
    axes.set_yticks(range(len(comparable)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.axvline(1.0, color="grey", linewidth=0.8)
    axes.set_xlabel("speedup (CPU median time / accelerator median time)")
    axes.set_xlim(0, max(speedups) * 1.15)
    axes.set_title("Accelerator speedup over the CPU")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def history_chart(all_series: list[Series], path) -> None:
    """One line per benchmark: each run's median relative to that benchmark's first run; regressions in red."""
    if not all_series:
        raise ValueError("no history to plot")
    figure, axes = plt.subplots(figsize=(11, 5), layout="constrained")
    for series in all_series:
        first = series.points[0].result.median
        times = [point.result.run_time for point in series.points]
        relative = [point.result.median / first for point in series.points]
        axes.plot(times, relative, marker="o", markersize=3, linewidth=1, label=series.label)
        flagged = [(t, r) for t, r, p in zip(times, relative, series.points) if p.flag == "regression"]
        if flagged:
            axes.scatter(*zip(*flagged), s=80, facecolors="none", edgecolors="red", zorder=3)
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_xlabel("run time")
    axes.set_ylabel("median time / first run's median (lower is faster)")
    axes.set_title("Benchmark history (red circles: regressions beyond 7% and the noise)")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.autofmt_xdate()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def scaling_chart(curves, path) -> None:
    """Total images/s against world size for each ``mnistbench.scaling.Curve``, beside the ideal line (N times
    the one-rank speed), each point labelled with its scaling efficiency."""
    if not curves:
        raise ValueError("no data-parallel results to plot")
    figure, axes = plt.subplots(figsize=(9, 5), layout="constrained")
    for curve in curves:
        sizes = [point.world_size for point in curve.points]
        speeds = [point.images_per_second for point in curve.points]
        line, = axes.plot(sizes, speeds, marker="o", label=f"{curve.label}, {curve.device_name}")
        one_rank = curve.one_rank_images_per_second
        if one_rank:
            axes.plot(sizes, [one_rank * size for size in sizes], linestyle="--", color=line.get_color(), linewidth=0.8)
            for point, size, speed in zip(curve.points, sizes, speeds):
                axes.annotate(f"{curve.efficiency(point):.0%}", (size, speed), textcoords="offset points", xytext=(4, -12),
                              fontsize=8)
    axes.set_xlabel("world size (ranks)")
    axes.set_ylabel("images per second, all ranks")
    axes.set_xticks(sorted({point.world_size for curve in curves for point in curve.points}))
    axes.set_ylim(bottom=0)
    axes.set_title("Data-parallel scaling (dashed: ideal; labels: efficiency)")
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=120)
    plt.close(figure)
