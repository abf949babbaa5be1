"""The ``mnistbench`` command: reports over stored pytest-benchmark results."""
import argparse
import sys
import warnings

from . import history, plots, ratio, results, tables

DEFAULT_RESULTS = ["results"]


def _load(paths) -> list[results.Result]:
    """Stored results, each skipped file or benchmark reported on one line of standard error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", results.ResultWarning)
        try:
            loaded = results.load(paths)
        finally:
            for warning in caught:
                print(f"mnistbench: warning: {warning.message}", file=sys.stderr)
    return loaded


def ratio_command(args) -> int:
    found = ratio.pairs(_load(args.paths))
    if not found:
        print("mnistbench: no benchmark was run on both the CPU and an accelerator", file=sys.stderr)
        return 1
    print(tables.render([pair.row() for pair in found], args.format))
    if args.plot:
        plots.ratio_chart(found, args.plot)
        print(f"mnistbench: wrote {args.plot}", file=sys.stderr)
    return 0


def history_command(args) -> int:
    all_series = history.build(_load(args.paths), args.threshold)
    print(tables.render(history.rows(all_series), args.format))
    if args.plot:
        plots.history_chart(all_series, args.plot)
        print(f"mnistbench: wrote {args.plot}", file=sys.stderr)
    regressed = [series.label for series in all_series if series.latest_regressed]
    if regressed:
        print(f"mnistbench: {len(regressed)} regression(s) in the newest run: {', '.join(regressed)}", file=sys.stderr)
        if args.fail_on_regression:
            return 1
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="mnistbench", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)

    def report(name, help_text, function):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("paths", nargs="*", default=DEFAULT_RESULTS,
                             help="pytest-benchmark JSON files or folders (default: results/)")
        command.add_argument("--format", choices=tables.FORMATS, default="markdown")
        command.add_argument("--plot", metavar="FILE.png", help="also draw the report as a PNG")
        command.set_defaults(function=function)
        return command

    report("ratio", "GPU/CPU speed ratios of benchmarks that differ only in device (newest run per device)",
           ratio_command)
    history_parser = report("history", "each benchmark's medians over the stored runs, regressions flagged",
                            history_command)
    history_parser.add_argument("--threshold", type=float, default=history.THRESHOLD,
                                help="smallest relative slowdown that counts, if also above the noise (default: 0.07)")
    history_parser.add_argument("--fail-on-regression", action="store_true",
                                help="exit 1 when the newest run of any benchmark regressed")
    return main


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.function(args)
    except results.NoResultsError as error:
        print(f"mnistbench: error: {error}", file=sys.stderr)
        return 2
