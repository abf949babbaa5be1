"""Correctness of the networks: the articles' architectures, trainable, reproducible, portable."""
import pytest
import torch
import torch.nn.functional as F

import models
from mnistbench import backends, training
from mnistbench.reports import results
from mnistbench.pipelines import normalized_images

from articles import article_model_class

ARTICLE_PARAMETERS = {"googlenet": 5_977_530, "vgg": 467_818}


def real_batch(dataset, size):
    return normalized_images(dataset.data[:size]), dataset.targets[:size]


def test_registry_holds_the_articles_recipes_and_a_fast_one_per_model():
    assert models.names() == ["googlenet", "vgg"]
    assert models.recipe("googlenet").batch_size == 64
    assert models.recipe("vgg").batch_size == 128
    for name in models.names():
        recipe, fast = models.recipe(name), models.recipe(name, "fast")
        assert (recipe.optimizer, recipe.lr, recipe.epochs, recipe.schedule) == ("adam", 1e-3, 10, "constant")
        assert (recipe.normalize_mean, recipe.normalize_std) == (0.5, 0.5)
        assert (fast.optimizer, fast.schedule, fast.judged_by) == ("adam", "onecycle", "schedule")
        assert recipe.epoch_fraction == 1 and 0 < fast.epoch_fraction <= 1
        assert (fast.normalize_mean, fast.normalize_std) == (0.5, 0.5)
        assert tuple(fast.stored_fields()) == results.RECIPE_FIELDS  # what the reports read as the recipe
        assert fast.stored_fields()["max_epochs"] == fast.epochs
    with pytest.raises(KeyError, match="choose from googlenet, vgg"):
        models.build("resnet")
    with pytest.raises(KeyError, match="unknown recipe 'slow'; choose from article, fast"):
        models.recipe("vgg", "slow")


@pytest.mark.parametrize("name", sorted(ARTICLE_PARAMETERS))
def test_parameter_count_matches_article(name):
    assert sum(p.numel() for p in models.build(name).parameters()) == ARTICLE_PARAMETERS[name]


def test_output_shape(model_name):
    assert models.build(model_name)(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert models.build(model_name, num_classes=7)(torch.zeros(2, 1, 28, 28)).shape == (2, 7)


def test_channels_last_input_gives_same_output(model_name):
    model = models.build(model_name).eval()
    images = torch.randn(4, 1, 28, 28)
    expected = model(images)
    channels_last = model.to(memory_format=torch.channels_last)(images.to(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last, expected, rtol=1e-4, atol=1e-5)


def test_every_parameter_gets_a_finite_gradient(model_name, mnist_train):
    model = models.build(model_name)
    images, labels = real_batch(mnist_train, 8)
    F.cross_entropy(model(images), labels).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name


def test_loss_falls_when_overfitting_one_batch(model_name, mnist_train):
    torch.manual_seed(0)
    model = models.build(model_name)
    optimizer = training.make_optimizer(model, models.recipe(model_name))
    images, labels = real_batch(mnist_train, 16)

    def loss_without_dropout():
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(images), labels).item()

    before = loss_without_dropout()
    step = training.make_train_step(model.train(), optimizer, "cpu")
    for _ in range(40):
        step(images, labels)
    after = loss_without_dropout()
    assert after < 0.75 * before, (before, after)


def test_same_seed_gives_same_losses(model_name, pipeline_name, mnist_train):
    def losses():
        run = training.TrainingRun.create(model_name, "cpu", pipeline_name, mnist_train, samples=160, seed=7)
        return run.epoch()

    first, second = losses(), losses()
    assert len(first) == -(-160 // models.recipe(model_name).batch_size)
    assert torch.equal(first, second)


def test_save_load_round_trip(model_name, tmp_path):
    model = models.build(model_name).eval()
    path = tmp_path / f"{model_name}.pth"
    torch.save(model.state_dict(), path)
    restored = models.build(model_name).eval()
    restored.load_state_dict(torch.load(path, weights_only=True), strict=True)
    images = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(images), restored(images))


def test_article_state_dict_loads_strictly_and_gives_identical_outputs(model_name):
    torch.manual_seed(0)
    article = article_model_class(model_name)().eval()
    ours = models.build(model_name).eval()
    ours.load_state_dict(article.state_dict(), strict=True)
    images = torch.randn(4, 1, 28, 28)
    assert torch.equal(ours(images), article(images))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_cpu_and_gpu_agree(model_name, mnist_train):
    torch.manual_seed(0)
    model = models.build(model_name).eval()
    images, labels = real_batch(mnist_train, 16)
    backends.set_tf32(False)  # compare true fp32 (conftest restores the switches after each test)
    gpu_model = models.build(model_name).cuda().eval()
    gpu_model.load_state_dict(model.state_dict())
    torch.testing.assert_close(gpu_model(images.cuda()).cpu(), model(images), rtol=1e-4, atol=1e-4)
    cpu_loss = F.cross_entropy(model(images), labels)
    gpu_loss = F.cross_entropy(gpu_model(images.cuda()), labels.cuda())
    cpu_loss.backward()
    gpu_loss.backward()
    for (name, cpu_param), gpu_param in zip(model.named_parameters(), gpu_model.parameters()):
        torch.testing.assert_close(gpu_param.grad.cpu(), cpu_param.grad, rtol=1e-3, atol=1e-4, msg=name)
