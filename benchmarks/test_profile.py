"""``mnistbench profile``: where a training step's time goes, by kind of work and by operator."""
import pytest

from mnistbench import profile
from mnistbench.variants import Variant

from stored import report


@pytest.mark.parametrize("name, under_optimizer, kind", [
    ("aten::convolution_backward", False, "convolution, backward"),
    ("aten::mkldnn_convolution", False, "convolution, forward"),
    ("aten::max_pool2d_with_indices_backward", False, "pooling"),
    ("aten::cat", False, "concatenation"),
    ("aten::_to_copy", False, "casts and copies"),
    ("aten::addmm", False, "matrix products (linear layers, matmul convolutions)"),
    ("aten::im2col", False, "patches (matmul convolutions)"),
    ("aten::threshold_backward", False, "element-wise"),
    ("aten::clamp_min_", False, "element-wise"),  # an in-place ReLU
    ("Optimizer.zero_grad#Adam.zero_grad", False, profile.OPTIMIZER),
    ("aten::native_dropout", False, "dropout"),
    ("aten::empty_strided", False, "allocation and filling"),
    ("aten::sqrt", True, profile.OPTIMIZER),  # the default Adam's loop over the parameters
    ("aten::t", False, "other"),
])
def test_each_operator_counts_as_one_kind_of_work(name, under_optimizer, kind):
    assert profile.kind_of(name, under_optimizer) == kind


def test_a_profile_accounts_for_the_step_by_kind_and_operator(mnist_train):
    """Two steps of VGGNet on a batch of 8: the convolutions are there, forward and backward, Adam's update
    too; each operator's self time is counted once, so that together they fit in the profiled steps' wall
    time; and the table says what ran."""
    found = profile.measure("vgg", "cpu", mnist_train, 8, Variant(), steps=2)
    assert {"convolution, forward", "convolution, backward", profile.OPTIMIZER} <= found.kinds.keys()
    assert 0 < sum(found.kinds.values()) <= found.profiled_ms
    calls = {name: calls for name, _, calls in found.operators}
    assert calls["aten::convolution_backward"] == calls["aten::mkldnn_convolution"] == 4  # VGGNet's 4 convolutions
    table = found.table(top=3)
    assert table.startswith("vgg training step, batch 8, fp32-contiguous-eager-default on cpu: ")
    assert "| convolution, backward |" in table and len(table.split("| operator |")[1].splitlines()) == 2 + 3


@pytest.mark.parametrize("options, message", [
    (["--variant", "fp16-contiguous-eager-default", "--dataset", "mnist", "--mnist-root", "/no/such/root"],
     "fp16-contiguous-eager-default cannot run on cpu: "),  # before the data are looked for
    (["--batch-size", "100000"], "a batch of 100000 is more than the 60000 training images"),
    (["--variant", "fp32-contiguous-eager-default-matmul"],
     "vgg has no convolution on maps of at most 4 pixels: fp32-contiguous-eager-default-matmul would run "
     "fp32-contiguous-eager-default's kernels"),
])
def test_the_profile_command_refuses_what_it_cannot_profile_in_one_line(options, message, capsys):
    status, _, err = report(capsys, "profile", "--model", "vgg", "--dataset", "synthetic", *options)
    assert status == 2 and err.startswith(f"mnistbench: error: {message}") and err.count("\n") == 1, err


def test_by_shape_each_layer_is_listed_apart(mnist_train):
    """VGGNet's 4 convolutions have 4 shapes: by shape, each one's backward is listed apart, once a step, with
    its input and weight shapes; the time by kind is the same accounting."""
    found = profile.measure("vgg", "cpu", mnist_train, 8, Variant(), steps=1, by_shape=True)
    backward = [(name, calls) for name, _, calls in found.operators if name.startswith("aten::convolution_backward ")]
    assert len(backward) == 4 and all(calls == 1 for _, calls in backward), backward
    assert any("[8,1,28,28]" in name for name, _ in backward), "the first convolution, on the 28x28 digits"
    assert 0 < sum(found.kinds.values()) <= found.profiled_ms
