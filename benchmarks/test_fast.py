"""The fast setup's choice: measured on the machine at hand, bounded, recorded, pinned or cached."""
import json
import threading
import time

import pytest
import torch

from mnistbench import data, fast, setups, variants, watch
from mnistbench.variants import Variant

import models

BASELINE = Variant()
CANDIDATES = [Variant("fp32", "contiguous", "eager", "fused"), Variant("bf16", "contiguous", "eager", "default"),
              Variant("bf16", "channels_last", "eager", "default"), Variant("fp32", "contiguous", "compile", "fused"),
              Variant("fp32", "channels_last", "compile", "default")]


@pytest.fixture
def fake_timings(monkeypatch, tmp_path):
    """Probe timings from a table instead of a clock: seconds per step, by variant and batch size, and by
    variant and "turns" for the finalists' alternated turns (by default their full-batch seconds); no watchers
    (whether the machine was quiet is tested apart)."""
    monkeypatch.setenv(fast.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(fast, "_CHOSEN", {})
    monkeypatch.setattr(fast, "_BROKEN", [])  # a broken candidate here must not fail the test run itself
    monkeypatch.setattr(watch, "WATCHERS", [])
    table, calls, kept = {}, [], {}

    def timed(self, variant, batch_size, warm_up, timed, give_up_after, keep=False):
        calls.append((str(variant), batch_size))
        seconds = table[(str(variant), batch_size)]
        if isinstance(seconds, Exception):
            raise seconds
        if seconds > give_up_after:
            return None
        if keep:
            kept[variant] = batch_size
        return seconds

    def alternate(self, finalists, turns, steps):
        calls.append(("alternate", tuple(map(str, finalists))))
        return {v: [table.get((str(v), "turns"), table[(str(v), kept[v])])] * turns for v in finalists}

    monkeypatch.setattr(fast.TrainingSteps, "time", timed)
    monkeypatch.setattr(fast.TrainingSteps, "alternate", alternate)
    monkeypatch.setattr(fast.TrainingSteps, "__init__", lambda self, *args: setattr(self, "kept", {}))
    return table, calls


def test_the_probe_keeps_the_fastest_and_says_why_it_dropped_the_rest(fake_timings):
    table, calls = fake_timings
    table.update({
        (str(BASELINE), 4): 0.010, (str(BASELINE), 128): 0.100,
        (str(CANDIDATES[0]), 128): 0.080,  # fused Adam: faster
        (str(CANDIDATES[1]), 4): 0.200,  # bf16 emulated: 20x slower on the small batch, never tried at 128
        (str(CANDIDATES[2]), 4): 0.200,
        (str(CANDIDATES[3]), 128): RuntimeError("no C++ compiler\nmore"),
    })
    best, timings, _ = fast.probe("vgg", "cpu", None, 128, CANDIDATES)
    assert best == CANDIDATES[0]
    assert timings == {
        str(BASELINE): 100.0, str(CANDIDATES[0]): 80.0,
        str(CANDIDATES[1]): "dropped: over 3x slower than the best on a batch of 4",
        str(CANDIDATES[2]): "dropped: over 3x slower than the best on a batch of 4",
        str(CANDIDATES[3]): "failed: RuntimeError: no C++ compiler",
    }  # CANDIDATES[4] is compiled on top of another eager variant than the best: not tried
    assert (str(CANDIDATES[1]), 128) not in calls and str(CANDIDATES[4]) not in dict(calls)


def test_convolutions_as_matrix_products_are_tried_on_every_eager_variant_screened_where_a_model_has_small_maps(
        fake_timings):
    """GoogLeNet's late convolutions see 2x2 and 1x1 maps: ``matmul`` is timed on top of every eager variant
    that passed its screen, even one dropped at the full batch (its gain depends on the variant: on an Intel
    Xeon bf16's native step was dropped, and with matmul it was the fastest), not on one its screen dropped
    (an emulated precision), and compiled modes on top of the best of all; VGGNet has no such map, so its
    ``matmul`` variants would run the same kernels and are never its candidates."""
    table, calls = fake_timings
    fused, bf16, emulated = Variant(optimizer="fused"), Variant("bf16"), Variant("bf16", "channels_last")
    on_fused, on_baseline = Variant(optimizer="fused", convolution="matmul"), Variant(convolution="matmul")
    on_bf16, on_emulated = Variant("bf16", convolution="matmul"), Variant("bf16", "channels_last", convolution="matmul")
    compiled = Variant("bf16", compile="compile", convolution="matmul")
    table.update({(str(BASELINE), 4): 0.01, (str(BASELINE), 64): 0.100, (str(fused), 64): 0.080,
                  (str(bf16), 4): 0.012, (str(bf16), 64): 0.130, (str(emulated), 4): 0.050,
                  (str(on_baseline), 64): 0.200, (str(on_fused), 64): 0.060, (str(on_bf16), 64): 0.050,
                  (str(compiled), 64): 0.070})
    candidates = [fused, bf16, emulated, on_baseline, on_fused, on_bf16, on_emulated, compiled]
    best, timings, _ = fast.probe("googlenet", "cpu", None, 64, candidates)
    assert best == on_bf16 and timings[str(on_bf16)] == 50.0
    assert timings[str(bf16)] == "dropped: a step over 1.5x the best so far"
    assert timings[str(on_baseline)] == "dropped: a step over 1.5x the best so far"
    assert timings[str(emulated)].startswith("dropped: over 3x slower") and str(on_emulated) not in timings
    assert [name for name, batch in calls if batch == 64] == [str(BASELINE), str(fused), str(bf16), str(on_baseline),
                                                              str(on_fused), str(on_bf16), str(compiled)]
    policy = setups.FastPolicy(optimizers=("default", "fused"))
    assert {variant.convolution for variant in policy.candidates("cpu", "onecycle", "googlenet")} == {"native", "matmul"}
    assert {variant.convolution for variant in policy.candidates("cpu", "onecycle", "vgg")} == {"native"}


def test_the_step_captured_whole_is_tried_on_every_eager_variant_timed_and_compiled_modes_on_the_best(fake_timings):
    """Capturing compiles nothing, and a captured step's speed is its arithmetic, where eager steps bound by
    kernel launches differ little (on an H200 VGGNet's eager fp32 step beat bf16 channels_last, captured the
    other way round): ``cudagraphs-step`` is timed on top of each eager variant that was timed, not the
    dropped ones; ``cudagraphs`` compiles, on top of the best eager variant only."""
    table, calls = fake_timings
    bf16_cl, dropped = Variant("bf16", "channels_last"), Variant(optimizer="fused")
    captured = [Variant(compile="cudagraphs-step"), Variant("bf16", "channels_last", "cudagraphs-step"),
                Variant(compile="cudagraphs-step", optimizer="fused")]
    compiled = [Variant(compile="cudagraphs"), Variant("bf16", "channels_last", "cudagraphs")]
    table.update({(str(BASELINE), 4): 0.01, (str(BASELINE), 128): 0.0030, (str(bf16_cl), 4): 0.01,
                  (str(bf16_cl), 128): 0.0032, (str(dropped), 128): 0.0050,
                  (str(captured[0]), 128): 0.0011, (str(captured[1]), 128): 0.0007, (str(compiled[0]), 128): 0.0015})
    best, timings, _ = fast.probe("vgg", "cuda:0", None, 128, [bf16_cl, dropped, *captured, *compiled])
    assert best == captured[1] and timings[str(captured[1])] == 0.7
    assert [name for name, batch in calls if batch == 128] == [
        str(BASELINE), str(bf16_cl), str(dropped), str(captured[0]), str(captured[1]), str(compiled[0])]


def test_a_candidate_slower_than_the_best_at_full_batch_is_dropped_and_fp32_wins_ties(fake_timings):
    table, _ = fake_timings
    table.update({(str(BASELINE), 4): 0.01, (str(BASELINE), 64): 0.05, (str(CANDIDATES[0]), 64): 0.09})
    best, timings, _ = fast.probe("googlenet", "cpu", None, 64, CANDIDATES[:1])
    assert best == BASELINE
    assert timings[str(CANDIDATES[0])] == "dropped: a step over 1.5x the best so far"


def test_a_choice_is_pinned_or_cached_per_machine_and_recorded(fake_timings, monkeypatch):
    table, calls = fake_timings
    table.update({(str(BASELINE), 4): 0.01, (str(BASELINE), 128): 0.10, (str(CANDIDATES[0]), 128): 0.05,
                  (str(BASELINE), 256): 0.20, (str(CANDIDATES[0]), 256): 0.10})
    probed = fast.choose("vgg", "cpu", None, 128, CANDIDATES[:1])
    assert (probed.variant, probed.source) == (CANDIDATES[0], "probe")
    assert probed.info()["fast_probe_ms"] == {str(BASELINE): 100.0, str(CANDIDATES[0]): 50.0}
    assert len(json.loads(fast.cache_path().read_text())) == 1

    monkeypatch.setattr(fast, "_CHOSEN", {})  # a new run on the same machine
    calls.clear()
    cached = fast.choose("vgg", "cpu", None, 128, CANDIDATES[:1])
    assert (cached.variant, cached.source, calls) == (CANDIDATES[0], "cache", [])
    assert fast.choose("vgg", "cpu", None, 128, CANDIDATES[:1], use_cache=False).source == "cache", "memo per run"
    monkeypatch.setattr(fast, "_CHOSEN", {})
    assert fast.choose("vgg", "cpu", None, 128, CANDIDATES[:1], use_cache=False).source == "probe"
    assert fast.choose("vgg", "cpu", None, 256, CANDIDATES[:1]).source == "probe", "another batch is another key"

    pinned = fast.choose("vgg", "cpu", None, 128, CANDIDATES[:1], pinned=CANDIDATES[2])
    assert (pinned.variant, pinned.source, pinned.timings) == (CANDIDATES[2], "pinned", {})


def test_the_finalists_verdicts_are_recorded_with_the_choice_and_cached_with_it(fake_timings, monkeypatch):
    """Why a probe chose (run 0021 of the Intel Xeon kept the default Adam over fused by its turns, which its
    result did not hold): each finalist's judgement goes into the result and the cache; a cache entry this
    version cannot read, or one naming a variant the probe could not have chosen, is measured again, not a crash."""
    table, calls = fake_timings
    fused = Variant(optimizer="fused")
    table.update({(str(BASELINE), 4): 0.01, (str(BASELINE), 128): 0.100, (str(fused), 128): 0.090})
    probed = fast.choose("vgg", "cpu", None, 128, [fused])
    [verdict] = probed.info()["fast_probe_verdicts"]
    assert verdict == {"candidate": str(fused), "against": str(BASELINE), "outcome": "replaced", "median_ratio": 0.9,
                       "bound": 1 - fast.MARGIN, "p_value": round(1 / 2**7, 4), "ratios": [0.9] * fast.Turns().first}
    [entry] = json.loads(fast.cache_path().read_text()).values()
    assert entry["verdicts"] == [verdict]
    monkeypatch.setattr(fast, "_CHOSEN", {})
    calls.clear()
    cached = fast.choose("vgg", "cpu", None, 128, [fused])
    assert (cached.source, calls, cached.info()["fast_probe_verdicts"]) == ("cache", [], [verdict])

    key = next(iter(json.loads(fast.cache_path().read_text())))
    for unreadable in ("a string", {"timings": {}}, {"variant": 7, "verdicts": []},
                       {"variant": "fp64-contiguous-eager-default", "verdicts": []},
                       {"variant": "tf32-contiguous-eager-default", "verdicts": []},  # the CPU cannot run it
                       {"variant": "bf16-contiguous-eager-foreach", "verdicts": []},  # not a candidate of the key
                       {"variant": str(fused), "timings": [], "verdicts": []}, {"variant": str(fused), "verdicts": [1]},
                       {"variant": str(fused), "timings": {}}):  # the last: before the verdicts were kept
        fast.cache_path().write_text(json.dumps({key: unreadable}))
        monkeypatch.setattr(fast, "_CHOSEN", {})
        calls.clear()
        again = fast.choose("vgg", "cpu", None, 128, [fused])
        assert (again.source, again.variant) == ("probe", fused) and calls, unreadable
        assert json.loads(fast.cache_path().read_text())[key]["variant"] == str(fused), "written anew"


def test_a_pinned_variant_the_device_cannot_run_is_refused(mnist_train):
    policy = setups.FastPolicy(pinned=Variant("tf32"))
    with pytest.raises(ValueError, match="--fast-variant tf32-contiguous-eager-default: tf32 needs"):
        setups.resolve("fast", "cpu", "vgg", models.recipe("vgg"), mnist_train, policy)


def test_a_real_probe_times_real_steps(mnist_train, monkeypatch, tmp_path):
    monkeypatch.setenv(fast.CACHE_ENV, str(tmp_path))
    best, timings, verdicts = fast.probe("vgg", "cpu", mnist_train, 32, [Variant(optimizer="fused")])
    assert best in (BASELINE, Variant(optimizer="fused"))
    measured = {name: ms for name, ms in timings.items() if isinstance(ms, float)}
    assert str(BASELINE) in measured and all(ms > 0 for ms in measured.values()), timings
    assert all(ms.startswith("dropped: a step over") for ms in timings.values() if ms not in measured.values())
    # a more complex variant is chosen only when faster than fp32 by the margin, judged as the probe judges: two
    # finalists by the median of their turn-by-turn ratios and the test on them (each one's own median, in
    # ``timings``, can say otherwise on a busy machine: it failed so once under the test command's two
    # workers), one that alone came within reach of the best by its first timing
    judged = {verdict.candidate: verdict.info() for verdict in verdicts}
    if best in judged:
        assert judged[best]["outcome"] == "replaced" and judged[best]["median_ratio"] < 1 - fast.MARGIN, judged
    else:
        assert all(info["outcome"] != "replaced" for info in judged.values()), judged
        assert best == BASELINE or measured[str(best)] < measured[str(BASELINE)] * (1 - fast.MARGIN)


def test_fp16_is_timed_only_after_its_loss_scale_settles(monkeypatch):
    """The first fp16 steps skip Adam while GradScaler lowers its scale: timing them would favour fp16."""
    monkeypatch.setattr(fast.TrainingSteps, "__init__", lambda self, *args: None)
    monkeypatch.setattr(fast.TrainingSteps, "steps", lambda self, variant, batch_size: iter(range(1, 100)))
    probe = fast.TrainingSteps()
    assert probe.time(Variant("fp16"), 8, warm_up=1, timed=3, give_up_after=1e9) == variants.FP16_WARM_UP_STEPS + 1
    assert probe.time(Variant("bf16"), 8, warm_up=1, timed=3, give_up_after=1e9) == 2


def test_a_more_complex_variant_must_beat_a_simpler_one_by_the_margin(fake_timings):
    table, _ = fake_timings
    fused = Variant(optimizer="fused")
    table.update({(str(BASELINE), 4): 0.01, (str(BASELINE), 128): 0.100})
    for seconds, chosen in ((0.100 * (1 - fast.MARGIN / 2), BASELINE), (0.100 * (1 - 2 * fast.MARGIN), fused)):
        table[(str(fused), 128)] = seconds
        assert fast.probe("vgg", "cpu", None, 128, [fused])[0] == chosen


def test_on_cuda_the_default_adam_and_foreach_are_one_candidate():
    """torch.optim.Adam's default on CUDA is its foreach implementation: timing both would only time it twice."""
    foreach, bf16_foreach = Variant(optimizer="foreach"), Variant("bf16", optimizer="foreach")
    candidates = [BASELINE, foreach, bf16_foreach, foreach]
    assert fast.distinct(candidates, "cuda:0") == [BASELINE, bf16_foreach]  # bf16's default is not a candidate
    assert fast.distinct(candidates, "cpu") == [BASELINE, foreach, bf16_foreach]  # a loop over tensors on a CPU


def test_short_steps_are_timed_more_often(monkeypatch):
    monkeypatch.setattr(fast.TrainingSteps, "__init__", lambda self, *args: None)
    taken = []

    def steps(self, variant, batch_size):
        while True:
            taken.append(seconds)
            yield seconds

    monkeypatch.setattr(fast.TrainingSteps, "steps", steps)
    for seconds, timed in ((0.5, fast.TIMED_STEPS), (0.02, 5), (0.0001, fast.MAX_TIMED_STEPS)):
        taken.clear()
        fast.TrainingSteps().time(Variant(), 8, warm_up=1, timed=fast.TIMED_STEPS, give_up_after=1e9)
        assert len(taken) == 1 + timed, seconds


def test_a_candidate_that_raises_is_broken_named_and_never_cached(fake_timings):
    table, _ = fake_timings
    compiled = Variant(compile="compile")
    table.update({(str(BASELINE), 4): 0.01, (str(BASELINE), 128): 0.10,
                  (str(compiled), 128): RuntimeError("Inductor: a lowering failed\ndetails")})
    choice = fast.choose("vgg", "cpu", None, 128, [compiled])
    assert choice.variant == BASELINE and choice.timings[str(compiled)] == "failed: RuntimeError: Inductor: a lowering failed"
    assert fast.broken() == ["vgg on cpu, batch 128: fp32-contiguous-compile-default failed: RuntimeError: "
                                      "Inductor: a lowering failed"]
    assert not fast.cache_path().exists(), "a probe with a broken candidate is measured again next time"


def test_running_out_of_memory_drops_a_candidate_without_breaking_the_run(fake_timings):
    table, _ = fake_timings
    big = Variant(memory_format="channels_last")
    table.update({(str(BASELINE), 4): 0.01, (str(big), 4): 0.01, (str(BASELINE), 4096): 0.10,
                  (str(big), 4096): torch.OutOfMemoryError("CUDA out of memory")})
    best, timings, _ = fast.probe("vgg", "cpu", None, 4096, [big])
    assert best == BASELINE and timings[str(big)] == "dropped: out of memory at batch 4096"
    assert fast.broken() == []


def test_a_gpus_cached_choice_is_keyed_to_its_host_cpu_too(monkeypatch):
    monkeypatch.setattr(fast.machine, "identity_here", lambda device: f"identity of {device}")
    gpu = json.loads(fast._cache_key("vgg", "cuda:0", 128, [], "constant"))
    cpu = json.loads(fast._cache_key("vgg", "cpu", 128, [], "constant"))
    assert (gpu["machine"], gpu["host"]) == ("identity of cuda:0", "identity of cpu")
    assert (cpu["machine"], cpu["host"]) == ("identity of cpu", None)


def test_a_schedule_changes_the_key_and_the_steps_where_it_changes_the_adam_a_candidate_builds(monkeypatch):
    """A captured step under a schedule runs Adam's single-tensor form (``Variant.optimizer_options``): the probe
    times that form, and its choice is not the one a constant rate's probe made; elsewhere one choice serves both."""
    monkeypatch.setattr(fast.machine, "identity_here", lambda device: f"identity of {device}")
    captured, eager = Variant(compile="cudagraphs-step"), Variant(optimizer="fused")
    assert fast._cache_key("vgg", "cuda:0", 64, [captured], "onecycle") != fast._cache_key(
        "vgg", "cuda:0", 64, [captured], "constant")
    assert fast._cache_key("vgg", "cuda:0", 64, [eager], "onecycle") == fast._cache_key(
        "vgg", "cuda:0", 64, [eager], "constant")
    assert fast.TrainingSteps("vgg", "cpu", data.SyntheticMNIST(), 8, "onecycle").recipe.schedule == "onecycle"
    assert captured.optimizer_options("onecycle") == {"capturable": True, "foreach": False}
    assert captured.optimizer_options() == {"capturable": True}


def test_the_probe_builds_its_steps_for_the_schedule_of_the_case_it_chooses_for(fake_timings, monkeypatch):
    table, _ = fake_timings
    table.update({(str(BASELINE), 4): 0.01, (str(BASELINE), 64): 0.01})
    built = []
    monkeypatch.setattr(fast.TrainingSteps, "__init__", lambda self, *args: built.append(args) or setattr(
        self, "kept", {}))
    fast.choose("vgg", "cpu", None, 64, [], schedule="onecycle")
    assert built == [("vgg", "cpu", None, 64, "onecycle")]


def test_two_processes_sharing_the_cache_probe_a_key_once(fake_timings, monkeypatch):
    """As pytest-xdist workers do: the second waits for the first's probe, then reads its choice."""
    table, calls = fake_timings
    table.update({(str(BASELINE), 4): 0.01, (str(BASELINE), 128): 0.10})
    real_probe = fast.probe

    def slow_probe(*args):
        time.sleep(0.3)
        return real_probe(*args)

    monkeypatch.setattr(fast, "probe", slow_probe)
    sources = []

    def worker():  # each worker process has its own memo of choices
        fast._CHOSEN.clear()
        sources.append(fast.choose("vgg", "cpu", None, 128, []).source)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sources) == ["cache", "probe"] and calls.count((str(BASELINE), 128)) == 1


def test_the_finalists_take_turns_on_their_warm_models(monkeypatch):
    """A B A B: the steps each finalist's first timing took are shared among the turns (at least
    ``steps`` a turn: the first after the other finalist's is slowed by that one's caches), the fastest
    of each turn kept."""
    monkeypatch.setattr(fast.TrainingSteps, "__init__", lambda self, *args: None)
    order = []

    def steps(name, seconds):
        for value in seconds:
            order.append(name)
            yield value

    probe = fast.TrainingSteps()
    probe.device, fused = "cpu", Variant(optimizer="fused")
    probe.kept = {BASELINE: (steps("A", [0.3, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]), 8),
                  fused: (steps("B", [0.4, 0.1, 0.3, 0.9, 0.6, 0.8]), 1)}
    assert probe.alternate([BASELINE, fused], turns=2, steps=3) == {BASELINE: [0.2, 0.6], fused: [0.1, 0.6]}
    assert order == ["A"] * 4 + ["B"] * 3 + ["A"] * 4 + ["B"] * 3


def test_only_the_finalists_stay_warm():
    probe, bf16 = fast.TrainingSteps.__new__(fast.TrainingSteps), Variant("bf16")
    running = {variant: (step for step in iter(float, 1)) for variant in (BASELINE, bf16)}
    probe.kept = {variant: (steps, 3) for variant, steps in running.items()}
    next(running[bf16])  # started, as a timed candidate's steps are
    probe.keep_only([BASELINE])
    assert list(probe.kept) == [BASELINE]
    with pytest.raises(StopIteration):  # closed: its model and optimizer are free to go
        next(running[bf16])


def test_the_choice_is_made_on_the_alternated_turns_not_the_first_timings(fake_timings):
    """Timed one after the other, fused Adam looked 20% faster; taking turns with fp32 it is 1% faster, less
    than the margin a more complex variant must win by. bf16, 30% slower than the best at first, does not
    take turns."""
    table, calls = fake_timings
    fused, bf16 = Variant(optimizer="fused"), Variant("bf16")
    table.update({(str(BASELINE), 4): 0.01, (str(bf16), 4): 0.01, (str(BASELINE), 128): 0.100,
                  (str(fused), 128): 0.080, (str(bf16), 128): 0.104, (str(BASELINE), "turns"): 0.100,
                  (str(fused), "turns"): 0.099})
    best, timings, verdicts = fast.probe("vgg", "cpu", None, 128, [fused, bf16])
    assert best == BASELINE and timings == {str(BASELINE): 100.0, str(fused): 99.0, str(bf16): 104.0}
    assert calls[-1] == ("alternate", (str(BASELINE), str(fused)))
    assert [verdict.info() for verdict in verdicts] == [{  # why: a reader of the result sees it
        "candidate": str(fused), "against": str(BASELINE), "outcome": "not under the bound", "median_ratio": 0.99,
        "bound": 1 - fast.MARGIN, "p_value": None, "ratios": [0.99] * fast.Turns().first}]


def test_a_gain_near_the_margin_must_show_on_the_turns_to_be_chosen():
    """Turn by turn, fused Adam's step over fp32's: a median gain past the margin carried by a few turns
    (0.91, 0.98, 0.93 ...) is not significant and is left open; a gain past the margin in every turn wins.
    (The probe's finalists are sorted simplest first, so ``best`` is never the more complex.)"""
    fused = Variant(optimizer="fused")
    base = [0.100, 0.102, 0.098, 0.101, 0.099, 0.100, 0.103]
    noisy = [b * r for b, r in zip(base, (0.91, 0.98, 0.93, 0.99, 0.92, 0.97, 0.94))]
    steady = [b * r for b, r in zip(base, (0.91, 0.93, 0.92, 0.90, 0.92, 0.93, 0.91))]
    open_gain, won = fast._judge(fused, noisy, BASELINE, base), fast._judge(fused, steady, BASELINE, base)
    assert open_gain.replaces is None, "faster by the median only: more turns"
    assert open_gain.p_value >= fast.ALPHA
    assert open_gain.info()["outcome"] == "under the bound by the median only, not by the test"
    assert won.replaces is True and won.p_value == 1 / 2**7, "every turn below: the smallest p-value of 7 turns"
    assert won.info()["median_ratio"] == 0.92 and won.info()["outcome"] == "replaced"
    assert fast._judge(fused, base, BASELINE, base).replaces is False, "a tie never replaces"
    two_turns = fast._judge(fused, [0.090, 0.100], BASELINE, [0.100, 0.100])  # a smoke probe's two turns
    assert two_turns.info()["median_ratio"] == round(0.9**0.5, 4), "the median it was judged by: 0.9487, not 0.95"
    assert two_turns.replaces is None, "under the bound of 0.95 by that median, and two turns prove nothing"
    assert fast._judge(fused, [s * 0.97 for s in base], BASELINE, base).replaces is False, "within the margin"
    assert fast._judge(Variant("bf16"), [s * 0.98 for s in base], fused, base).replaces, "as complex: faster is enough"


def test_a_gain_the_turns_leave_open_gets_a_duel_and_then_the_test_decides(fake_timings, monkeypatch):
    """Fused Adam 8% faster by the median of 7 noisy turns but not by the test: it and fp32 take 8 more turns
    alone, a duel (bf16, a finalist the test already ruled out, does not take them), and the test decides on
    the pair's 15 turns; if it leaves the gain open, the simpler fp32 stays."""
    table, calls = fake_timings
    fused, bf16 = Variant(optimizer="fused"), Variant("bf16")
    table.update({(str(BASELINE), 4): 0.01, (str(bf16), 4): 0.01, (str(BASELINE), 128): 0.100,
                  (str(fused), 128): 0.090, (str(bf16), 128): 0.105})
    noisy = [0.91, 0.98, 0.93, 0.99, 0.92, 0.97, 0.94, 0.91]
    for more, chosen in ((noisy, BASELINE), ([0.90] * 8, fused)):
        calls.clear()
        rounds = iter([{BASELINE: [0.1] * 7, fused: [0.1 * r for r in noisy[:7]], bf16: [0.105] * 7},
                       {BASELINE: [0.1] * 8, fused: [0.1 * r for r in more]}])

        def alternate(self, finalists, turns, steps):
            calls.append(("alternate", tuple(map(str, finalists)), turns))
            return next(rounds)

        monkeypatch.setattr(fast.TrainingSteps, "alternate", alternate)
        best, timings, verdicts = fast.probe("vgg", "cpu", None, 128, [fused, bf16])
        assert best == chosen and next(rounds, "both taken") == "both taken"
        assert [call for call in calls if call[0] == "alternate"] == [
            ("alternate", (str(BASELINE), str(fused), str(bf16)), fast.Turns().first),
            ("alternate", (str(BASELINE), str(fused)), fast.Turns().more)]
        assert timings[str(BASELINE)] == 100.0 and timings[str(bf16)] == 105.0
        fused_verdict = next(verdict for verdict in verdicts if verdict.candidate == fused)
        assert len(fused_verdict.ratios) == fast.Turns().first + fast.Turns().more, "judged on the duel's turns too"
        assert fused_verdict.replaces is (True if chosen == fused else None), "won, or still left open"
    rounds = iter([{BASELINE: [0.1] * 7, fused: [0.1 * r for r in noisy[:7]], bf16: [0.105] * 7}])
    best, _, _ = fast.probe("vgg", "cpu", None, 128, [fused, bf16], fast.SMOKE_TURNS)
    assert best == BASELINE and next(rounds, "one taken") == "one taken", "a smoke probe takes no more turns"


class _Disturbed:
    """A watcher that finds the machine busy."""

    def __init__(self, device):
        pass

    start = lap = pause = resume = lambda self: None

    def stop(self):
        return {"disturbed": True, "disturbed_by": ["other processes used 50.0% of the machine's CPU time"]}


def test_a_probe_on_a_machine_that_was_not_quiet_is_recorded_and_not_cached(fake_timings, monkeypatch):
    table, _ = fake_timings
    table.update({(str(BASELINE), 4): 0.01, (str(BASELINE), 128): 0.10})
    monkeypatch.setattr(watch, "WATCHERS", [_Disturbed])
    choice = fast.choose("vgg", "cpu", None, 128, [])
    assert choice.info()["fast_probe_disturbed_by"] == ["other processes used 50.0% of the machine's CPU time"]
    assert not fast.cache_path().exists(), "the next run measures again"
    monkeypatch.setattr(fast, "_CHOSEN", {})
    fast.choose("vgg", "cpu", None, 128, [], save_disturbed=True)  # a smoke run's workers share even such a probe
    assert fast.cache_path().exists()


@pytest.mark.long  # about a minute on a slow 2-core CPU (20-36 s on the Intel Xeon): started first, not last
def test_a_candidate_broken_on_a_pytest_xdist_worker_fails_the_whole_run(tmp_path, monkeypatch):
    """The test command probes on its workers: a broken candidate there is named by the controller and fails
    the run, as it does without workers."""
    from test_bad_input import run_pytest
    monkeypatch.setenv(fast.CACHE_ENV, str(tmp_path / "cache"))  # no cached choice skips the probe
    plugin = ("from mnistbench import fast, variants\n"
              "def probe(*args, **kwargs):\n"
              "    failed = {'fp32-contiguous-compile-default': 'failed: RuntimeError: a lowering failed'}\n"
              "    return variants.Variant(), failed, []\n"
              "fast.probe = probe\n")
    for workers in (["-n", "1"], ["-n", "0"]):
        result, lines = run_pytest("benchmarks/test_step.py", "--devices=cpu", "--models=vgg", "-k", "fast and train",
                                   "-q", *workers, tmp_path=tmp_path, plugin=plugin)
        assert result.returncode == 1 and any(line.startswith("1 passed") for line in lines), (workers, lines[-20:])
        assert (f"vgg on cpu, batch {fast.SMOKE_PROBE_BATCH}: fp32-contiguous-compile-default failed: RuntimeError: "
                "a lowering failed") in lines  # a smoke run probes on a small batch


def test_one_slow_step_does_not_drop_a_candidate_two_do(monkeypatch):
    """A shared VM's single step can read 2.5x its next: the drop needs the fastest of two timed steps."""
    monkeypatch.setattr(fast.TrainingSteps, "__init__", lambda self, *args: None)
    for timed_steps, expected in (([0.30, 0.10, 0.10], 0.10), ([0.30, 0.25, 0.10], None)):
        monkeypatch.setattr(fast.TrainingSteps, "steps",
                            lambda self, variant, batch_size, s=timed_steps: iter([0.5, *s]))
        assert fast.TrainingSteps().time(Variant(), 8, warm_up=1, timed=3, give_up_after=0.2) == expected
