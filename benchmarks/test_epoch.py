"""Full training epochs: model x device x setup, the articles' recipe, fixed rounds.

``reference`` and ``resident`` are the two data pipelines in fp32; ``fast`` is resident data in the
variant measured fastest on this device (``mnistbench.fast``), on the same network, data, optimizer
algorithm and batch.
"""
import pytest

import models
from mnistbench import allocator, devices, energy, guards, metrics, setups, watch
from mnistbench.training import TrainingRun


@pytest.mark.parametrize("setup", setups.SETUPS)
def test_epoch(benchmark, model_name, device, setup, train_set, dataset_name, epoch_samples, epoch_rounds,
               fast_policy):
    chosen = setups.resolve(setup, device, model_name, models.recipe(model_name), train_set, fast_policy)
    if reason := chosen.variant.unsupported_on(device):
        pytest.skip(f"{setup} ({chosen.variant}) on {device}: {reason}")
    devices.reset_peak_memory(device)
    with guards.skip_unrunnable(f"{model_name} {setup} epoch ({chosen.variant}) on {device}"):
        run = TrainingRun.create(model_name, device, chosen.pipeline, train_set, variant=chosen.variant,
                                 samples=epoch_samples)
        run.warm_up()
        benchmark.group = f"epoch {model_name} {setup}"
        # Epochs are long and stable: fixed rounds, no calibration; TrainingRun.epoch synchronises the device.
        with watch.watching(device) as watched:
            def next_round():  # untimed: a second epoch of a model that diverges would time other work, or fail
                with watched.paused():  # a speed case on a NaN, so each round trains from the initial weights
                    run.restart()
                    watched.lap()

            losses = benchmark.pedantic(run.epoch, setup=next_round, rounds=epoch_rounds, iterations=1)
        faults = allocator.faults_per(watched.info, "epoch", epoch_rounds)
        watched_info = energy.own_window(watched.info, device, run.epoch, between=run.restart, what="epochs",
                                         round_seconds=metrics.median_seconds(benchmark))
    benchmark.extra_info.update(watched_info)
    benchmark.extra_info.update(faults)
    benchmark.extra_info.update(metrics.extra_info(
        benchmark, kind="epoch", model_name=model_name, device=device, batch_size=run.pipeline.batch_size,
        samples=run.pipeline.samples, dataset=dataset_name, pipeline=chosen.pipeline, train=True,
        final_loss=losses.mean().item(), variant=chosen.variant, first_step_seconds=run.first_step_seconds,
        warm_up_seconds=run.warm_up_seconds, setup=chosen, watched=watched_info))
    assert len(losses) == len(run.pipeline)
