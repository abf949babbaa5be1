"""Correctness of the harness around the loop: divergence, devices, FLOP counts."""
import pytest
import torch
import torch.nn.functional as F

import models
from mnistbench import devices, flops, training
from mnistbench.pipelines import normalized_images


def test_nan_loss_fails_naming_model_and_step(mnist_train):
    run = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, samples=512)
    run.epoch()  # four healthy steps
    with torch.no_grad():
        run.model.classifier[-1].bias.fill_(float("nan"))
    with pytest.raises(training.NonFiniteLossError, match=r"vgg: loss became nan at step 4"):
        run.epoch()


def test_check_finite_points_at_the_first_bad_step():
    training.check_finite(torch.tensor([2.3, 1.1]), "vgg")
    with pytest.raises(training.NonFiniteLossError, match="googlenet: loss became inf at step 12"):
        training.check_finite(torch.tensor([2.3, float("inf"), float("nan")]), "googlenet", first_step=11)


def test_devices_all_lists_the_cpu_and_every_gpu():
    assert devices.parse("all")[0] == "cpu"
    assert devices.parse("all").count("cpu") == 1
    assert len(devices.parse("all")) == 1 + torch.cuda.device_count() + torch.backends.mps.is_available()
    assert devices.parse(" cpu , cpu ") == ["cpu"]


@pytest.mark.parametrize("spec, message", [
    ("tpu", "unknown device 'tpu'"),
    ("cpu,gpu", "unknown device 'gpu'"),
    (f"cuda:{torch.cuda.device_count()}", "was requested but this machine has only: cpu"),
    (",", "--devices is empty"),
])
def test_devices_refuses_unknown_or_absent_devices(spec, message):
    with pytest.raises(ValueError, match=message):
        devices.parse(spec)


def test_vgg_flops_per_image_come_from_the_flop_counter():
    # Independent check by hand from the architecture: 2 FLOPs per multiply-add.
    convolutions = 2 * (28 * 28 * 32 * 1 * 9 + 28 * 28 * 32 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 14 * 14 * 64 * 64 * 9)
    linears = 2 * (64 * 7 * 7 * 128 + 128 * 10)
    forward = convolutions + linears
    assert flops.per_image("vgg", train=False) == forward
    # Backward costs twice the forward, less the input gradient of the first convolution (the images need none).
    assert flops.per_image("vgg", train=True) == 3 * forward - 2 * 28 * 28 * 32 * 1 * 9


def test_googlenet_training_costs_about_three_forward_passes():
    forward, train = flops.per_image("googlenet", False), flops.per_image("googlenet", True)
    assert forward > 10**7
    assert 2.5 * forward < train < 3 * forward


def test_a_fractional_epoch_trains_its_share_of_a_fresh_order_unless_the_run_names_its_images(mnist_train):
    """VGGNet's fast recipe trains 0.7 of an epoch: 42,000 of the 60,000 digits (whole batches of 64: 41,984),
    each epoch the first of a new random order, not a fixed subset; ``samples`` overrides it."""
    recipe = models.recipe("vgg", "fast")
    assert (recipe.epoch_fraction, recipe.epoch_samples(60_000)) == (0.7, 42_000)
    run = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, recipe=recipe)
    assert (run.pipeline.samples, len(run.pipeline)) == (41_984, 656)
    assert sum(len(labels) for _, labels in run.pipeline) == 41_984
    orders = [torch.cat([labels for _, labels in run.pipeline]) for _ in range(2)]
    assert not torch.equal(*orders), "each epoch draws a new order"
    assert training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, recipe=recipe,
                                       samples=640).pipeline.samples == 640
    assert training.TrainingRun.create("vgg", "cpu", "resident", mnist_train).pipeline.samples == 60_000


def test_a_recipe_with_label_smoothing_trains_on_smoothed_targets(mnist_train):
    """VGGNet's fast recipe smooths its training loss's targets (cross-entropy's own option); the articles' not."""
    images, labels = normalized_images(mnist_train.data[:8]), mnist_train.targets[:8]
    for recipe, smoothing in ((models.recipe("vgg", "fast"), 0.1), (models.recipe("vgg"), 0.0)):
        run = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, recipe=recipe, samples=256)
        run.model.eval()  # no dropout: the step's forward pass is the one below
        with torch.no_grad():
            expected = F.cross_entropy(run.model(images), labels, label_smoothing=smoothing)
        assert run.step(images, labels).item() == pytest.approx(expected.item(), rel=1e-5)
