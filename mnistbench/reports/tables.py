"""Rows of dicts rendered as a Markdown table, CSV or JSON (the three formats every report offers), or HTML.

In Markdown and HTML, every machine identity in a cell is written as its short key (``m1``), and the
identities used are listed once beside the table (``mnistbench.reports.machines``); CSV and JSON keep them
in full.
"""
import csv
import io
import json
from html import escape

from . import machines

# Columns of ratios, written as ``2.00x``.
RATIO_COLUMNS = ("speedup", "energy_ratio")

FORMATS = ("markdown", "csv", "json")


def _cell(value, column: str = "") -> str:
    """A value as a person reads it: 4 significant digits, a ratio (``RATIO_COLUMNS``) as ``2.00x``."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}x" if column in RATIO_COLUMNS else f"{value:.4g}"
    return str(value)


def without(rows: list[dict], columns) -> list[dict]:
    """``rows`` less ``columns``."""
    return [{column: value for column, value in row.items() if column not in columns} for row in rows]


def keyed(rows: list[dict], machine_keys: dict[str, str]) -> tuple[list[dict], list[str]]:
    """``rows`` with every machine identity in a text cell replaced by its key, and the identities replaced."""
    used, longest_first = [], sorted(machine_keys, key=len, reverse=True)
    out = []
    for row in rows:
        row = dict(row)
        for column, value in row.items():
            for identity in longest_first if isinstance(value, str) else ():
                if identity in value:
                    value = value.replace(identity, machine_keys[identity])
                    used.append(identity)
            row[column] = value
        out.append(row)
    return out, used


def render(rows: list[dict], fmt: str = "markdown", machine_keys: dict[str, str] | None = None) -> str:
    """``rows`` (dicts of the same keys, the first one's order the columns') in ``fmt``: JSON and CSV as they are,
    Markdown with each machine identity written as its key (``machine_keys``) and the legend of the keys above;
    ``ValueError`` naming the formats for any other."""
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    columns = list(rows[0]) if rows else []
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")  # printed with one newline, as the other formats
    if fmt != "markdown":
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    rows, used = keyed(rows, machine_keys or {})
    # a cell's own "|" (a hand-made driver, a test's id) would end it: Markdown's escape keeps it one cell; a line
    # break (a hand-edited CPU name) would end the row
    cells = [[_cell(row[column], column).replace("|", "\\|").replace("\n", " ") for column in columns] for row in rows]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in cells]
    legend = machines.legend(used, machine_keys or {})
    return "\n".join(legend + [""] * bool(legend) + lines)


def html(rows: list[dict], machine_keys: dict[str, str], marked=lambda row: False) -> tuple[str, list[str]]:
    """``rows`` as an HTML table, machine identities written as their keys (as in Markdown), rows for which
    ``marked(row)`` holds in class ``marked``; and the identities the keys stand for."""
    columns = list(rows[0]) if rows else []
    keyed_rows, used = keyed(rows, machine_keys)
    head = "".join(f"<th>{escape(column)}</th>" for column in columns)
    body = []
    for original, row in zip(rows, keyed_rows):
        cells = "".join(f'<td{" class=num" * isinstance(row[c], (int, float))}>{escape(_cell(row[c], c))}</td>'
                        for c in columns)
        body.append(f'<tr{" class=marked" * bool(marked(original))}>{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>", used
