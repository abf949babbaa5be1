"""Full training epochs: model x device x setup, the articles' recipe, fixed rounds.

``reference`` and ``resident`` are the two data pipelines in fp32; ``fast`` is resident data with the
device's fastest honest variant (``mnistbench.variants.FAST``), on the same network, data and optimizer.
"""
import pytest

from mnistbench import devices, guards, metrics, training
from mnistbench.training import TrainingRun


@pytest.mark.parametrize("setup", training.SETUPS)
def test_epoch(benchmark, model_name, device, setup, train_set, dataset_name, epoch_samples, epoch_rounds):
    pipeline, variant = training.setup(setup, device)
    if reason := variant.unsupported_on(device):
        pytest.skip(f"{setup} ({variant}) on {device}: {reason}")
    case = f"{model_name} {setup} epoch ({variant}) on {device}"
    with guards.skip_unrunnable(case):
        run = TrainingRun.create(model_name, device, pipeline, train_set, variant=variant, samples=epoch_samples)
        run.warm_up()
        devices.reset_peak_memory(device)
        benchmark.group = f"epoch {model_name} {setup}"
        # Epochs are long and stable: fixed rounds, no calibration; TrainingRun.epoch synchronises the device.
        losses = benchmark.pedantic(run.epoch, rounds=epoch_rounds, iterations=1)
    benchmark.extra_info.update(metrics.extra_info(
        benchmark, kind="epoch", model_name=model_name, device=device, batch_size=run.pipeline.batch_size,
        samples=run.pipeline.samples, dataset=dataset_name, pipeline=pipeline, train=True,
        final_loss=losses.mean().item(), variant=variant, first_step_seconds=run.first_step_seconds))
    assert len(losses) == len(run.pipeline)
