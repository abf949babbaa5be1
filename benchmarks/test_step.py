"""Single steps on a fixed batch of real digits already on the device: model x device x batch size.

``train`` is one full optimizer step (forward, backward, Adam); ``forward`` is inference only.
"""
import pytest
import torch

import models
from mnistbench import devices, metrics, training
from mnistbench.pipelines import normalized_images

WARM_UP_STEPS = 3


@pytest.mark.parametrize("mode", ["train", "forward"])
def test_step(benchmark, model_name, batch_size, device, mode, train_set, dataset_name):
    recipe = models.recipe(model_name)
    devices.prepare(device)
    torch.manual_seed(0)
    model = models.build(model_name).to(device)
    images = normalized_images(train_set.data[:batch_size], recipe.normalize_mean, recipe.normalize_std).to(device)
    labels = train_set.targets[:batch_size].to(device)

    if mode == "train":
        optimizer = training.make_optimizer(model, recipe)
        model.train()

        def step():
            loss = training.train_step(model, optimizer, images, labels)
            devices.synchronize(device)
            return loss
    else:
        model.eval()

        @torch.inference_mode()
        def step():
            logits = model(images)
            devices.synchronize(device)
            return torch.nn.functional.cross_entropy(logits, labels)

    for _ in range(WARM_UP_STEPS):
        step()
    devices.reset_peak_memory(device)
    benchmark.group = f"step {model_name} {mode} b{batch_size}"
    loss = benchmark(step)
    training.check_finite(loss.reshape(1).cpu(), model_name)
    benchmark.extra_info.update(metrics.extra_info(
        benchmark, kind=f"step-{mode}", model_name=model_name, device=device, batch_size=batch_size,
        samples=batch_size, dataset=dataset_name, pipeline=None, train=mode == "train", final_loss=loss.item()))
