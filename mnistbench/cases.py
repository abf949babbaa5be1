"""A pytest run and its cases as the suite's hooks read them (conftest.py and the plugins), said once: whether
the run times its benchmarks, which cases are benchmarks, and a case's test and parameters."""


# Why an option about timings has nothing to act on in a smoke run, and the fix.
UNTIMED = "this run times nothing (a smoke run: benchmarks execute once, untimed): add --benchmark-only"


def timed(config) -> bool:
    """Whether the run times its benchmarks (``--benchmark-only`` or ``--benchmark-enable``); otherwise it is a
    smoke run, in which each benchmark executes once, untimed."""
    return bool(config.getoption("benchmark_only") or config.getoption("benchmark_enable"))


def is_benchmark(item) -> bool:
    """Whether the collected ``item`` is a benchmark (uses pytest-benchmark's fixture)."""
    return "benchmark" in getattr(item, "fixturenames", ())


def test(item) -> str:
    """The name of ``item``'s test function, without its parameters (``test_epoch``)."""
    return getattr(item, "originalname", item.name)


def params(item) -> dict:
    """``item``'s parameters by name (``{"model_name": "vgg", "device": "cpu", ...}``); none for a test that is
    not parametrized."""
    return getattr(item, "callspec", None) and item.callspec.params or {}
