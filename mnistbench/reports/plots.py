"""Charts of the reports (PNG, SVG or PDF), drawn with matplotlib's file-only backend."""
import os
from pathlib import Path

from .. import atomic
from .compare import geometric_means
from .history import Series
from .pairs import Pair

LINE_STYLES = ("-", "--", ":", "-.")
FORMATS = (".png", ".svg", ".pdf")  # a chart's file names one of these formats: matplotlib's name for it


def _pyplot():
    """matplotlib's pyplot on its file-only backend, imported when a chart is drawn: the import takes a second,
    which every ``mnistbench`` command and test process would otherwise pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, file) -> None:
    """Write ``figure`` to ``file``: a path whole or not at all (``atomic``), in the format its suffix names
    (PNG without one); an open binary file (the page's) as PNG."""
    if not isinstance(file, (str, os.PathLike)):
        figure.savefig(file, dpi=120, format="png")
        return
    with atomic.replacing(file) as partial:
        figure.savefig(partial, dpi=120, format=Path(file).suffix[1:].lower() or "png")


def _pair_label(pair: Pair, machines_shared: bool) -> str:
    accelerator, cpu = pair.b.device, "cpu"
    if pair.a.fast:  # each side in its own best variant: name both
        accelerator, cpu = f"{accelerator} {pair.b.variant}", f"{cpu} {pair.a.variant}"
    lines = [pair.label, f"{accelerator} vs {cpu}"]
    if not machines_shared:
        lines += [pair.b.machine, f"vs {pair.a.machine}"]
    return "\n".join(lines)


def ratio_chart(pairs: list[Pair], path) -> None:
    """Horizontal bars of the speedup of each comparable pair, the value written at the end of each bar; the
    machines in the title when every pair shares them, else beside each bar."""
    comparable = [pair for pair in pairs if pair.speedup is not None]
    if not comparable:
        raise ValueError("no comparable CPU/accelerator pairs to plot")
    machines = {(p.b.device, p.b.machine, p.a.machine) for p in comparable}
    labels = [_pair_label(p, len(machines) == 1) for p in comparable]
    speedups = [p.speedup for p in comparable]
    lines_per_bar = labels[0].count("\n") + 1
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(10, 1.6 + 0.2 * lines_per_bar * len(comparable)), layout="constrained")
    bars = axes.barh(range(len(comparable)), speedups, color="tab:green")
    axes.bar_label(bars, labels=[f"{s:.1f}x" for s in speedups], padding=3)
    axes.set_yticks(range(len(comparable)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.axvline(1.0, color="grey", linewidth=0.8)
    axes.set_xlabel("speedup (CPU median time / accelerator median time)")
    axes.set_xlim(0, max(speedups) * 1.15)
    title = "Accelerator speedup over the CPU"
    if len(machines) == 1:
        [(device, accelerator, cpu)] = machines
        title += f"\n{device} {accelerator}\nvs cpu {cpu}"
    figure.suptitle(title, fontsize=9)
    _save(figure, path)
    plt.close(figure)


def history_chart(all_series: list[Series], path) -> int:
    """Each benchmark with two or more runs as a line of its medians relative to its first run, one panel per
    kind of benchmark (epoch, step, time to accuracy) and machine, regressions circled in red. A single run
    is no trend: those series are left out, and their number returned and written in the title."""
    trends = [series for series in all_series if len(series.points) >= 2]
    left_out = len(all_series) - len(trends)
    if not trends:
        raise ValueError(f"no benchmark has two runs of the same configuration on the same machine yet, nothing "
                         f"to plot ({left_out} single-run series)")
    panels: dict[tuple, list[Series]] = {}
    for series in trends:
        panels.setdefault((series.points[0].result.extra_info["kind"], series.machine), []).append(series)
    heights = [max(2.2, 0.8 + 0.17 * len(group)) for group in panels.values()]
    plt = _pyplot()
    from matplotlib import dates

    colours = len(plt.rcParams["axes.prop_cycle"])
    figure, all_axes = plt.subplots(len(panels), 1, figsize=(13, 1.0 + sum(heights)), squeeze=False,
                                    height_ratios=heights, layout="constrained")
    for axes, ((kind, machine), group) in zip(all_axes[:, 0], panels.items()):
        for index, series in enumerate(group):
            first = series.points[0].result.median
            times = [point.result.run_time for point in series.points]
            relative = [point.result.median / first for point in series.points]
            style = LINE_STYLES[index // colours % len(LINE_STYLES)]  # the colours repeat after ten lines
            axes.plot(times, relative, style, marker="o", markersize=3, linewidth=1, label=series.label)
            flagged = [(t, r) for t, r, p in zip(times, relative, series.points) if p.flag == "regression"]
            if flagged:
                axes.scatter(*zip(*flagged), s=80, facecolors="none", edgecolors="red", zorder=3)
        axes.axhline(1.0, color="grey", linewidth=0.8)
        axes.set_title(f"{kind} on {machine}", loc="left", fontsize=9)
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        # each machine's runs on a time axis of their own: machines measured days apart are not squeezed
        axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(axes.xaxis.get_major_locator()))
    figure.supylabel("median / first run's median (lower is faster)", fontsize=9)
    left = f"; {left_out} series with a single run left out" if left_out else ""
    figure.suptitle(f"Benchmark history: {len(trends)} series{left}. Red circles: regressions beyond the "
                    f"threshold and the noise", fontsize=10)
    _save(figure, path)
    plt.close(figure)
    return left_out


def scaling_chart(curves, path) -> None:
    """Total images/s against world size for each ``mnistbench.reports.scaling.Curve``, beside the ideal line (N times
    the one-rank speed), each point labelled with its scaling efficiency."""
    if not curves:
        raise ValueError("no data-parallel results to plot")
    plt = _pyplot()
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
    _save(figure, path)
    plt.close(figure)


TUNING_COLOURS = {"base": "tab:blue", "peak": "tab:orange", None: "tab:grey"}


def compare_chart(pairs: list[Pair], path, a_name: str, b_name: str) -> None:
    """Horizontal bars of B's speedup over A for each comparable pair (A's median time over B's), coloured by
    base, peak or neither, each value at the end of its bar, and a dashed line at each geometric mean;
    ``a_name`` and ``b_name`` say which machines in the title."""
    comparable = [pair for pair in pairs if pair.speedup is not None]
    if not comparable:
        raise ValueError("no comparable pair of benchmarks to plot")
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(10, 1.8 + 0.3 * len(comparable)), layout="constrained")
    speedups = [pair.speedup for pair in comparable]
    bars = axes.barh(range(len(comparable)), speedups, color=[TUNING_COLOURS[pair.a.tuning] for pair in comparable])
    axes.bar_label(bars, labels=[f"{s:.2f}x" for s in speedups], padding=3, fontsize=8)
    axes.set_yticks(range(len(comparable)), [f"{pair.label} ({pair.a.tuning or 'neither'})" for pair in comparable],
                    fontsize=8)
    axes.invert_yaxis()
    axes.axvline(1.0, color="grey", linewidth=0.8)
    for tuning, (mean, count) in geometric_means(comparable).items():
        if mean is not None:
            axes.axvline(mean, color=TUNING_COLOURS[tuning], linestyle="--", linewidth=1,
                         label=f"{tuning} geometric mean {mean:.2f}x ({count})")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes.set_xlabel("speedup of B over A (A's median time / B's)")
    axes.set_xlim(0, max(*speedups, 1.0) * 1.15)  # the line of equal speed always in view
    figure.suptitle(f"B: {b_name}\nagainst A: {a_name}", fontsize=9)
    _save(figure, path)
    plt.close(figure)
