"""The ``mnistbench`` command: reports over stored pytest-benchmark results, and the articles' job."""
import argparse
import os
import sys
import warnings
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

import models

from . import allocator, atomic, checkpoints, data, devices, distributed, profile, setups, train_job, training
from .reports import claims, compare, history, machines, page, plots, ratio, results, scaling, score, tables
from .evaluation import evaluate
from .variants import Variant

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


def _sides(texts: list[str], stored: list[str]) -> tuple[list[list[results.Result]], dict[str, str]]:
    """The results each of ``texts`` names: a file or folder (of one machine), else a machine (``machines.select``)
    of the results under ``stored``; and the machine keys of all that was read: the stored results' own (by which
    a side may be named), then the next ones for what only the files hold."""
    read, sides = [], []
    for text in texts:
        if Path(text).exists():
            sides.append(machines.one_host(text, _load([text])))
        else:
            read = read or _load(stored)
            sides.append(machines.select(text, read))
    return sides, machines.extended(machines.keys(read), [result for side in sides for result in side])


def ratio_command(args) -> int:
    loaded = _load(args.paths)
    found = ratio.pairs(loaded)
    if not found:
        print(f"mnistbench: no CPU/accelerator pair: {ratio.why_unpaired(loaded)}", file=sys.stderr)
        for line in claims.lines():
            print(f"mnistbench: {line}", file=sys.stderr)
        return 1
    print(tables.render(ratio.rows(found), args.format, machines.keys(loaded)))
    if args.plot:
        plots.ratio_chart(found, args.plot)
        print(f"mnistbench: wrote {args.plot}", file=sys.stderr)
    return 0


def history_command(args) -> int:
    loaded = _load(args.paths)
    all_series, machine_keys = history.build(loaded, args.threshold), machines.keys(loaded)
    print(tables.render(history.rows(all_series), args.format, machine_keys))
    if args.plot:
        left_out = plots.history_chart(all_series, args.plot)
        print(f"mnistbench: wrote {args.plot} ({left_out} series with a single run left out)", file=sys.stderr)
    judged = history.in_newest_run(all_series)
    regressed = [f"{series.label} on {machine_keys[series.machine]}" for series in judged if series.latest_regressed]
    unsure = [f"{series.label} on {machine_keys[series.machine]}" for series in judged
              if series.points[-1].flag.endswith(history.DISTURBED)]
    if unsure:
        print(f"mnistbench: {len(unsure)} change(s) in the newest run involve a disturbed run, not counted as "
              f"regressions or improvements: {', '.join(unsure)}", file=sys.stderr)
    if regressed:
        unconfirmed = sum(series.points[-1].noise is None for series in judged if series.latest_regressed)
        print(f"mnistbench: {len(regressed)} regression(s) in the newest run: {', '.join(regressed)}"
              + (f" ({unconfirmed} before the run-to-run noise is known: rerun to confirm)" if unconfirmed else ""),
              file=sys.stderr)
        if args.fail_on_regression:
            return 1
    return 0


def compare_command(args) -> int:
    """``mnistbench compare A B``: B against A benchmark by benchmark and the geometric means, then what only one
    side ran; exit status 1 when they have no benchmark in common."""
    (a, b), machine_keys = _sides([args.a, args.b], args.results)
    comparison = compare.Comparison(a, b)
    if not comparison.pairs:
        print(f"mnistbench: {args.a} and {args.b} have no benchmark in common", file=sys.stderr)
        return 1
    if args.format == "markdown":
        print(f"A = {args.a}, B = {args.b}. {comparison.reading}\n")
    print(tables.render(comparison.rows(), args.format, machine_keys))
    for side, only in (("A", comparison.only_in_a), ("B", comparison.only_in_b)):
        if only:
            print(f"mnistbench: {len(only)} benchmark(s) only in {side}: {', '.join(only)}", file=sys.stderr)
    if args.plot:
        plots.compare_chart(comparison.pairs, args.plot, *(", ".join(dict.fromkeys(r.machine for r in side))
                                                           for side in (a, b)))
        print(f"mnistbench: wrote {args.plot}", file=sys.stderr)
    return 0


def score_command(args) -> int:
    """``mnistbench score``: each machine's score against the reference run; exit status 1 when no result is of
    a benchmark the score lists."""
    if args.reference == score.DEFAULT_REFERENCE and not Path(args.reference).exists():
        raise ValueError(f"the default reference {args.reference} is not here: run from the checkout's root, or "
                         f"name a reference run with --reference RUN")
    loaded = _load(args.paths)
    [reference], _ = _sides([args.reference], args.paths)
    machine_keys = machines.extended(machines.keys(loaded), reference)
    found = score.scores(reference, loaded)
    if not found:
        print("mnistbench: no result of a benchmark the score lists", file=sys.stderr)
        return 1
    print(score.render(found, reference, args.reference, args.format, machine_keys))
    return 0


def report_command(args) -> int:
    """``mnistbench report --html FILE``: every report on one page. A checkout without the default reference
    run still gets its page, without the score, and is told why."""
    loaded = _load(args.paths)
    if args.reference == score.DEFAULT_REFERENCE and not Path(args.reference).exists():  # not in this checkout
        print(f"mnistbench: the default reference {args.reference} is not here: the page has no score "
              f"(--reference RUN gives one)", file=sys.stderr)
        reference = []
    else:
        [reference], _ = _sides([args.reference], args.paths)
    built = page.build(loaded, reference, args.reference, args.paths)
    with atomic.replacing(args.html) as partial:
        partial.write_text(built, encoding="utf-8")
    print(f"mnistbench: wrote {args.html}", file=sys.stderr)
    return 0


def scaling_command(args) -> int:
    found = scaling.curves(_load(args.paths))
    if not found:
        print("mnistbench: no data-parallel (test_distributed) results", file=sys.stderr)
        return 1
    print(tables.render(scaling.rows(found), args.format))
    if args.plot:
        plots.scaling_chart(found, args.plot)
        print(f"mnistbench: wrote {args.plot}", file=sys.stderr)
    return 0


def _device(name: str) -> str:
    """One device, checked against this machine (``cuda`` means ``cuda:0``)."""
    if not name.strip():
        raise ValueError("--device is empty: name one device, such as cpu or cuda:0")
    if "," in name or name.strip() == "all":  # devices.parse reads the suite's --devices, a list
        raise ValueError(f"--device takes one device, not {name!r}: such as cpu or cuda:0")
    try:
        [device] = devices.parse(name)
    except ValueError as error:  # its messages name the list form, of --devices
        raise ValueError(f"--device {name!r}: {str(error).split('; use ')[0]}") from None
    return device


def _number(convert, valid, expected: str):
    """An argparse type: the text ``convert``ed (``int`` or ``float``) where ``valid`` accepts the value, else the
    error "must be EXPECTED, got TEXT" (quoted where it is not a number)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        if not valid(value):  # NaN fails every comparison
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
        return value
    return parse


_positive = _number(int, lambda value: value >= 1, "a positive integer")
_seed = _number(int, lambda value: 0 <= value < 2**64, "an integer from 0 to 2**64 - 1")  # what torch.manual_seed takes
# a relative change: 0.07 is 7% (7 would be 700%)
_fraction = _number(float, lambda value: 0 < value < 1, "a fraction between 0 and 1 such as 0.07 (7%)")


def _unwritable(folder: Path) -> str | None:
    """Why a file cannot be written into ``folder``, or None."""
    if not folder.exists():
        return f"folder {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK):
        return f"folder {folder} is not writable"
    return None


def _output_file(text: str) -> str:
    """A report's output file, in a folder that exists and can be written (checked before the report's work)."""
    if problem := _unwritable(Path(text).parent):
        raise argparse.ArgumentTypeError(problem)
    return text


def _image_file(text: str) -> str:
    """A chart's file, named with a format matplotlib writes, where it can be written."""
    if Path(text).suffix.lower() not in plots.FORMATS:
        raise argparse.ArgumentTypeError(f"must name a {', '.join(plots.FORMATS)} file, got {text!r}")
    return _output_file(text)


def _new_model_file(out: Path, overwrite: bool, model_name: str) -> None:
    """Refuse at the start, not after the first epoch, a model file that cannot be written, and one that would
    replace a file already there (a model trained for hours) unless ``--overwrite`` says so. Only the process that
    writes it checks: rank 0 under torchrun (the other ranks may run on machines without that folder)."""
    if os.environ.get("RANK", "0") != "0" and distributed.launched_by_torchrun():
        return
    if problem := _unwritable(out.parent):
        raise ValueError(f"--out: {problem}")
    if out.is_dir():
        raise ValueError(f"--out: {out} is a folder: name the model file, e.g. {out / train_job.default_out(model_name)}")
    if out.exists() and not overwrite:
        raise ValueError(f"--out: {out} exists: name another file, or add --overwrite to replace it")


def train_command(args) -> int:
    _new_model_file(Path(args.out or train_job.default_out(args.model)), args.overwrite, args.model)
    policy = setups.FastPolicy(pinned=None if args.fast_variant is None else Variant.parse(args.fast_variant),
                               use_cache=not args.no_fast_cache)
    summary = train_job.train(args.model, _device(args.device), recipe_name=args.recipe, epochs=args.epochs,
                              setup=args.pipeline, out=args.out, dataset=args.dataset, root=args.mnist_root,
                              samples=args.samples, seed=args.seed, progress=False if args.no_progress else None,
                              fast_policy=policy)
    return 130 if summary.interrupted else 0


def evaluate_command(args) -> int:
    device = _device(args.device)
    model = checkpoints.load(args.model, args.weights, device)
    recipe = models.recipe(args.model)
    test_set = data.load(args.dataset, args.mnist_root, train=False)
    accuracy, loss = evaluate(model, test_set, device, mean=recipe.normalize_mean, std=recipe.normalize_std)
    print(f"{args.weights}: {args.model} on {len(test_set)} {args.dataset} test images: "
          f"accuracy {accuracy:.2%}, loss {loss:.4f}")
    return 0


def profile_command(args) -> int:
    variant, device = Variant.parse(args.variant), _device(args.device)
    profile.check(args.model, device, variant, args.steps)
    train_set = data.load(args.dataset, args.mnist_root, train=True)
    batch_size = args.batch_size or models.recipe(args.model).batch_size
    found = profile.measure(args.model, device, train_set, batch_size, variant, args.steps, args.by_shape)
    print(found.table(args.top))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse's parser, stating the error before the usage, so that the first line names the cause."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n{self.format_usage()}")


def parser() -> argparse.ArgumentParser:
    main = _Parser(prog="mnistbench", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)

    def report(name, help_text, function, table=True, plot=True):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("paths", nargs="*", default=DEFAULT_RESULTS,
                             help="pytest-benchmark JSON files or folders (default: results/)")
        if table:
            command.add_argument("--format", choices=tables.FORMATS, default="markdown")
        if plot:
            command.add_argument("--plot", type=_image_file, metavar="FILE.png",
                                 help="also draw the report as a chart (.png, .svg or .pdf)")
        command.set_defaults(function=function)
        return command

    report("ratio", "GPU/CPU speed ratios of benchmarks that differ only in device, each accelerator against its "
                    "own host's CPU (the newest comparable runs), the articles' claims beside them", ratio_command)
    history_parser = report("history", "each benchmark's medians over the stored runs, regressions flagged",
                            history_command)
    history_parser.add_argument("--threshold", type=_fraction, default=history.THRESHOLD,
                                help="smallest relative slowdown that counts, if also significant and above the run-to-run "
                                     "noise (default: 0.07)")
    history_parser.add_argument("--fail-on-regression", action="store_true",
                                help="exit 1 when the newest run of any benchmark regressed")
    report("scaling", "images/s and efficiency of data-parallel training by world size, in each run", scaling_command)
    compare_parser = commands.add_parser(
        "compare", help="machine B against machine A, benchmark by benchmark, and the geometric means (base, peak)",
        description="machine B against machine A, benchmark by benchmark, and the geometric means (base, peak)")
    for side in ("a", "b"):
        compare_parser.add_argument(side, metavar=side.upper(), help="a results file or folder (of one machine), or a "
                                    "machine of the --results: its key (m1), identity, or a part only it holds")
    compare_parser.add_argument("--results", nargs="+", default=DEFAULT_RESULTS, metavar="PATH",
                                help="where A and B are looked up when they name machines (default: results/)")
    compare_parser.add_argument("--format", choices=tables.FORMATS, default="markdown")
    compare_parser.add_argument("--plot", type=_image_file, metavar="FILE.png",
                                help="also draw the speedups as a chart (.png, .svg or .pdf)")
    compare_parser.set_defaults(function=compare_command)
    score_parser = report("score", f"each machine's score: {score.SCALE} x the geometric mean of reference median / "
                                   f"median over a fixed list of benchmarks, base and peak apart", score_command,
                          plot=False)
    score_parser.add_argument("--reference", default=score.DEFAULT_REFERENCE, metavar="RUN",
                              help="a results file or folder, or a machine of PATH (default: the Zen 5 main job, "
                                   "run 0005)")
    report_parser = report("report", "one self-contained HTML page of every report", report_command, table=False,
                           plot=False)
    report_parser.add_argument("--html", required=True, type=_output_file, metavar="FILE.html", help="the page to write")
    report_parser.add_argument("--reference", default=score.DEFAULT_REFERENCE, metavar="RUN",
                               help="the score's reference (default: the Zen 5 main job, run 0005)")

    def job(name, help_text, function):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--model", required=True, choices=models.names())
        command.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
        command.add_argument("--dataset", default="mnist", choices=data.DATASETS)
        command.add_argument("--mnist-root", help=f"data root (default: ${data.ROOT_ENV}, else {data.DEFAULT_ROOT})")
        command.set_defaults(function=function)
        return command

    train_parser = job("train", "train with the article's (or the fast) recipe, evaluating and saving after every epoch",
                       train_command)
    train_parser.add_argument("--recipe", choices=models.RECIPES, default="article",
                              help="article (the articles' hyperparameters) or fast (the suite's tuned one-cycle recipe)")
    train_parser.add_argument("--epochs", type=_positive, help="default: the recipe's (the article's 10)")
    train_parser.add_argument("--pipeline", choices=setups.SETUPS,
                              help="reference (the articles' loop), resident, or fast (resident in the device's fast "
                                   "variant); default: reference for the article recipe, fast for the fast one")
    train_parser.add_argument("--out", help=f"model file to write (default: {train_job.default_out('MODEL')}); "
                                            "an existing file is refused unless --overwrite")
    train_parser.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    train_parser.add_argument("--samples", type=_positive, help="train on the first N images of each shuffled epoch")
    train_parser.add_argument("--seed", type=_seed, default=0, help="of the weights, the data's order and dropout "
                                                                    "(default: 0)")
    train_parser.add_argument("--no-progress", action="store_true",
                              help="no progress bar (it is drawn only on a terminal anyway)")
    train_parser.add_argument("--fast-variant", help="pin the fast setup's variant (e.g. bf16-channels_last-eager-fused) "
                                                     "instead of measuring the fastest on this device")
    train_parser.add_argument("--no-fast-cache", action="store_true",
                              help="measure the fast variant again instead of reusing this machine's cached choice")
    profile_parser = job("profile", "where a training step's time goes, by kind of work (convolutions, pooling, "
                                    "element-wise, casts, Adam...) and by operator, from torch.profiler (a compiled "
                                    "variant's fused kernels count as other)", profile_command)
    profile_parser.add_argument("--variant", default=str(Variant()),
                                help="precision-memory_format-compile-optimizer[-matmul] "
                                     "(default: fp32-contiguous-eager-default)")
    profile_parser.add_argument("--batch-size", type=_positive, help="default: the article's")
    profile_parser.add_argument("--steps", type=_positive, default=5, help="steps profiled (default: 5)")
    profile_parser.add_argument("--top", type=_positive, default=12, help="operators listed (default: 12)")
    profile_parser.add_argument("--by-shape", action="store_true",
                                help="list each operator once per shape of its inputs: which layers cost most")
    evaluate_parser = job("evaluate", "test-set accuracy and loss of a saved model", evaluate_command)
    evaluate_parser.add_argument("--weights", required=True, help="a state_dict file, ours or the articles'")
    return main


def escape_unencodable(stream) -> None:
    """Make ``stream`` write what its encoding cannot hold as escapes (``\\u6a21``) instead of raising: on a
    cp1252 console or an ASCII log a model path in Chinese characters would otherwise fail a finished job
    at its result line."""
    if hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="backslashreplace")


def main(argv=None) -> int:
    escape_unencodable(sys.stdout)
    escape_unencodable(sys.stderr)
    args = parser().parse_args(argv)
    # ``train`` and ``profile`` time steps as the suite's own process does: in a fresh process glibc's moving
    # thresholds cost GoogLeNet's bf16 step about 5,000 page faults, and a third of its time, on a 2-core Xeon.
    allocator.pin()
    # Under torchrun, @record saves a rank's uncaught error for torchrun's failure report; alone it would only
    # enable faulthandler, which warns on a stream without a file descriptor (a captured one).
    function = record(args.function) if distributed.launched_by_torchrun() else args.function
    try:
        return function(args)
    except (results.NoResultsError, checkpoints.CheckpointError, data.DataError, training.NonFiniteLossError,
            ValueError, OSError) as error:  # ValueError: machines.SelectionError too  # OSError: a --plot or --out path that cannot be written
        where = f"rank {os.environ['RANK']}: " if distributed.launched_by_torchrun() else ""
        print(f"mnistbench: error: {where}{error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnistbench: interrupted", file=sys.stderr)
        return 130
