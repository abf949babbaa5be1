"""Single steps on a fixed batch of real digits already on the device:
model x batch size x device x variant (precision, memory format, compile, optimizer) x mode.

``train`` is one full optimizer step (forward, backward, Adam); ``forward`` is inference only. The
variant ``fast`` is the one measured fastest on the device (``mnistbench.fast``). Compilation happens in
the untimed warm-up, on a fresh Dynamo cache, and is stored as ``first_step_seconds``.
"""
import time

import torch

import models
from mnistbench import allocator, devices, energy, guards, metrics, peaks, setups, training, watch
from mnistbench.pipelines import normalized_images
from mnistbench.variants import Variant


def test_step(benchmark, model_name, batch_size, device, step_variant, mode, train_set, dataset_name, fast_policy,
              pytestconfig):
    recipe = models.recipe(model_name)
    setup = None
    if step_variant == "fast":
        setup = setups.resolve("fast", device, model_name, recipe, train_set, fast_policy)
        variant = setup.variant
    else:
        variant = Variant.parse(step_variant)
    variant.configure_backends(device)
    torch.manual_seed(0)
    devices.reset_peak_memory(device)
    with guards.skip_unrunnable(f"{model_name} {mode} step, batch {batch_size}, {variant} on {device}"):
        model = models.build(model_name).to(device)
        images = normalized_images(train_set.data[:batch_size], recipe.normalize_mean, recipe.normalize_std).to(device)
        labels = train_set.targets[:batch_size].to(device)
        if mode == "train":
            step = training.make_train_step(variant.prepare_model(model.train()),
                                            training.make_optimizer(model, recipe, variant), device, variant)
        else:
            step = training.make_forward_step(variant.prepare_model(model.eval()), device, variant)

        steps_taken = 0

        def synchronized_step():
            nonlocal steps_taken
            loss = step(images, labels)
            devices.synchronize(device)
            steps_taken += 1
            return loss

        start = time.perf_counter()
        synchronized_step()
        first_step_seconds = time.perf_counter() - start
        for _ in range(variant.warm_up_steps(training.WARM_UP_STEPS)):
            synchronized_step()
        warm_up_seconds = time.perf_counter() - start
        benchmark.group = f"step {model_name} {mode} b{batch_size}"
        with watch.watching(device) as watched:  # steps are short: one window over all rounds
            steps_before = steps_taken  # pytest-benchmark's calibration and last call run in the window too
            loss = benchmark(synchronized_step)
        faults = allocator.faults_per(watched.info, "step", steps_taken - steps_before)
        watched_info = energy.own_window(watched.info, device, synchronized_step, what="steps",
                                         round_seconds=metrics.median_seconds(benchmark))
    training.check_finite(loss.reshape(1).float().cpu(), model_name)
    benchmark.extra_info.update(watched_info)
    benchmark.extra_info.update(faults)
    benchmark.extra_info.update(metrics.extra_info(
        benchmark, kind=f"step-{mode}", model_name=model_name, device=device, batch_size=batch_size,
        samples=batch_size, dataset=dataset_name, pipeline=None, train=mode == "train", final_loss=loss.item(),
        variant=variant, first_step_seconds=first_step_seconds, warm_up_seconds=warm_up_seconds,
        setup=setup, watched=watched_info))
    info = benchmark.extra_info
    if info.get("peak_source") == "measured":  # timed, against a peak measured on this machine: as many turns as rounds
        info.update(peaks.in_turns(synchronized_step, info["flops_per_image"] * batch_size, device, variant.precision,
                                   torch.get_num_threads(), pytestconfig.getoption("benchmark_min_rounds")))
