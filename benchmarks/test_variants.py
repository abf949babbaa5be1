"""Correctness of the speed variants: what each device may run, that every variant the fast probe may
choose trains as fp32 does on every device of the run (``--devices``), that compilation changes nothing but
speed and never silently falls back to eager, that a batch too large for the device skips its case with the
reason while a broken mode fails it, and how the peaks that utilisation divides by are measured."""
import dataclasses
import math
import os

import pytest
import torch
import torch._dynamo

import models
from mnistbench import backends, convolution, evaluation, guards, peaks, setups, training, variants
from mnistbench.pipelines import normalized_images
from mnistbench.variants import Variant


def test_cpu_runs_fp32_and_bf16_in_both_formats_eager_and_compiled_with_each_adam():
    cpu = variants.matrix("cpu")
    assert {(v.precision, v.memory_format, v.compile, v.optimizer) for v in cpu} == {
        (p, m, c, o) for p in ("fp32", "bf16") for m in ("contiguous", "channels_last")
        for c in ("eager", "compile", "compile-step") for o in ("default", "foreach", "fused")}


@pytest.mark.parametrize("variant", variants.matrix("cpu") + [Variant("fp16", "channels_last", "cudagraphs", "fused"),
                                                              Variant("bf16", "channels_last", "compile-step", "fused",
                                                                      "matmul"),
                                                              Variant("bf16", "channels_last", "cudagraphs-step",
                                                                      "fused", "matmul")], ids=str)
def test_a_variant_reads_back_from_its_name(variant):
    assert Variant.parse(str(variant)) == variant


def test_an_unknown_variant_name_says_what_to_write():
    with pytest.raises(ValueError, match="unknown variant 'fp64-contiguous-eager-default': write PRECISION-"):
        Variant.parse("fp64-contiguous-eager-default")


def test_a_compiled_optimizer_step_never_silently_runs_an_eager_one():
    # GradScaler.step calls the optimizer's own (eager) step, so fp16 with compile-step is refused.
    assert Variant("fp16", compile="compile-step").unsupported_on("cuda:0") == (
        "compile-step cannot compile GradScaler's unscale-and-step, which fp16 needs")


def test_a_compiled_optimizer_step_is_refused_with_a_learning_rate_schedule():
    assert Variant(compile="compile-step").unsupported_with("onecycle") == (
        "compile-step needs a constant learning rate, not the onecycle schedule")
    assert Variant(compile="compile").unsupported_with("onecycle") is None


def test_a_captured_step_is_refused_where_a_replay_would_repeat_what_the_host_decides_each_step():
    """A CUDA graph replays its capture: fp16's GradScaler decides on the host whether to step, the fused Adam
    kernel takes a one-cycle schedule's beta1 as a number, and a CPU has no CUDA graphs."""
    step = Variant(compile="cudagraphs-step")
    assert Variant("fp16", compile="cudagraphs-step").unsupported_on("cuda:0") == (
        "cudagraphs-step cannot capture GradScaler's step, which reads the gradients' overflow on the host")
    assert step.unsupported_with("onecycle") is None
    for optimizer in ("foreach", "fused"):
        assert Variant(compile="cudagraphs-step", optimizer=optimizer).unsupported_with("onecycle") == (
            f"the onecycle schedule changes Adam's beta1 every step, which a captured step must read from the "
            f"device: the {optimizer} Adam reads it back to the host, which a capture forbids; the default Adam "
            f"runs its single-tensor form, which does not")
        assert Variant(compile="cudagraphs-step", optimizer=optimizer).unsupported_with("constant") is None
    assert step.unsupported_on("cpu") == "cudagraphs-step needs a CUDA device"
    assert step.optimizer_options() == {"capturable": True} and not step.compiles
    assert Variant(compile="cudagraphs").compiles and "capturable" not in Variant(optimizer="fused").optimizer_options()
    with pytest.raises(ValueError, match="cannot train vgg with its recipe: the onecycle schedule changes Adam's beta1 "
                                         "every step, which a captured step must read from the device: the fused"):
        training.TrainingRun.create("vgg", "cpu", "resident", None, variant=dataclasses.replace(step, optimizer="fused"),
                                    recipe=models.recipe("vgg", "fast"))


def test_each_emulated_cpu_capability_compiles_into_its_own_inductor_cache(monkeypatch, tmp_path):
    """With ``ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 host, code cached for AVX-512 was rebuilt for AVX2 and
    indexed out of bounds; a directory chosen by the user is left alone."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    shared = os.path.abspath(default_cache_dir())
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    for before in (None, shared):  # unset, or set by Inductor to its default on first use
        if before is None:
            monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
        else:
            monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", before)
        Variant(compile="compile").prepare_model(torch.nn.Linear(4, 2))
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == os.path.join(shared, "aten-cpu-capability-avx2")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    Variant(compile="compile-step").prepare_optimizer_step(torch.optim.Adam(torch.nn.Linear(4, 2).parameters()))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", shared)
    Variant(compile="compile").prepare_model(torch.nn.Linear(4, 2))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == shared


@pytest.mark.parametrize("variant, reason", [
    (Variant(precision="tf32"), "tf32 needs a CUDA device"),
    (Variant(precision="fp16", compile="cudagraphs"), "cudagraphs, fp16 needs a CUDA device"),
])
def test_cuda_only_variants_are_refused_elsewhere_with_the_reason(variant, reason):
    assert variant.unsupported_on("cpu") == reason


def tf32_switches() -> tuple:
    """Whether cuDNN's convolutions and cuBLAS's matrix products may use TF32, read back through this torch's API."""
    state = backends.describe("cuda:0")
    if backends.NEW_API:
        return state["conv_fp32_precision"], state["matmul_fp32_precision"]
    return state["conv_allow_tf32"], state["matmul_allow_tf32"]


def test_fp32_means_tf32_off_and_reference_keeps_pytorchs_defaults():
    """Through the API this torch has (``fp32_precision`` from torch 2.9, whose use makes the legacy flags
    raise when read), on torch 2.11 and 2.14 alike; conftest puts the switches back after the test."""
    on, off = ("tf32", "tf32"), ("ieee", "ieee")
    defaults = ("tf32", "none")
    if not backends.NEW_API:
        on, off, defaults = (True, True), (False, False), (True, False)
    Variant("tf32").configure_backends("cuda:0")
    assert tf32_switches() == on and torch.backends.cudnn.benchmark
    Variant("fp32").configure_backends("cuda:0")
    assert tf32_switches() == off
    backends.use_pytorch_defaults()
    assert tf32_switches() == defaults and not torch.backends.cudnn.benchmark


def test_switches_a_case_changes_are_put_back_after_it():
    """As conftest brackets every test: one case's autotuning or TF32 never leaks into the next."""
    saved = backends.snapshot()
    with backends.preserved():
        backends.set_tf32(True)
        torch.backends.cudnn.benchmark = not saved["cudnn_benchmark"]
        assert backends.snapshot() != saved
    assert backends.snapshot() == saved


# GradScaler starts at a scale of 2**16 and halves it at each overflow: past this many skipped updates its
# scale is below 1/16, where only gradients that are not finite at all (a NaN loss) still overflow.
MAX_SKIPPED_UPDATES = 20


def first_losses(model_name, variant, mnist_train, device="cpu", steps=3, dropout=True, batch=8):
    """The losses of the first ``steps`` weight updates of ``variant`` on one batch. fp16's GradScaler skips
    the update of a step whose gradients overflowed (its scale then drops); those steps are left out, as the
    weights they leave unchanged give the next step the same loss, up to ``MAX_SKIPPED_UPDATES``."""
    torch.manual_seed(0)
    variant.configure_backends(device)
    model = models.build(model_name).to(device).train(dropout)
    step = training.make_train_step(variant.prepare_model(model),
                                    training.make_optimizer(model, models.recipe(model_name), variant), device, variant)
    images, labels = normalized_images(mnist_train.data[:batch]).to(device), mnist_train.targets[:batch].to(device)
    losses, skipped = [], 0
    while len(losses) < steps:
        scale = step.scaler.get_scale() if step.scaler else None
        loss = step(images, labels)
        if step.scaler is None or step.scaler.get_scale() >= scale:
            losses.append(loss)
        else:
            skipped += 1
            if skipped > MAX_SKIPPED_UPDATES:
                pytest.fail(f"{variant} on {device}: GradScaler skipped {skipped} updates with {len(losses)} of "
                            f"{steps} made (last loss {float(loss)}): its gradients overflow every step")
    return torch.stack(losses).float().cpu()


# How far a variant's losses may stray from fp32's over a few steps: bf16 keeps 8 bits of mantissa, fp16 and
# TF32 11; fp32 itself moves with the order of its sums (other kernels, other libraries).
TOLERANCES = {"bf16": 2e-2, "fp16": 1e-2, "tf32": 1e-2, "fp32": 1e-4}
GPU_FP32_TOLERANCE = 1e-3


def tolerance(variant: Variant, device: str) -> float:
    if variant.precision == "fp32" and device != "cpu":
        return GPU_FP32_TOLERANCE
    return TOLERANCES[variant.precision]


def eager_variants(device: str) -> list[Variant]:
    """Every eager precision, memory format and Adam the fast probe may choose on ``device``, in few small steps,
    so that emulated bf16 stays cheap: the Adam implementations in fp32, the numerics with the default Adam
    (an Adam implementation does the same arithmetic whatever the precision of the gradients it gets)."""
    return [v for v in variants.matrix(device, compile_modes=("eager",))
            if v != Variant() and (v.optimizer == "default" or v.precision == "fp32")]


def compiled_variants(device: str) -> list:
    """Each compile mode on ``device``, skipped with the reason where the device cannot compile it."""
    cases = []
    for mode in variants.COMPILE_MODES[1:]:
        variant = Variant(compile=mode)
        if mode in variants.CUDA_ONLY and torch.device(device).type != "cuda":
            continue  # a CUDA mode is no case on another device
        reason = variant.unsupported_on(device)
        cases.append(pytest.param((device, variant), id=f"{device}-{mode}",
                                  marks=[pytest.mark.skip(reason=reason)] if reason else []))
    return cases


def pytest_generate_tests(metafunc):
    """Each variant on each device of the run (``--devices``): on a GPU tf32, fp16 with GradScaler, cudagraphs,
    compile, compile-step and fused Adam are each compared with fp32 there."""
    chosen = metafunc.config.mnistbench_devices
    if "eager_case" in metafunc.fixturenames:
        cases = [(device, variant) for device in chosen for variant in eager_variants(device)]
        metafunc.parametrize("eager_case", cases, ids=[f"{device}-{variant}" for device, variant in cases])
    if "compiled_case" in metafunc.fixturenames:
        metafunc.parametrize("compiled_case", [case for device in chosen for case in compiled_variants(device)])


def test_variant_steps_follow_the_fp32_losses(model_name, eager_case, mnist_train):
    device, variant = eager_case
    allowed = tolerance(variant, device)
    torch.testing.assert_close(first_losses(model_name, variant, mnist_train, device),
                               first_losses(model_name, Variant(), mnist_train, device), rtol=allowed, atol=allowed)


def test_convolutions_as_matrix_products_follow_the_fp32_losses(device, mnist_train, monkeypatch):
    """GoogLeNet, whose late convolutions see 2x2 and 1x1 maps, with those as matrix products; with fused Adam
    too, whose CPU kernel updates a parameter wrongly when its gradient or state is laid out otherwise (torch
    2.11 and 2.14), over the weights the products store taps-last."""
    from test_convolution import native_convolutions_counted

    expected = first_losses("googlenet", Variant(), mnist_train, device)
    for variant in (Variant(convolution="matmul"), Variant("fp32", "channels_last", optimizer="fused", convolution="matmul"),
                    Variant("bf16", "channels_last", convolution="matmul")):
        if variant.unsupported_on(device) is None:
            allowed = tolerance(variant, device)
            with native_convolutions_counted(monkeypatch) as maps:
                found = first_losses("googlenet", variant, mnist_train, device)
            assert min(maps) > convolution.MAX_PIXELS, "a small map reached the native convolution"
            torch.testing.assert_close(found, expected, rtol=allowed, atol=allowed)


def test_compiled_step_matches_eager(compiled_case, mnist_train):
    # Without dropout: compiled code draws its dropout masks from another random stream.
    device, variant = compiled_case
    allowed = tolerance(Variant(), device)
    torch.testing.assert_close(first_losses("vgg", variant, mnist_train, device, dropout=False),
                               first_losses("vgg", Variant(), mnist_train, device, dropout=False),
                               rtol=allowed, atol=allowed)


@torch._dynamo.config.patch(recompile_limit=1)
def test_compiled_cases_each_compile_and_never_fall_back_to_eager():
    """Each case compiles a fresh model on a fresh cache, so earlier cases never use up the recompile
    limit; a case that does hit it fails instead of timing eager code."""
    for _ in range(3):  # more cases than the limit: each compiles anew
        model = Variant(compile="compile").prepare_model(torch.nn.Linear(4, 2))
        model(torch.zeros(2, 4))
    with pytest.raises(torch._dynamo.exc.FailOnRecompileLimitHit):
        model(torch.zeros(3, 4))  # a second shape on a limit of one graph
    with pytest.raises(torch._dynamo.exc.FailOnRecompileLimitHit):
        with guards.skip_unrunnable("case"):  # a defect, never turned into a skip
            model(torch.zeros(5, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_a_graph_cuda_graphs_cannot_capture_is_an_error_not_a_silent_fall_back():
    """A graph that mutates its input cannot be replayed as a CUDA graph (a replay would not write the caller's
    tensor): Inductor would run it as plain compiled code and a ``cudagraphs`` case would time that; here it is
    an error. (A CPU input no longer serves: since torch 2.9 Inductor partitions the graph around CPU work and
    replays the CUDA part, as the first GPU run found on torch 2.11.)"""
    class AddsOneInPlace(torch.nn.Module):
        def forward(self, images):
            images.add_(1)
            return images * 2

    model = Variant(compile="cudagraphs").prepare_model(AddsOneInPlace())
    with pytest.raises(Exception, match="(?i)mutated input"):
        for _ in range(3):  # recording happens on a later call than compilation
            model(torch.ones(4, device="cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_step_captured_whole_trains_as_the_eager_step_and_restarts_afresh(mnist_train, precision):
    """``cudagraphs-step`` against eager from the same start on the same batches: the eager warm-up calls,
    the capture and the replays give eager's losses and weights (fp32 to rounding; bf16 to its own), a partial
    last batch runs eagerly, and after a restart the replays train as from scratch. On an H200 with torch
    2.11, a script doing the same for eight fp32 steps gave the same losses to four decimals."""
    images = normalized_images(mnist_train.data[:8 * 32 + 16], 0.1307, 0.3081).cuda()
    labels = mnist_train.targets[:8 * 32 + 16].cuda()
    batches = [(images[i:i + 32], labels[i:i + 32]) for i in range(0, 8 * 32 + 16, 32)]  # the last one of 16
    trained = {}
    for compile_mode in ("eager", "cudagraphs-step"):
        variant = Variant(precision, compile=compile_mode, optimizer="fused")
        run = training.TrainingRun.create("vgg", "cuda:0", "resident", mnist_train, variant=variant, samples=256)
        step = run.step
        first = torch.stack([step(x, y) for x, y in batches]).float().cpu()
        assert (compile_mode == "eager") == (getattr(step, "graph", None) is None), "the step must be replayed"
        run.restart()
        again = torch.stack([step(x, y) for x, y in batches]).float().cpu()
        trained[compile_mode] = first, again, run.model.classifier[-1].weight.detach().clone()
    (eager, eager_again, eager_weight), (captured, captured_again, captured_weight) = trained.values()
    tolerance = {"fp32": 1e-4, "bf16": 2e-2}[precision]
    assert torch.allclose(captured, eager, atol=tolerance), (captured, eager)
    assert torch.allclose(captured_again, captured, atol=tolerance), "a restart must train as from scratch"
    assert torch.allclose(captured_weight, eager_weight, atol=tolerance)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_a_step_captured_whole_follows_the_one_cycle_schedule_it_reads_from_the_device(mnist_train):
    """The fast recipe's one-cycle schedule sets Adam's rate and beta1 every step; a captured step reads them
    from tensors on the device (``training.OneCycleOnDevice``), so over the whole schedule, and again after a
    restart, it trains as the eager step does. Were they numbers, every replay would use those of its capture."""
    recipe = models.recipe("vgg", "fast")
    trained = {}
    for compile_mode in ("eager", "cudagraphs-step"):
        run = training.TrainingRun.create("vgg", "cuda:0", "resident", mnist_train, recipe=recipe,
                                          variant=Variant(compile=compile_mode), samples=8 * recipe.batch_size)
        run.warm_up()  # the capture, on the rate and betas the schedule starts from
        run.restart()
        first = torch.cat([run.epoch() for _ in range(recipe.epochs)])
        run.restart()
        trained[compile_mode] = first, torch.cat([run.epoch() for _ in range(recipe.epochs)])
    (eager, _), (captured, captured_again) = trained.values()
    assert isinstance(run.schedule, training.OneCycleOnDevice) and run.step.graph is not None
    assert torch.allclose(captured, eager, atol=1e-4), (captured, eager)
    assert torch.allclose(captured_again, captured, atol=1e-4), "a restart must train as from scratch"


@pytest.mark.long  # about a minute on a slow 2-core CPU (20-36 s on the Intel Xeon): started first, not last
def test_fast_variant_reaches_fp32_accuracy_at_small_scale(device, mnist_train, mnist_test):
    """One short epoch (6,400 images) of VGG's recipe in fp32 and in the fast variant the device measured,
    same order and initialisation; test accuracy on all 10,000 test digits. (GoogLeNet is still near chance
    at this scale, so it cannot tell the variants apart.) The fast variant is fast here by construction,
    so this costs seconds even where bf16 is emulated. The full-scale check, a whole epoch of each model,
    is a measurement in docs/measured.md."""
    policy = dataclasses.replace(setups.SMOKE, probe_batch=None)  # the variant that wins at the recipe's batch
    fast = setups.resolve("fast", device, "vgg", models.recipe("vgg"), mnist_train, policy).variant
    if fast == Variant():
        pytest.skip(f"the probe chose {fast}, the fp32 baseline itself, on {device}: no other variant to check")
    accuracies = {}
    for variant in (Variant(), fast):
        run = training.TrainingRun.create("vgg", device, "resident", mnist_train, variant=variant, samples=6400)
        run.epoch()
        # in batches of 256: VGG's fp32 evaluation on one core of the Intel Xeon took 1.7-2.0x as long in
        # evaluate's default batches of 1,000 (its 28x28 maps of 32 channels are 100 MB a batch)
        accuracies[str(variant)], _ = evaluation.evaluate(run.model, mnist_test, device, variant=variant,
                                                          batch_size=256)
    fp32, fast_accuracy = accuracies.values()
    assert fp32 > 0.5, accuracies  # it learnt something, so the comparison means something
    assert abs(fast_accuracy - fp32) <= 0.01, accuracies


def test_out_of_memory_skips_the_case_with_the_reason():
    with pytest.raises(pytest.skip.Exception, match="vgg step, batch 4096: out of memory: CUDA out of memory"):
        with guards.skip_unrunnable("vgg step, batch 4096"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_a_compile_failure_fails_the_case_as_every_other_error_does():
    """What a device cannot compile for never becomes a case (``unsupported_on``); a mode it supports that
    fails is broken, and a skip would hide it."""
    for error in (torch._dynamo.exc.Unsupported("no"), ValueError("a real bug")):
        with pytest.raises(type(error)):
            with guards.skip_unrunnable("case"):
                raise error


@pytest.mark.parametrize("device_name, precision, peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
    ("NVIDIA H100 PCIe", "tf32", 378.0),
    ("NVIDIA H100 NVL", "bf16", 835.0),
    ("NVIDIA H200", "fp32", 67.0),
    ("NVIDIA H200 NVL", "bf16", 835.5),
    ("NVIDIA A100-SXM4-80GB", "fp16", 312.0),
    ("NVIDIA A100 80GB PCIe", "tf32", 156.0),
    ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA L40S", "bf16", None),
    ("NVIDIA L40", "fp32", None),
    ("NVIDIA GH200 480GB", "bf16", None),
    ("AMD EPYC 7542 32-Core Processor", "bf16", None),
    ("NVIDIA GeForce RTX 4090", "bf16", None),
])
def test_datasheet_peaks_are_known_only_for_listed_devices(device_name, precision, peak):
    assert peaks.datasheet_tflops(device_name, precision) == peak


def test_a_peak_is_measured_once_per_device_precision_and_thread_count(monkeypatch):
    measured = []
    monkeypatch.setattr(peaks, "_MEASURED", {})
    monkeypatch.setattr(peaks, "_probe", lambda device, precision: measured.append((device, precision)) or
                        peaks.Peak(1.5, 64, 1, "mm"))
    assert [peaks.measured_tflops("cpu", "fp32", 2) for _ in range(3)] == [1.5] * 3
    peaks.measured_tflops("cpu", "fp32", 1)
    peaks.measured_tflops("cpu", "bf16", 2)
    assert measured == [("cpu", "fp32"), ("cpu", "fp32"), ("cpu", "bf16")]  # a CPU's peak depends on its threads
    assert peaks.measured()["cpu"]["fp32"] == 1.5


def test_short_products_are_timed_in_batches_between_two_synchronisations(monkeypatch):
    """On a machine doing exactly 1 PFLOP/s, where one product of the largest size takes 17 us (a GPU's
    case: launching and synchronising would count), the probe reads 1000 TFLOP/s: it times enough products
    together to last about ``PROBE_SECONDS``."""
    clock = [0.0]
    timings = []
    monkeypatch.setattr(peaks.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(peaks.devices, "synchronize", lambda device: timings.append(clock[0]))

    def kernel(a, b):
        clock[0] += 2 * a.shape[0] ** 3 / 1e15

    tflops, size, products = peaks._tflops(kernel, "cpu", "fp32")
    assert tflops == pytest.approx(1000.0) and size == peaks.PROBE_SIZES["cpu"]
    assert products == math.ceil(peaks.PROBE_SECONDS / (2 * size**3 / 1e15))
    spans = [end - start for start, end in zip(timings[-2 * peaks.PROBE_REPEATS::2], timings[-2 * peaks.PROBE_REPEATS + 1::2])]
    assert len(spans) == peaks.PROBE_REPEATS and min(spans) >= peaks.PROBE_SECONDS


def test_a_steps_share_of_the_peak_is_also_taken_in_turns_with_the_product_that_gave_the_peak(monkeypatch):
    """A VM whose speed moves from turn to turn (from a quarter to twice its speed at the peak's measurement):
    each turn's step and product see the same speed, so every turn reads the step's true share (0.5), but for
    one turn whose step was interrupted, which the median leaves out; the product's TFLOP/s are those of the
    turns. The device running out of memory for the product's operands leaves the timed rounds as they were,
    with the reason; no peak measured for the precision, no figure."""
    clock, speed, calls = [0.0], [1.0], []
    speeds = iter([1.0, 0.25, 0.5, 2.0, 0.3, 1.0, 0.4, 0.8, 0.6, 0.35])
    interrupted = 3  # the turn whose step takes three times as long

    def step():  # 0.4 TFLOP at 0.5 TFLOP/s at full speed: half the peak
        speed[0] = next(speeds)
        clock[0] += 0.8 / speed[0] * (3 if len(calls) == 1 + interrupted * 3 else 1)

    def product(a, b):  # 1 TFLOP/s at full speed: the peak
        calls.append(speed[0])
        clock[0] += 2 * a.shape[0] ** 3 / 1e12 / speed[0]

    monkeypatch.setattr(peaks.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(peaks.devices, "synchronize", lambda device: None)
    monkeypatch.setitem(peaks._KERNELS, "fake", product)
    monkeypatch.setattr(peaks, "_MEASURED", {("cpu", "fp32", 2): peaks.Peak(1.0, 64, 3, "fake")})  # 3 products a timing
    found = peaks.in_turns(step, 0.4e12, "cpu", "fp32", 2, turns=10)
    assert found["utilisation_in_turns"] == pytest.approx(0.5)
    assert found["utilisation_in_turns_range"] == pytest.approx([0.5 / 3, 0.5])
    assert found["peak_in_turns_tflops"] == pytest.approx(0.55), "the median of the turns' speeds, in TFLOP/s"
    assert len(calls) == 1 + 3 * 10, "a warm-up, then each turn's three products"
    assert found["peak_in_turns_method"] == ("10 turns of one step and 3 fake product(s) of two 64x64 matrices "
                                             "between two synchronisations")
    assert peaks.in_turns(step, 0.4e12, "cpu", "bf16", 2, turns=10) == {}

    def full(a, b):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 256.00 MiB")

    monkeypatch.setitem(peaks._KERNELS, "fake", full)
    assert peaks.in_turns(step, 0.4e12, "cpu", "fp32", 2, turns=10) == {
        "utilisation_in_turns_failed": "OutOfMemoryError: CUDA out of memory. Tried to allocate 256.00 MiB"}
