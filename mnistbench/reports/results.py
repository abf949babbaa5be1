"""Stored results: pytest-benchmark JSON files read back, tolerating bad files without losing good ones.

Files of every pytest-benchmark version are read: 3.x wrote its UTC ``datetime`` without a time zone,
4.x and later with one. Files of every version of this suite are read in its current terms: a field
stored before it existed reads as what leaving it out meant (``STORED_DEFAULTS``), and a test parameter
renamed since reads under its new name (``current_params``), so that old and new runs of one benchmark
pair and form series. A file that is not valid JSON, a JSON from another tool or another pytest-benchmark
suite, a folder with no JSON, something that is not a regular file, a copy of a run already read, a machine
description whose fields hold the wrong JSON type, or one benchmark with a missing, mistyped or nonsensical
field (a hand-edited median of zero, a number where a device name belongs, a time to accuracy of no epochs)
each produce a one-line warning naming the file, the field and its value; only when nothing usable is left
does ``load`` raise ``NoResultsError``.
"""
import dataclasses
import json
import math
import statistics
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import machine
from ..variants import Variant

# A time to accuracy's recipe: a recipe changed is another benchmark, not a faster or slower one.
RECIPE_FIELDS = ("lr", "schedule", "max_epochs", "label_smoothing", "epoch_fraction")
# Fields that must agree before two results may be compared; a benchmark lacking one is skipped.
CONFIG_FIELDS = ("kind", "model", "device", "device_name", "batch_size", "samples", "dataset", "pipeline",
                 "precision", "memory_format", "compile", "convolution", "world_size", "backend", "seeds",
                 *RECIPE_FIELDS)
# What a result stored before a field existed meant by leaving it out: one process, no process group, the
# Adam implementation torch.optim.Adam picks and the backend's convolutions (the only ones before the choice
# existed), one seed, no recipe (other kinds than time to accuracy), and neither label smoothing nor a
# fractional epoch (no recipe had either before these were stored).
STORED_DEFAULTS = {"world_size": 1, "backend": None, "optimizer": "default", "convolution": "native", "seeds": 1,
                   "lr": None, "schedule": None, "max_epochs": None, "label_smoothing": 0.0, "epoch_fraction": 1.0}
VERSION_FIELDS = ("torch", "torchvision")
# The speed variant of a benchmark.
VARIANT_FIELDS = tuple(field.name for field in dataclasses.fields(Variant))
# The JSON type of every stored field the reports read (see ``check``); fields not listed are not read.
EXTRA_INFO_TYPES = {"kind": str, "model": str, "device": str, "device_name": str, "batch_size": int, "samples": int,
                    "dataset": str, "pipeline": (str, None), "precision": str, "memory_format": str, "compile": str,
                    "optimizer": str, "convolution": str, "world_size": int, "backend": (str, None), "seeds": int,
                    "threads": (int, None), "lr": (float, None), "schedule": (str, None), "max_epochs": (int, None),
                    "label_smoothing": float, "epoch_fraction": float,
                    "nodes": int, "first_step_seconds": (float, None), "joules_per_image": float,
                    "disturbed": bool, "disturbed_by": [str],
                    "quiet": {"canary_ms": [float], "limits": {"canary_drift": float}},
                    "epochs": (int, [int])}
BENCHMARK_TYPES = {"fullname": str, "params": (dict, None), "extra_info": EXTRA_INFO_TYPES,
                   "stats": {"median": float, "iqr": float, "rounds": int, "data": [float]}}
# The values the reports divide by or count with, beyond their JSON type (see ``check_values``): a rule for a
# number, or for each item of an array of numbers; ``NON_EMPTY`` also refuses an empty array.
ABOVE_ZERO = (lambda value: value > 0, "above zero")
ONE_OR_MORE = (lambda value: value >= 1, "one or more")
NON_EMPTY = "non-empty"
BENCHMARK_VALUES = {
    "stats": {"median": ABOVE_ZERO, "iqr": (lambda value: value >= 0, "zero or more"), "rounds": ONE_OR_MORE,
              "data": ABOVE_ZERO},
    "extra_info": {"batch_size": ONE_OR_MORE, "samples": ONE_OR_MORE, "world_size": ONE_OR_MORE, "nodes": ONE_OR_MORE,
                   "seeds": ONE_OR_MORE, "max_epochs": ONE_OR_MORE, "epochs": (*ONE_OR_MORE, NON_EMPTY),
                   "joules_per_image": ABOVE_ZERO, "quiet": {"canary_ms": ABOVE_ZERO}},
}


class NoResultsError(RuntimeError):
    """None of the given paths held a usable benchmark result."""


class ResultWarning(UserWarning):
    """A stored file or benchmark was skipped."""


class FieldError(ValueError):
    """A stored field is missing where it is needed, holds another JSON type than the reports read, or a value
    they cannot use; the message names the field and shows its value as JSON."""

    def __init__(self, where: str, value=None, expected: str | None = None):
        super().__init__(f"{where} is missing" if expected is None else f"{where} is {shown(value)}, not {expected}")


def shown(value, limit: int = 40) -> str:
    """``value`` as JSON, cut to ``limit`` characters: its type shows (``0``, ``"cpu"``, ``null``, ``[1]``)."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
               bool: "a boolean", None: "null"}


def _top(spec):
    """The Python type of a spec's top level (see ``check``)."""
    return dict if isinstance(spec, dict) else list if isinstance(spec, list) else spec


def _is(value, kind) -> bool:
    """Whether ``value`` is a JSON value of ``kind``: a number for ``float``, an integer for ``int``, never a
    boolean for either (Python's ``True`` is an ``int``)."""
    if kind is None:
        return value is None
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def check(value, spec, where: str) -> None:
    """``FieldError`` naming the first field of ``value`` (found at ``where``) whose JSON type differs from
    ``spec``: a Python type for one JSON type (``None`` for null), a tuple for any of its members, a dict for
    an object whose listed fields, where present, have their specs, a one-item list for an array of items
    of that spec."""
    options = spec if isinstance(spec, tuple) else (spec,)
    matching = [option for option in options if _is(value, _top(option))]
    if not matching:
        raise FieldError(where, value, " or ".join(_TYPE_NAMES[_top(option)] for option in options))
    chosen = matching[0]
    if isinstance(chosen, dict):
        for field, inner in chosen.items():
            if field in value:
                check(value[field], inner, f"{where}.{field}")
    elif isinstance(chosen, list):
        for index, item in enumerate(value):
            check(item, chosen[0], f"{where}[{index}]")


def check_values(value, rules, where: str) -> None:
    """``FieldError`` naming the first field of ``value`` (found at ``where``, its JSON types already checked)
    whose value breaks its rule in ``rules``: a dict of rules for an object's fields, where present and not null;
    a (test, expected[, ``NON_EMPTY``]) tuple for a number, or for every item of an array. NaN and infinities
    are never valid."""
    if value is None:
        return
    if isinstance(rules, dict):
        for field, inner in rules.items():
            if isinstance(value, dict) and field in value:
                check_values(value[field], inner, f"{where}.{field}")
        return
    valid, expected, *options = rules
    if isinstance(value, list):
        if not value and NON_EMPTY in options:
            raise FieldError(where, value, "a non-empty array")
        for index, item in enumerate(value):
            check_values(item, rules, f"{where}[{index}]")
    elif not math.isfinite(value):
        raise FieldError(where, value, "a finite number")
    elif not valid(value):
        raise FieldError(where, value, expected)


def test_function(fullname: str) -> str:
    """The test function of a pytest-benchmark fullname, e.g. ``test_epoch`` of
    ``benchmarks/test_epoch.py::test_epoch[vgg-cpu-fast]``."""
    return fullname.rsplit("::", 1)[-1].split("[", 1)[0]


def is_fast(params: dict) -> bool:
    """Whether a benchmark's parameters (``current_params``) are the ``fast`` setup's, recipe's or step's."""
    return "fast" in (params.get("setup"), params.get("recipe_name"), params.get("step_variant"))


def identity(test: str, params: dict) -> tuple:
    """What a benchmark is, whatever device ran it: the test and its parameters (in the current terms,
    ``current_params``) less the device, e.g. ``("test_epoch", ("model_name", "vgg"), ("setup", "fast"))``."""
    return (test,) + tuple(sorted((k, str(v)) for k, v in params.items() if k != "device"))


@dataclass(frozen=True)
class Result:
    """One benchmark of one stored run."""

    file: Path
    run_time: datetime
    name: str  # pytest-benchmark's fullname, device included
    params: dict
    extra_info: dict
    versions: dict
    median: float
    iqr: float
    rounds: int
    machine: str  # the device that ran it, in the terms that decide its speed (``machine.identity``)
    host: str  # the CPU of the machine that wrote the file (``machine.host``)
    hardware: str  # ``machine`` less a GPU's driver: the same before and after a driver upgrade
    driver: str | None  # a GPU's driver (``machine.driver``); None on a CPU or where not stored
    data: tuple[float, ...] | None = None  # every round's seconds, where the run stored them (--benchmark-save-data)

    @property
    def device(self) -> str:
        return self.extra_info["device"]

    @property
    def test(self) -> str:
        return test_function(self.name)

    @property
    def identity(self) -> tuple:
        """What the benchmark is, whatever device ran it: ``identity``."""
        return identity(self.test, self.params)

    @property
    def fast(self) -> bool:
        """Whether this is the ``fast`` setup, recipe or step: each device in its own measured best variant."""
        return is_fast(self.params)

    @property
    def tuning(self) -> str | None:
        """SPEC's split of a benchmark: ``peak`` for the fast setup, recipe or step (each device in its own
        measured best variant); ``base`` for the articles' configuration everywhere (the ``reference`` epoch,
        the article recipe's time to accuracy, the fp32 eager step with the default Adam); None for the rest
        (the ``resident`` epoch, data-parallel runs, the exhaustive matrix's other step variants)."""
        if self.fast:
            return "peak"
        base = {"setup": "reference", "recipe_name": "article", "step_variant": str(Variant())}
        return "base" if any(self.params.get(name) == value for name, value in base.items()) else None

    @property
    def workload(self) -> str:
        """What was trained, without device or variant, e.g. ``epoch vgg resident b128`` or ``epoch vgg fast b128``."""
        info = self.extra_info
        parts = [info["kind"], info["model"], "fast" if self.fast else info.get("pipeline"), f"b{info['batch_size']}"]
        return " ".join(str(part) for part in parts if part is not None)

    @property
    def variant(self) -> str:
        """The speed variant in full, e.g. ``fp32-contiguous-eager-fused`` or
        ``bf16-channels_last-eager-fused-matmul``."""
        return str(Variant.from_info(self.extra_info))

    @property
    def label(self) -> str:
        """A short readable name without the device: the workload and the variant's departures from fp32
        eager, e.g. ``epoch vgg resident b128`` or ``step-train vgg b128 bf16``."""
        info = self.extra_info
        parts = [info.get(field) for field in ("precision", "memory_format", "compile", "convolution")]
        if info.get("backend") is not None:
            parts.append(f"{info['backend']} x{info['world_size']}")
        return " ".join([self.workload] + [str(p) for p in parts
                                           if p not in (None, "fp32", "contiguous", "eager", "native")])

    @property
    def pair_label(self) -> str:
        """The benchmark as it is paired across devices and machines: its ``label``, less the variant where
        each side runs its own (``fast``)."""
        return self.workload if self.fast else self.label

    @property
    def recipe(self) -> str:
        """A time to accuracy's recipe in words, e.g. ``lr 0.006 onecycle, 1 epochs of 0.7, label smoothing
        0.1``; "" for other kinds."""
        info = self.extra_info
        if info["lr"] is None:
            return ""
        return (f"lr {info['lr']:g} {info['schedule']}, {info['max_epochs']} epochs"
                + (f" of {info['epoch_fraction']:g}" if info["epoch_fraction"] != 1 else "")
                + (f", label smoothing {info['label_smoothing']:g}" if info["label_smoothing"] else ""))

    @property
    def images_per_joule(self) -> float | None:
        """Images trained or inferred per joule of the device's energy, where it was measured (``energy.figures``)."""
        joules = self.extra_info.get("joules_per_image")
        return None if joules is None else 1 / joules

    @property
    def relative_noise(self) -> float:
        """The spread of this run's rounds: interquartile range over median."""
        return self.iqr / self.median if self.median else 0.0

    @property
    def disturbed_by(self) -> list[str]:
        """Why the machine was not quiet while this ran (``mnistbench.quiet``); empty when it was, or when the
        run is older than the check."""
        if not self.extra_info.get("disturbed"):
            return []
        return self.extra_info.get("disturbed_by") or ["disturbed"]

    @property
    def canary(self) -> tuple[float, float] | None:
        """The median of the canary's readings around this benchmark's rounds (ms) and the drift they were
        judged by (``mnistbench.quiet``), if read."""
        found = self.extra_info.get("quiet") or {}
        readings, limit = found.get("canary_ms"), (found.get("limits") or {}).get("canary_drift")
        return (statistics.median(readings), limit) if readings and limit is not None else None


def json_files(paths) -> list[Path]:
    """The JSON files named by ``paths``: files as given, folders searched recursively; each file once, however
    many of ``paths`` lead to it (``results results/Linux-...``)."""
    found = {}
    for path in map(Path, paths):
        if path.is_dir():
            inside = sorted(path.rglob("*.json"))
            if not inside:
                warnings.warn(f"{path}: no JSON files in this folder", ResultWarning, stacklevel=2)
        elif path.exists():
            inside = [path]
        else:
            warnings.warn(f"{path}: no such file or folder", ResultWarning, stacklevel=2)
            inside = []
        for file in inside:
            found.setdefault(file.resolve(), file)
    return list(found.values())


def read_file(path: Path) -> list[Result]:
    """The usable benchmarks of one pytest-benchmark JSON file (warnings for the rest)."""
    if path.exists() and not (path.is_file() or path.is_dir()):  # reading a FIFO or a device would block
        warnings.warn(f"{path}: skipped, not a regular file", ResultWarning, stacklevel=2)
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        warnings.warn(f"{path}: skipped, not readable JSON ({error})", ResultWarning, stacklevel=2)
        return []
    return parse(document, path)


def parse(document, path: Path) -> list[Result]:
    """The usable benchmarks of a pytest-benchmark JSON document, read from ``path`` or just produced."""
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list) or "datetime" not in document:
        warnings.warn(f"{path}: skipped, not a pytest-benchmark result file", ResultWarning, stacklevel=2)
        return []
    try:
        run_time = run_datetime(document["datetime"])
        machine_info = document.get("machine_info", {})
        check(machine_info, machine.STORED_TYPES, "machine_info")
    except FieldError as error:
        warnings.warn(f"{path}: skipped, {error}", ResultWarning, stacklevel=2)
        return []
    if not document["benchmarks"]:
        warnings.warn(f"{path}: skipped, it holds no benchmarks", ResultWarning, stacklevel=2)
    elif all(isinstance(bench, dict) and isinstance(bench.get("extra_info", {}), dict)
             and "kind" not in bench.get("extra_info", {}) for bench in document["benchmarks"]):
        warnings.warn(f"{path}: skipped, not an mnistbench result file (no benchmark holds extra_info.kind)",
                      ResultWarning, stacklevel=2)
        return []
    ours = machine_info.get("mnistbench", {})
    versions = {field: ours.get(field) for field in VERSION_FIELDS}
    results = []
    for number, bench in enumerate(document["benchmarks"], start=1):
        try:
            results.append(_result(bench, Path(path), run_time, versions, machine_info))
        except FieldError as error:
            name = bench.get("fullname") if isinstance(bench, dict) else None
            name = name if isinstance(name, str) else f"number {number}"
            warnings.warn(f"{path}: skipped benchmark {name}: {error}", ResultWarning, stacklevel=2)
    return results


def run_datetime(text) -> datetime:
    """When a run was made, time-zone aware: pytest-benchmark 3.x wrote UTC without saying so. ``FieldError``
    for anything but an ISO 8601 date and time."""
    if not isinstance(text, str):
        raise FieldError("datetime", text, "a string")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FieldError("datetime", text, "an ISO 8601 date and time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def current_params(test: str, params: dict, extra_info: dict) -> dict:
    """A benchmark's parameters in the suite's current terms, so that a run stored before a rename pairs with
    newer runs of the same benchmark: the epoch's ``pipeline_name`` became ``setup`` when the fast setup
    came; a step's variant, once a ``variant`` object (stored as ``UNSERIALIZABLE[...]``) and before that
    no parameter at all (fp32 eager), is now ``step_variant``, read from what the step recorded it ran."""
    params = dict(params)
    if test == "test_epoch" and "pipeline_name" in params:
        params["setup"] = params.pop("pipeline_name")
    if test == "test_step" and "step_variant" not in params:
        params.pop("variant", None)
        params["step_variant"] = str(Variant.from_info(extra_info))
    return params


def _result(bench, path: Path, run_time: datetime, versions: dict, machine_info: dict) -> Result:
    """One stored benchmark; ``FieldError`` naming the first field the reports cannot use."""
    if not isinstance(bench, dict):
        raise FieldError("the benchmark", bench, "an object")
    for field, spec in BENCHMARK_TYPES.items():
        if field in bench:
            check(bench[field], spec, field)
        elif field != "params":
            raise FieldError(field)
    stats, extra_info = bench["stats"], {**STORED_DEFAULTS, **bench["extra_info"]}  # fields older results lack
    for where, fields, within in (("stats", ("median", "iqr", "rounds"), stats), ("extra_info", CONFIG_FIELDS,
                                                                                  extra_info)):
        for field in fields:
            if field not in within:
                raise FieldError(f"{where}.{field}")
    for where, within in (("stats", stats), ("extra_info", extra_info)):
        check_values(within, BENCHMARK_VALUES[where], where)
    return Result(file=path, run_time=run_time, name=bench["fullname"],
                  params=current_params(test_function(bench["fullname"]), bench.get("params") or {}, extra_info),
                  extra_info=extra_info,
                  versions=versions, median=float(stats["median"]), iqr=float(stats["iqr"]),
                  rounds=int(stats["rounds"]), machine=machine.identity(machine_info, extra_info),
                  host=machine.host(machine_info), hardware=machine.identity(machine_info, extra_info, with_driver=False),
                  driver=machine.driver(machine_info, extra_info),
                  data=tuple(stats["data"]) if stats.get("data") else None)


def run_names(files) -> dict[Path, str]:
    """A short name for each run file: its number (``0005``), after its folder (``Linux-CPython-3.11-64bit/0005``)
    only where the files come from several folders."""
    files = list(dict.fromkeys(map(Path, files)))
    several = len({file.parent for file in files}) > 1
    return {file: "/".join(filter(None, [several and file.parent.name, file.stem.split("_")[0]])) for file in files}


def load(paths) -> list[Result]:
    """Every usable benchmark under ``paths``, oldest run first, each run once (a copy of a run's file under
    another name is skipped with a warning: a run beside its own copy would read as no change);
    ``NoResultsError`` if there is none."""
    results, runs = [], {}
    for path in json_files(paths):
        found = read_file(path)
        if found:
            run = (found[0].run_time, found[0].host, tuple((result.name, result.median) for result in found))
            if run in runs:
                warnings.warn(f"{path}: skipped, the same run as {runs[run]} (its time, machine and medians)",
                              ResultWarning, stacklevel=2)
                continue
            runs[run] = path
        results += found
    if not results:
        raise NoResultsError(f"no usable pytest-benchmark results in {', '.join(map(str, paths))}")
    return sorted(results, key=lambda result: result.run_time)


def load_quietly(storage) -> list[Result]:
    """``load`` of one ``storage`` folder for a run's own use (its estimates, its canary's baseline): none where
    there is none, and no warning for what is unusable, which the reports say when they read it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResultWarning)
        try:
            return load([storage])
        except NoResultsError:
            return []
