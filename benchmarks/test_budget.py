"""The time budget and the estimates it decides by: what a case costs, from this machine's stored runs or a
model of its work; a case that does not fit is not started; at the deadline the running case is stopped as
Ctrl-C would stop it, what finished is saved and the rest is listed."""
import json
import math
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import models
from mnistbench import budget, data, estimate, machine, matrix, peaks, setups, variants
from mnistbench.variants import Variant

REPO = Path(__file__).resolve().parents[1]


class FixedSpeeds(estimate.StepSpeeds):
    """10 ms a training step, 0.1 ms an image decoded: known answers instead of measurements."""

    def step(self, model, device, batch_size):
        return 0.01

    def decode(self):
        return 1e-4


def test_the_model_prices_every_part_of_a_case():
    case = estimate.Case("id", "vgg", "cpu", 128, steps=100, timed_seconds=1.0, images_decoded=1000,
                         images_evaluated=3840, probe_candidates=(8, 1), compilations=1, launches=1)
    work = (100 + estimate.PROBE_STEPS_PER_CANDIDATE * 9) * 0.01 + 3840 / 128 * 0.01 / 3 + 1000 * 1e-4 + 1.0
    allowances = 2 * estimate.COMPILE_ALLOWANCE_SECONDS + estimate.LAUNCH_ALLOWANCE_SECONDS
    assert estimate.modelled(case, FixedSpeeds()) == pytest.approx(estimate.SAFETY * work + allowances)


def test_a_compilation_measured_in_the_run_replaces_the_allowance_for_its_model_and_device():
    speeds = FixedSpeeds()
    speeds.observe_compilation("vgg", "cuda:0", 12.0)
    speeds.observe_compilation("vgg", "cuda:0", 8.0)
    assert speeds.compile_seconds("vgg", "cuda:0") == 12.0  # the longest seen, however short next to the allowance
    assert speeds.compile_seconds("googlenet", "cuda:0") == speeds.compile_seconds("vgg", "cpu") == (
        estimate.COMPILE_ALLOWANCE_SECONDS)


def test_a_modelled_case_is_priced_again_with_the_compilation_the_run_measured_before_it():
    """On the first GPU run (an H200) the allowance priced each compiled inference step at 92 s after the fast
    cases had compiled in about a second, and the budget skipped both: the estimates were made once, before the
    run measured any compilation."""
    case = estimate.Case("forward", "vgg", "cuda:0", 128, steps=0, images_evaluated=1280, compilations=1)
    run = budget.Budget(100.0, speeds=FixedSpeeds(), modelled={"forward": case},
                        estimates={"forward": estimate.modelled(case, FixedSpeeds())})
    assert run.needed("forward") > estimate.COMPILE_ALLOWANCE_SECONDS
    run.speeds.observe_compilation("vgg", "cuda:0", 1.0)
    assert run.needed("forward") == pytest.approx(estimate.SAFETY * 1280 / 128 * 0.01 / 3 + 1.0)


def test_a_stored_case_costs_its_whole_test_or_in_older_files_its_rounds_and_first_step():
    newer = SimpleNamespace(extra_info={"case_seconds": 42.0, "first_step_seconds": 3.0}, rounds=2, median=10.0)
    older = SimpleNamespace(extra_info={"first_step_seconds": 3.0}, rounds=2, median=10.0)
    assert (estimate.stored(newer), estimate.stored(older)) == (42.0, 23.0)


def stored_run(folder: Path, threads: int) -> None:
    """A stored run of this machine's CPU (as identified with ``threads`` threads) holding one case."""
    info = {"kind": "epoch", "model": "vgg", "device": "cpu", "device_name": "cpu", "batch_size": 128, "samples": 256,
            "dataset": "mnist", "pipeline": "reference", "precision": "fp32", "memory_format": "contiguous",
            "compile": "eager", "threads": threads, "case_seconds": 42.0}
    document = {"datetime": "2026-11-30T10:00:00+00:00", "machine_info": machine._this_machine_info(),
                "benchmarks": [{"fullname": "case", "extra_info": info, "params": {},
                                "stats": {"median": 1.0, "iqr": 0.1, "rounds": 2}}]}
    folder.mkdir(parents=True)
    (folder / "0001_run.json").write_text(json.dumps(document))


def test_only_this_machine_identitys_stored_runs_estimate_its_cases(tmp_path):
    stored_run(tmp_path / "here", torch.get_num_threads())
    stored_run(tmp_path / "other", torch.get_num_threads() + 1)  # the same CPU with other threads: another identity
    assert estimate.newest_stored(tmp_path / "here", ["case"], {"case": "cpu"}) == {"case": 42.0}
    assert estimate.newest_stored(tmp_path / "other", ["case"], {"case": "cpu"}) == {}
    assert estimate.newest_stored(tmp_path / "nothing", ["case"], {"case": "cpu"}) == {}


def test_a_stored_run_of_another_size_does_not_estimate_a_case(tmp_path):
    """A quick run's fifth of an epoch does not price a whole one, nor two rounds three: the stored fields
    must hold ``Case.agrees``."""
    stored_run(tmp_path / "here", torch.get_num_threads())  # an epoch of 256 images, 2 rounds

    def estimates(agrees):
        return estimate.newest_stored(tmp_path / "here", ["case"], {"case": "cpu"}, {"case": agrees})

    assert estimates((("samples", 256), ("rounds", 2))) == {"case": 42.0} == estimates(())
    assert estimates((("samples", 12_800),)) == {} == estimates((("samples", 256), ("seeds", 5)))
    assert estimates((("samples", 256), ("rounds", 3))) == {}


def item_of(run: budget.Budget, node_id: str, benchmark=None) -> SimpleNamespace:
    """A collected test as the budget's hooks read it, in a run under ``run``."""
    return SimpleNamespace(nodeid=node_id, name=node_id, config=SimpleNamespace(stash={budget._BUDGET: run}),
                           funcargs={} if benchmark is None else {"benchmark": benchmark})


def test_the_line_before_the_run_says_what_fits_and_what_the_cases_left_out_would_need():
    """As the run decides: a case that does not fit is left out and the next one tried. A total of hours beside
    most cases fitting (a newcomer read it as a contradiction) is a few long cases, and the line says so."""
    run = budget.Budget(300.0, estimates={"a": 100.0, "huge": 11_000.0, "b": 150.0, "c": 100.0})
    assert budget._fitting(run, ["a", "huge", "b", "c"]) == (
        "mnistbench: time budget 300 s: by these estimates 2 of 4 fit (about 4 min), headline benchmarks first; "
        "2 left out would need about 185 min; the deadline stops the one still running")
    assert budget._fitting(run, ["a", "b"]).endswith("2 of 2 fit (about 4 min), headline benchmarks first; "
                                                      "the deadline stops the one still running")


def test_a_case_whose_estimate_does_not_fit_in_the_time_left_is_not_started():
    run = budget.Budget(10.0, estimates={"big": 100.0, "small": 1.0})
    with pytest.raises(pytest.skip.Exception, match=r"^time budget: big not started, about 100 s needed and 10 s left "
                                                    r"of 10 s$"):
        budget.pytest_runtest_setup(item_of(run, "big"))
    budget.pytest_runtest_setup(item_of(run, "small"))
    budget.pytest_runtest_setup(item_of(run, "not estimated"))  # a test the model does not know is left to the deadline
    assert run.reached == ["big", "small", "not estimated"]


def test_a_modelled_case_is_corrected_by_what_the_last_case_of_its_kind_cost_against_its_model():
    """The model prices a fast case at fp32's step; once the fast epoch of a model took a fifth of its modelled
    cost, that model's time to accuracy in the fast setup is expected to, and other kinds are not moved."""
    key = ("vgg", "cpu", True)
    run = budget.Budget(100.0, estimates={"epoch": 50.0, "to 99%": 200.0, "other": 80.0, "stored": 30.0},
                        learning={"epoch": key, "to 99%": key, "other": ("googlenet", "cpu", True)})
    assert (run.needed("to 99%"), run.needed("nothing known")) == (200.0, None)
    run.learn("epoch", 10.0)
    run.learn("stored", 300.0)  # a case estimated from a stored run teaches nothing
    assert (run.needed("to 99%"), run.needed("other"), run.needed("stored")) == (40.0, 80.0, 30.0)


def call(item, raising: BaseException | None = None) -> None:
    """The budget's wrapper around ``item``'s test function, which returns or raises ``raising``."""
    wrapper = budget.pytest_runtest_call(item)
    next(wrapper)
    if raising is None:
        with pytest.raises(StopIteration):
            wrapper.send(None)
    else:
        with pytest.raises(type(raising)):
            wrapper.throw(raising)


@pytest.mark.parametrize("raising", [RuntimeError("a fault"), pytest.skip.Exception("out of memory"),
                                     KeyboardInterrupt()], ids=["failed", "skipped", "interrupted"])
def test_only_a_case_that_returned_teaches_the_model(raising):
    """A case that fails in a moment says nothing of what a whole one costs: learnt from, it would set the
    correction of its kind to a fraction."""
    key = ("vgg", "cpu", True)
    run = budget.Budget(100.0, estimates={"epoch": 50.0, "to 99%": 200.0}, learning={"epoch": key, "to 99%": key})
    benchmark = SimpleNamespace(extra_info={})
    call(item_of(run, "epoch", benchmark), raising)
    assert run.corrections == {} and run.needed("to 99%") == 200.0 and "case_seconds" not in benchmark.extra_info
    call(item_of(run, "epoch", benchmark))
    assert list(run.corrections) == [key] and benchmark.extra_info["estimated_seconds"] == 50.0
    assert run.needed("to 99%") < 200.0 and benchmark.extra_info["case_seconds"] > 0


def test_the_deadline_names_the_case_running_then_never_one_skipped_or_finished(monkeypatch):
    """A case finished, the next skipped for want of time: a deadline falling then stopped no case. The one whose
    setup or test function runs at the deadline is named."""
    monkeypatch.setattr(budget.signal, "pthread_kill", lambda thread, number: None, raising=False)  # no Ctrl-C here
    run = budget.Budget(10.0, estimates={"big": 100.0}, benchmarks=["finished", "big", "running", "never"])
    lines = []
    reporter = SimpleNamespace(section=lambda title: None, write_line=lines.append)

    def deadline() -> list[str]:
        """What the run says after the deadline falls now."""
        run._expire()
        lines.clear()
        budget.pytest_terminal_summary(reporter, SimpleNamespace(stash={budget._BUDGET: run}))
        return lines

    budget.pytest_runtest_setup(item_of(run, "finished"))
    call(item_of(run, "finished"))
    with pytest.raises(pytest.skip.Exception):
        budget.pytest_runtest_setup(item_of(run, "big"))
    assert deadline() == ["mnistbench: the deadline fell while no case ran (between two) and stopped the run as "
                          "Ctrl-C would: the benchmarks that finished are saved",
                          "mnistbench: not run (time budget): running",
                          "mnistbench: not run (time budget): never"]
    budget.pytest_runtest_setup(item_of(run, "running"))
    stopped = ["mnistbench: stopped running at the deadline, as Ctrl-C would: the benchmarks that finished before it "
               "are saved", "mnistbench: not run (time budget): never"]
    assert deadline() == stopped, "in its setup (a module's fixture, its data)"
    wrapper = budget.pytest_runtest_call(item_of(run, "running"))
    next(wrapper)
    assert deadline() == stopped


@pytest.mark.parametrize("seconds, workers, message", [
    (0.0, 0, "--time-budget must be a positive number of seconds, got 0"),
    (float("nan"), 0, "--time-budget must be a positive number of seconds, got nan"),
    (60.0, 2, "--time-budget stops one process at its deadline: run it without -n"),
])
def test_a_budget_that_cannot_work_is_a_usage_error(seconds, workers, message):
    options = {"time_budget": seconds, "numprocesses": workers}
    config = SimpleNamespace(getoption=lambda name, default=None: options.get(name, default))
    with pytest.raises(pytest.UsageError, match=message):
        budget.pytest_configure(config)


def test_the_deadline_stops_the_running_case_saves_the_finished_and_lists_the_rest(tmp_path):
    """Three benchmarks under a 4-second budget: the first finishes and is saved, the second (a minute long)
    is stopped at the deadline as Ctrl-C would stop it and not saved, the third is listed as not run; the run
    ends with one line, not Ctrl-C's banner, and exits 0 because nothing failed. Started, as a shell's
    background job is, with SIGINT ignored."""
    (tmp_path / "test_three.py").write_text(textwrap.dedent('''
        import time

        def test_a_short(benchmark):
            benchmark.pedantic(time.sleep, args=(0.01,), rounds=2)

        def test_b_long(benchmark):
            benchmark.pedantic(time.sleep, args=(60,), rounds=1)

        def test_c_never_reached(benchmark):
            benchmark.pedantic(time.sleep, args=(0.01,), rounds=1)
    '''))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "mnistbench.budget", "-p", "mnistbench.storage", "-p", "no:cacheprovider",
         "--benchmark-only", "--benchmark-storage", str(tmp_path / "results"), "--benchmark-autosave",
         "--time-budget", "4", "test_three.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": ""},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # as a shell starts a background job
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "mnistbench: stopped test_three.py::test_b_long at the deadline, as Ctrl-C would" in output, output
    assert "mnistbench: not run (time budget): test_three.py::test_c_never_reached" in output, output
    assert "Exit: mnistbench: time budget of 4 s reached while the cases ran: the run stopped as Ctrl-C would" in \
        output, output
    assert "KeyboardInterrupt" not in output, "one line, not Ctrl-C's banner and the frame it stopped in"
    [saved] = (tmp_path / "results").glob("*/0001_*.json")
    assert [bench["name"] for bench in json.loads(saved.read_text())["benchmarks"]] == ["test_a_short"]


def test_a_deadline_before_the_first_case_says_so_and_exits_interrupted():
    """Collecting, the look at the machine and the estimates can outlast a short budget: one line (no Ctrl-C
    banner) says nothing ran, and the exit status stays "interrupted", not success; a user's own Ctrl-C is
    left as it is."""
    run = budget.Budget(2.0, benchmarks=["a", "b"])
    session = SimpleNamespace(config=SimpleNamespace(stash={budget._BUDGET: run}),
                              exitstatus=pytest.ExitCode.INTERRUPTED, testsfailed=0)
    collecting = budget.pytest_collection(session)
    next(collecting)
    with pytest.raises(KeyboardInterrupt):
        collecting.throw(KeyboardInterrupt())  # before the deadline: the user's
    run.expired = True
    # while collecting, or in the run's loop before the first case's setup (a budget of 3-6 s said "reached while
    # the cases ran" there, and then "the deadline fell before the first case")
    for hook in (budget.pytest_collection, budget.pytest_runtestloop):
        stage = hook(session)
        next(stage)
        with pytest.raises(pytest.exit.Exception, match="^mnistbench: time budget of 2 s reached before the first "
                                                        "case: the run stopped as Ctrl-C would$"):
            stage.throw(KeyboardInterrupt())
    lines = []
    budget.pytest_terminal_summary(SimpleNamespace(section=lambda title: None, write_line=lines.append),
                                   session.config)
    assert lines == ["mnistbench: the deadline fell before the first case (while collecting, looking at the "
                     "machine or estimating): nothing ran; give the run a longer budget",
                     "mnistbench: not run (time budget): a", "mnistbench: not run (time budget): b"]
    finishing = budget.pytest_sessionfinish(session)
    next(finishing)
    with pytest.raises(StopIteration):
        finishing.send(None)
    assert session.exitstatus == pytest.ExitCode.INTERRUPTED


def test_the_quick_matrix_holds_the_headline_cases_inference_steps_after_the_training_ones():
    """The quick matrix: the headline epochs, steps and time to accuracy, then the same steps in inference
    (what ``mnistbench score`` lists beside them); the rest of the standard matrix is left out."""
    fp32 = str(Variant())
    cases = [("test_step", {"model_name": "vgg", "batch_size": 128, "step_variant": "fast", "mode": "forward"}),
             ("test_time_to_accuracy", {"model_name": "vgg", "recipe_name": "fast"}),
             ("test_step", {"model_name": "vgg", "batch_size": 128, "step_variant": fp32, "mode": "forward"}),
             ("test_step", {"model_name": "vgg", "batch_size": 128, "step_variant": fp32, "mode": "train"}),
             ("test_epoch", {"model_name": "vgg", "setup": "reference"})]
    left_out = [("test_epoch", {"model_name": "vgg", "setup": "resident"}),
                ("test_step", {"model_name": "vgg", "batch_size": 512, "step_variant": fp32, "mode": "forward"}),
                ("test_time_to_accuracy", {"model_name": "vgg", "recipe_name": "article"})]
    assert all(matrix.in_matrix(test, params, "quick") for test, params in cases)
    assert not any(matrix.in_matrix(test, params, "quick") for test, params in left_out)
    ordered = sorted(cases + left_out, key=lambda case: matrix.order(*case))
    assert [(test, params.get("mode"), params.get("step_variant")) for test, params in ordered[:5]] == [
        ("test_epoch", None, None), ("test_step", "train", fp32), ("test_time_to_accuracy", None, None),
        ("test_step", "forward", fp32), ("test_step", "forward", "fast")]


def test_the_quick_probe_tries_what_can_win_on_the_device():
    """The quick matrix's probe on a CPU: fp32 and bf16, both memory formats, the default and the fused Adam,
    each with native convolutions or as matrix products, eager only (CUDA graphs need a GPU; compiling costs a
    CPU a minute a candidate); a smoke run's tries precisions, formats and convolutions with the default Adam;
    any other full benchmark every variant. (GoogLeNet's: VGGNet's hold no matrix products, ``test_fast``.)"""
    quick = setups.FastPolicy(**matrix.probe_choices("quick", full=True)).candidates("cpu", "onecycle", "googlenet")
    assert {str(variant) for variant in quick} == {f"{precision}-{memory_format}-eager-{optimizer}{convolution}"
                                                   for precision in ("fp32", "bf16")
                                                   for memory_format in ("contiguous", "channels_last")
                                                   for optimizer in ("default", "fused")
                                                   for convolution in ("", "-matmul")}
    assert "cudagraphs" in matrix.probe_choices("quick", full=True)["compile_modes"]
    assert matrix.probe_choices("quick", full=False) == matrix.QUICK_CHOICES  # --matrix quick without --benchmark-only
    for name in ("standard", "exhaustive"):
        smoke = setups.FastPolicy(**matrix.probe_choices(name, full=False)).candidates("cpu", "onecycle", "googlenet")
        assert {str(variant) for variant in smoke} == {f"{precision}-{memory_format}-eager-default{convolution}"
                                                       for precision in ("fp32", "bf16")
                                                       for memory_format in ("contiguous", "channels_last")
                                                       for convolution in ("", "-matmul")}
    assert matrix.probe_choices("standard", full=True) == {
        "precisions": variants.PRECISIONS, "compile_modes": variants.COMPILE_MODES, "optimizers": variants.OPTIMIZERS,
        "convolutions": variants.CONVOLUTIONS}


def step_case(mode: str, device: str = "cpu"):
    """``budget.case_of`` for a step case of VGGNet at batch 128, 10 rounds at least, 1 s of timed rounds."""
    options = {"benchmark_min_rounds": 10, "benchmark_max_time": 1.0}
    config = SimpleNamespace(getoption=options.get, mnistbench_fast_policy=setups.FastPolicy())
    params = {"model_name": "vgg", "device": device, "batch_size": 128, "step_variant": str(Variant()), "mode": mode}
    item = SimpleNamespace(nodeid=f"test_step[{mode}]", name=f"test_step[{mode}]", originalname="test_step",
                           callspec=SimpleNamespace(params=params))
    return budget.case_of(item, config, set())


def test_an_inference_step_is_priced_at_a_third_of_a_training_step():
    """A forward step has no backward and no Adam: its images are priced as evaluated ones, a third of a
    training image (``FORWARD_FRACTION``), where a training step's are priced whole."""
    train, forward = step_case("train"), step_case("forward")
    steps = 10 + budget.WARM_UP_STEPS + 10  # and as many turns with the peak's product as rounds (peaks.in_turns)
    assert (train.steps, train.images_evaluated) == (steps, 0)
    assert (forward.steps, forward.images_evaluated) == (0, steps * 128)
    assert train.timed_seconds == forward.timed_seconds == 1.0 + 10 * peaks.PROBE_SECONDS
    work = {name: estimate.modelled(c, FixedSpeeds()) - estimate.SAFETY * train.timed_seconds
            for name, c in (("train", train), ("forward", forward))}
    assert work["forward"] == pytest.approx(work["train"] * estimate.FORWARD_FRACTION)


def test_a_step_against_a_gpus_data_sheet_is_priced_without_the_turns_with_the_peaks_product(monkeypatch):
    """``peaks.in_turns`` runs only against a measured peak: a GPU the data sheets list (an H200) takes no turns
    after its rounds, an unlisted one does."""
    monkeypatch.setattr(peaks.torch.cuda, "is_available", lambda: True)
    for name, turns in (("NVIDIA H200", 0), ("NVIDIA GeForce RTX 4090", 10)):
        monkeypatch.setattr(peaks.devices, "name", lambda device, name=name: name)
        case = step_case("train", "cuda:0")
        assert (case.steps, case.timed_seconds) == (10 + budget.WARM_UP_STEPS + turns,
                                                    1.0 + turns * peaks.PROBE_SECONDS), name


def test_a_schedule_is_priced_one_evaluation_per_seed_and_a_target_one_per_epoch():
    """A recipe judged by the target is evaluated after every epoch; one judged by its schedule at its end."""
    options = {"seeds": 5}
    config = SimpleNamespace(getoption=options.get, mnistbench_fast_policy=setups.FastPolicy(),
                             mnistbench_accuracy_epoch_samples=None, mnistbench_test_samples=None)

    def case(recipe_name):
        params = {"model_name": "vgg", "device": "cpu", "recipe_name": recipe_name}
        item = SimpleNamespace(nodeid=f"test_time_to_accuracy[{recipe_name}]", name="test_time_to_accuracy",
                               originalname="test_time_to_accuracy", callspec=SimpleNamespace(params=params))
        return budget.case_of(item, config, set())

    article, fast = models.recipe("vgg", "article"), models.recipe("vgg", "fast")
    assert (article.judged_by, fast.judged_by) == ("target", "schedule")
    assert case("article").images_evaluated == 5 * article.epochs * data.TEST_IMAGES
    assert case("fast").images_evaluated == 5 * data.TEST_IMAGES
    # the steps of the recipe's share of the split: a fractional epoch is priced as the images it trains
    assert case("fast").steps == 5 * fast.epochs * math.ceil(fast.epoch_samples(data.TRAIN_IMAGES) / fast.batch_size) \
        + budget.WARM_UP_STEPS


def test_a_probe_is_priced_by_the_candidates_it_times():
    """The native eager candidates, then the matmul twin of each where the model has convolutions on small maps
    (GoogLeNet), and one compilation per compiled mode on top of the best."""
    policy = setups.FastPolicy(precisions=("fp32", "bf16"), compile_modes=("eager", "compile"),
                               optimizers=("default", "fused"))
    config = SimpleNamespace(mnistbench_fast_policy=policy)
    priced = {model: budget._with_probe(estimate.Case(f"test_epoch[{model}]", model, "cpu", 64, 10), True, config,
                                        set(), "constant").probe_candidates for model in ("googlenet", "vgg")}
    compiled = int(Variant(compile="compile").unsupported_on("cpu") is None)  # a C++ compiler here
    assert priced == {"googlenet": (8 + 8, compiled), "vgg": (8, compiled)}


def test_a_probe_is_priced_once_per_key_of_the_probe_itself():
    """Cases share a probe only when ``fast.choose`` would: the same model, device, batch and candidates.
    GoogLeNet's fast epoch (a constant rate) and its fast recipe (one-cycle, which ``compile-step`` cannot
    follow) both train at batch 64 but probe different candidates where this CPU compiles: each pays its own."""
    policy = setups.FastPolicy()
    config, probed = SimpleNamespace(mnistbench_fast_policy=policy), set()

    def priced(schedule, batch_size=64):
        case = estimate.Case("test_epoch[googlenet]", "googlenet", "cpu", batch_size, 10)
        return budget._with_probe(case, True, config, probed, schedule).probe_candidates != (0, 0)

    compiles = Variant(compile="compile-step").unsupported_on("cpu") is None  # a C++ compiler here
    assert set(policy.candidates("cpu", "constant", "googlenet")) != set(
        policy.candidates("cpu", "onecycle", "googlenet")) or not compiles
    assert priced("constant") and not priced("constant")  # the second case reuses the first's probe
    assert priced("onecycle") == compiles and not priced("onecycle")
    assert priced("onecycle", batch_size=128)


def test_no_matrix_holds_a_matmul_step_of_a_model_without_small_maps():
    """VGGNet's ``matmul`` step would time its native kernels under another name; GoogLeNet's is a case."""
    step = {"batch_size": 512, "device": "cpu", "mode": "train"}
    for model, held in (("googlenet", True), ("vgg", False)):
        for variant in ("bf16-channels_last-eager-fused-matmul", "fp32-contiguous-compile-step-default-matmul"):
            assert matrix.in_matrix("test_step", {**step, "model_name": model, "step_variant": variant},
                                    "exhaustive") is held
    assert matrix.in_matrix("test_step", {**step, "model_name": "vgg", "step_variant": "fast"}, "standard")
    assert matrix.in_matrix("test_step", {**step, "model_name": "vgg", "step_variant": "bf16-channels_last-eager-fused"},
                            "exhaustive")
