"""Full training epochs: model x device x pipeline, the articles' recipe, fixed rounds."""
from mnistbench import devices, metrics
from mnistbench.training import TrainingRun


def test_epoch(benchmark, model_name, device, pipeline_name, train_set, dataset_name, epoch_samples, epoch_rounds):
    run = TrainingRun.create(model_name, device, pipeline_name, train_set, samples=epoch_samples)
    run.warm_up()
    devices.reset_peak_memory(device)
    benchmark.group = f"epoch {model_name} {pipeline_name}"
    # Epochs are long and stable: fixed rounds, no calibration; TrainingRun.epoch synchronises the device.
    losses = benchmark.pedantic(run.epoch, rounds=epoch_rounds, iterations=1)
    benchmark.extra_info.update(metrics.extra_info(
        benchmark, kind="epoch", model_name=model_name, device=device, batch_size=run.pipeline.batch_size,
        samples=run.pipeline.samples, dataset=dataset_name, pipeline=pipeline_name, train=True,
        final_loss=losses.mean().item()))
    assert len(losses) == len(run.pipeline)
