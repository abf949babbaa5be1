"""Correctness of the speed variants: what each device may run, that fast variants train as well as
fp32, that compilation changes nothing but speed, and that failures skip one case with the reason."""
import pytest
import torch

import models
from mnistbench import evaluation, guards, peaks, training, variants
from mnistbench.pipelines import normalized_images
from mnistbench.variants import Variant


def test_cpu_runs_fp32_and_bf16_in_both_formats_eager_and_compiled():
    cpu = variants.matrix("cpu")
    assert {(v.precision, v.memory_format, v.compile) for v in cpu} == {
        (p, m, c) for p in ("fp32", "bf16") for m in ("contiguous", "channels_last") for c in ("eager", "compile")}


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


def first_losses(model_name, variant, mnist_train, steps=3, dropout=True):
    torch.manual_seed(0)
    model = models.build(model_name).train(dropout)
    step = training.make_train_step(variant.prepare_model(model),
                                    training.make_optimizer(model, models.recipe(model_name)), "cpu", variant)
    images, labels = normalized_images(mnist_train.data[:32]), mnist_train.targets[:32]
    return torch.stack([step(images, labels) for _ in range(steps)]).float()


@pytest.mark.parametrize("variant, tolerance", [
    (Variant(memory_format="channels_last"), 1e-4),
    (Variant(precision="bf16"), 2e-2),
    (variants.FAST["cpu"], 2e-2),
])
def test_variant_steps_follow_the_fp32_losses(model_name, variant, tolerance, mnist_train):
    torch.testing.assert_close(first_losses(model_name, variant, mnist_train),
                               first_losses(model_name, Variant(), mnist_train), rtol=tolerance, atol=tolerance)


def test_compiled_step_matches_eager(mnist_train):
    # Without dropout: compiled code draws its dropout masks from another random stream.
    torch.testing.assert_close(first_losses("vgg", Variant(compile="compile"), mnist_train, dropout=False),
                               first_losses("vgg", Variant(), mnist_train, dropout=False), rtol=1e-4, atol=1e-4)


def test_fast_variant_reaches_fp32_accuracy_at_small_scale(mnist_train, mnist_test):
    """One short epoch (6,400 images) of VGG's recipe in fp32 and in the CPU's fast variant, same order and
    initialisation; test accuracy on all 10,000 test digits. (GoogLeNet is still near chance after 6,400
    images, so it cannot tell the variants apart at this scale.) The full-scale check, a whole epoch of
    each model, is a measurement in the README."""
    accuracies = {}
    for variant in (Variant(), variants.fast("cpu")):
        run = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, variant=variant, samples=6400)
        run.epoch()
        accuracies[str(variant)], _ = evaluation.evaluate(run.model, mnist_test, "cpu", variant=variant)
    fp32, fast = accuracies.values()
    assert fp32 > 0.5, accuracies  # it learnt something, so the comparison means something
    assert abs(fast - fp32) <= 0.01, accuracies


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
    ("NVIDIA H200", "fp32", 67.0),
    ("NVIDIA A100-SXM4-80GB", "fp16", 312.0),
    ("AMD EPYC 7542 32-Core Processor", "bf16", None),
    ("NVIDIA GeForce RTX 4090", "bf16", None),
])
def test_peaks_are_known_only_for_listed_devices(device_name, precision, peak):
    assert peaks.peak_tflops(device_name, precision) == peak
