"""One self-contained HTML page of every report, for a person to read (``mnistbench report --html FILE``).

Sections: the machines (each named once, by its key), the GPU/CPU table with the articles' claims beside it,
the score and each machine against the reference, the history with its regressions, data-parallel
scaling, and the plots. The page needs nothing beside it: the plots are PNGs embedded as ``data:`` URIs,
the style is inline, and nothing is fetched from a network.
"""
import base64
import io
from datetime import datetime, timezone
from html import escape

from ..data import TRAIN_IMAGES
from . import claims, compare, history, machines, plots, ratio, scaling, score, tables
from .results import Result, run_names

SECTIONS = {"machines": "Machines", "ratio": "GPU/CPU ratio and the articles' claims",
            "score": "Score and comparison with the reference", "history": "History and regressions",
            "scaling": "Data-parallel scaling"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0; display: block; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.marked td { background: #fde2e2; } .note { color: #555; font-size: .9em; }
img { max-width: 100%; border: 1px solid #eee; margin: .6em 0; } nav a { margin-right: 1em; }
"""


def _image(draw, alt: str) -> str:
    """A chart drawn by ``draw(file)`` as an embedded PNG; the reason in its place if there is nothing to draw."""
    buffer = io.BytesIO()
    try:
        draw(buffer)
    except ValueError as nothing:
        return f'<p class="note">No plot: {escape(str(nothing))}.</p>'
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _table(rows: list[dict], machine_keys: dict[str, str], marked=lambda row: False) -> str:
    """An HTML table, machines written as their keys (the page's first section is their legend)."""
    return tables.html(rows, machine_keys, marked)[0]


def _paragraph(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _machines(results: list[Result], machine_keys: dict[str, str]) -> str:
    names = run_names([result.file for result in results])
    rows = []
    for identity, key in machine_keys.items():
        own = [result for result in results if result.machine == identity]
        rows.append({"key": key, "identity": identity, "devices": ", ".join(sorted({r.device for r in own})),
                     "runs": ", ".join(dict.fromkeys(names[r.file] for r in own)), "benchmarks": len(own),
                     "first": min(r.run_time for r in own).strftime("%Y-%m-%d"),
                     "last": max(r.run_time for r in own).strftime("%Y-%m-%d")})
    table, _ = tables.html(rows, {})
    return (_paragraph("Every table names a machine by its key. A CPU is identified by what decides its speed "
                       "(vendor, family/model/stepping, ISA, torch's kernel level, CPUs and threads used), a GPU by "
                       "name, memory, compute capability and driver.") + table)


def _claims(found, results: list[Result], machine_keys: dict[str, str]) -> str:
    """The claims beside the measured pairs of the articles' job, and the job's time on each CPU measured."""
    rows = []
    for claim in claims.CLAIMS:
        measured = [f"{claim.measured(pair) or 'refused: ' + pair.mismatch} ({pair.b.device} {pair.b.machine} "
                    f"against cpu {pair.a.machine})" for pair in found if claims.about(pair) is claim]
        cpu_epochs = {r.machine: r for r in results if r.device == "cpu" and r.test == "test_epoch"
                      and r.params.get("setup") == "reference" and r.extra_info["model"] == claim.model
                      and r.extra_info["dataset"] == "mnist" and r.extra_info["samples"] == TRAIN_IMAGES}
        job = [f"{result.machine}: {claims.EPOCHS * result.median / 60:.1f} min" for result in cpu_epochs.values()]
        rows.append({"model": claim.model, "claim": claim.text, "the article's words": claim.quote,
                     "measured (GPU/CPU)": "; ".join(measured) or "no GPU result stored: nothing measured to set "
                                                                  "beside it",
                     f"the {claims.EPOCHS}-epoch job on the CPUs here ({claims.EPOCHS} x the reference epoch's "
                     f"median)": "; ".join(job) or "no full reference epoch stored"})
    return "<h3>The articles' claims</h3>" + _table(rows, machine_keys)


def _ratio(results: list[Result], machine_keys: dict[str, str]) -> str:
    found = ratio.pairs(results)
    if found:
        body = (_table(ratio.rows(found), machine_keys)
                + _image(lambda file: plots.ratio_chart(found, file), "accelerator speedup over the CPU"))
    else:
        body = _paragraph(f"No CPU/accelerator pair: {ratio.why_unpaired(results)}.")
    return body + _claims(found, results, machine_keys)


def _score(results: list[Result], reference: list[Result], reference_name: str, machine_keys: dict[str, str]) -> str:
    if not reference:
        return _paragraph(f"The reference run {reference_name} is not here: no score and no comparison.")
    reference_machines = set(result.machine for result in reference)
    found = score.scores(reference, results)
    parts = [_paragraph(f"Score v{score.VERSION}: {score.SCALE} x the geometric mean of reference median / median "
                        f"over {len(score.BENCHMARKS['base'])} base and {len(score.BENCHMARKS['peak'])} peak "
                        f"benchmarks (an epoch of the reference loop and a training and an inference step at the "
                        f"article's batch, in fp32 and in the fast setup, both networks); higher is faster. The "
                        f"reference: {reference_name}."),
             _table([found_score.row() for found_score in found], machine_keys) if found else
             _paragraph("No result of a benchmark the score lists.")]
    for machine in dict.fromkeys(result.machine for result in results):
        side = [result for result in results if result.machine == machine]
        comparison = compare.Comparison(reference, side)
        if machine in reference_machines or not comparison.pairs:
            continue
        key = machine_keys[machine]
        parts += [f"<h3>{escape(key)} (B) against the reference (A)</h3>",
                  _paragraph(comparison.reading),
                  _table(comparison.rows(), machine_keys, lambda row: row["benchmark"] == "geometric mean"),
                  _image(lambda file: plots.compare_chart(comparison.pairs, file, "the reference", key),
                         f"{key} against the reference")]
    return "".join(parts)


def _history(results: list[Result], machine_keys: dict[str, str]) -> str:
    all_series = history.build(results)
    regressed = [f"{series.label} on {machine_keys[series.machine]}" for series in all_series if series.latest_regressed]
    said = (f"{len(regressed)} regression(s) in the newest runs: {', '.join(regressed)}." if regressed else
            "No regression in the newest runs.")
    return (_paragraph(f"{said} A change is flagged only beyond {history.THRESHOLD:.0%} and the run-to-run noise, "
                       f"and where rounds are stored only when a rank test on them says it is significant; a "
                       f"change involving a disturbed run says so. Flagged changes are shaded.")
            + _table(history.rows(all_series), machine_keys, lambda row: row["flag"])
            + _image(lambda file: plots.history_chart(all_series, file), "history of each benchmark"))


def _scaling(results: list[Result], machine_keys: dict[str, str]) -> str:
    found = scaling.curves(results)
    if not found:
        return _paragraph("No data-parallel (test_distributed) result.")
    return (_table(scaling.rows(found), machine_keys)
            + _image(lambda file: plots.scaling_chart(found, file), "data-parallel scaling"))


def build(results: list[Result], reference: list[Result], reference_name: str | None, paths) -> str:
    """The page for ``results`` (in time order), scored against ``reference`` (named ``reference_name``)."""
    read = sorted({(result.file.resolve(), result.name): result for result in results + reference}.values(),
                  key=lambda result: result.run_time)
    machine_keys = machines.keys(read)
    bodies = {"machines": _machines(read, machine_keys), "ratio": _ratio(results, machine_keys),
              "score": _score(results, reference, reference_name, machine_keys),
              "history": _history(results, machine_keys), "scaling": _scaling(results, machine_keys)}
    navigation = "".join(f'<a href="#{name}">{escape(title)}</a>' for name, title in SECTIONS.items())
    sections = "".join(f'<section id="{name}"><h2>{escape(SECTIONS[name])}</h2>{body}</section>'
                       for name, body in bodies.items())
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mnistbench report</title>'
            f"<style>{STYLE}</style></head><body><h1>mnistbench report</h1>"
            f'<p class="note">{len(results)} stored benchmark results from {escape(", ".join(map(str, paths)))}; '
            f"made {made}.</p><nav>{navigation}</nav>{sections}</body></html>")
