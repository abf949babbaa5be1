"""Correctness of the speed variants: what each device may run, that every variant the fast probe may
choose trains as fp32 does, that compilation changes nothing but speed and never silently falls back to
eager, and that failures skip one case with the reason."""
import pytest
import torch
import torch._dynamo

import models
from mnistbench import evaluation, guards, peaks, setups, training, variants
from mnistbench.pipelines import normalized_images
from mnistbench.variants import Variant


def test_cpu_runs_fp32_and_bf16_in_both_formats_eager_and_compiled_with_each_adam():
    cpu = variants.matrix("cpu")
    assert {(v.precision, v.memory_format, v.compile, v.optimizer) for v in cpu} == {
        (p, m, c, o) for p in ("fp32", "bf16") for m in ("contiguous", "channels_last")
        for c in ("eager", "compile", "compile-step") for o in ("default", "foreach", "fused")}


@pytest.mark.parametrize("variant", variants.matrix("cpu") + [Variant("fp16", "channels_last", "cudagraphs", "fused")],
                         ids=str)
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


@pytest.mark.parametrize("variant, reason", [
    (Variant(precision="tf32"), "tf32 needs a CUDA device"),
    (Variant(precision="fp16", compile="cudagraphs"), "cudagraphs, fp16 needs a CUDA device"),
])
def test_cuda_only_variants_are_refused_elsewhere_with_the_reason(variant, reason):
    assert variant.unsupported_on("cpu") == reason


def test_fp32_means_tf32_off():
    try:
        Variant("tf32").configure_backends()
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        Variant("fp32").configure_backends()
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's defaults
        torch.backends.cuda.matmul.allow_tf32 = False


def first_losses(model_name, variant, mnist_train, steps=3, dropout=True, batch=8):
    torch.manual_seed(0)
    model = models.build(model_name).train(dropout)
    step = training.make_train_step(variant.prepare_model(model),
                                    training.make_optimizer(model, models.recipe(model_name), variant), "cpu", variant)
    images, labels = normalized_images(mnist_train.data[:batch]), mnist_train.targets[:batch]
    return torch.stack([step(images, labels) for _ in range(steps)]).float()


# Every eager precision, memory format and Adam the CPU's fast probe may choose, in few small steps, so
# that emulated bf16 stays cheap: the Adam implementations in fp32, the numerics with the default Adam
# (an Adam implementation does the same arithmetic whatever the precision of the gradients it gets).
EAGER_CPU_VARIANTS = [v for v in variants.matrix("cpu", compile_modes=("eager",))
                      if v != Variant() and (v.optimizer == "default" or v.precision == "fp32")]


@pytest.mark.parametrize("variant", EAGER_CPU_VARIANTS, ids=str)
def test_variant_steps_follow_the_fp32_losses(model_name, variant, mnist_train):
    tolerance = 2e-2 if variant.precision == "bf16" else 1e-4
    torch.testing.assert_close(first_losses(model_name, variant, mnist_train),
                               first_losses(model_name, Variant(), mnist_train), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("compile_mode", ["compile", "compile-step"])
def test_compiled_step_matches_eager(compile_mode, mnist_train):
    # Without dropout: compiled code draws its dropout masks from another random stream.
    torch.testing.assert_close(first_losses("vgg", Variant(compile=compile_mode), mnist_train, dropout=False),
                               first_losses("vgg", Variant(), mnist_train, dropout=False), rtol=1e-4, atol=1e-4)


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


def test_a_graph_cuda_graphs_cannot_capture_is_an_error_not_a_silent_fall_back():
    # Inductor's own switch: without it a cudagraphs case that captured nothing would time plain compiled code.
    assert torch._inductor.config.triton.cudagraph_or_error


def test_fast_variant_reaches_fp32_accuracy_at_small_scale(mnist_train, mnist_test):
    """One short epoch (6,400 images) of VGG's recipe in fp32 and in the fast variant this CPU measured,
    same order and initialisation; test accuracy on all 10,000 test digits. (GoogLeNet is still near chance
    at this scale, so it cannot tell the variants apart.) The fast variant is fast here by construction,
    so this costs seconds even where bf16 is emulated. The full-scale check, a whole epoch of each model,
    is a measurement in the README."""
    fast = setups.resolve("fast", "cpu", "vgg", models.recipe("vgg"), mnist_train, setups.SMOKE).variant
    if fast == Variant():
        pytest.skip(f"the probe chose {fast}, the fp32 baseline itself, on this CPU: no other variant to check")
    accuracies = {}
    for variant in (Variant(), fast):
        run = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, variant=variant, samples=6400)
        run.epoch()
        accuracies[str(variant)], _ = evaluation.evaluate(run.model, mnist_test, "cpu", variant=variant)
    fp32, fast_accuracy = accuracies.values()
    assert fp32 > 0.5, accuracies  # it learnt something, so the comparison means something
    assert abs(fast_accuracy - fp32) <= 0.01, accuracies


def test_out_of_memory_skips_the_case_with_the_reason():
    with pytest.raises(pytest.skip.Exception, match="vgg step, batch 4096: out of memory: CUDA out of memory"):
        with guards.skip_unrunnable("vgg step, batch 4096"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_compile_failure_skips_the_case_and_other_errors_propagate():
    with pytest.raises(pytest.skip.Exception, match="case: torch.compile failed: Unsupported: no"):
        with guards.skip_unrunnable("case"):
            raise torch._dynamo.exc.Unsupported("no")
    with pytest.raises(ValueError):
        with guards.skip_unrunnable("case"):
            raise ValueError("a real bug is not skipped")


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


def test_the_cpu_peak_is_measured_once_per_run():
    fp32 = peaks.measured_tflops("cpu", "fp32", torch.get_num_threads())
    assert 0 < fp32 < 100  # a matrix product ran and was timed; no 2-to-64-core CPU reaches 100 TFLOP/s in fp32
    assert peaks.measured_tflops("cpu", "fp32", torch.get_num_threads()) == fp32, "measured once per run"
