"""Time to accuracy: model x device x recipe, training wall time until the test accuracy first reaches
the target (99% by default), the evaluation after each epoch excluded from the clock.

``article`` is the articles' job (their hyperparameters in their loop, fp32); ``fast`` is the suite's
tuned recipe on the same network (resident data, a larger batch, a one-cycle schedule, the device's
fast variant). The recipe's epochs bound each run, one per seed: a mean accuracy over the seeds short of
the target fails the case with the accuracy reached, and stores no time, unless the recipe is known to
fall short of that target (the article's GoogLeNet recipe diverges): then the miss is an expected
outcome, reported with the accuracy reached, and the standard matrix leaves the run out.
"""
import statistics

import pytest
import torch

import models
from conftest import SMOKE_TARGET_ACCURACY, SMOKE_TEST_SAMPLES
from mnistbench import data, devices, guards, metrics, setups, time_to_accuracy, training
from mnistbench.time_to_accuracy import Outcome, TargetNotReached, TrainingClock, train_to_accuracy

CLOCK = TrainingClock()


@pytest.mark.benchmark(timer=CLOCK)
@pytest.mark.parametrize("recipe_name", models.RECIPES)
def test_time_to_accuracy(benchmark, pytestconfig, model_name, device, recipe_name, target_accuracy, train_set,
                          test_set, dataset_name, accuracy_epoch_samples, fast_policy):
    recipe = models.recipe(model_name, recipe_name)
    expected_miss = recipe.expected_miss(target_accuracy)
    if expected_miss and pytestconfig.getoption("matrix") == "standard":
        pytest.skip(f"{expected_miss}; --matrix exhaustive trains it anyway")
    setup = setups.resolve(setups.RECIPE_SETUPS[recipe_name], device, model_name, recipe, train_set, fast_policy)
    if reason := setup.variant.unsupported_on(device):
        pytest.skip(f"{recipe_name} recipe ({setup.variant}) on {device}: {reason}")
    devices.reset_peak_memory(device)
    with guards.skip_unrunnable(f"{model_name} {recipe_name} recipe ({setup.variant}) on {device}"):
        run = training.TrainingRun.create(model_name, device, setup.pipeline, train_set, variant=setup.variant,
                                          recipe=recipe, samples=accuracy_epoch_samples)
        run.warm_up()  # compilation and autotuning; each round then trains from scratch from its seed
        benchmark.group = f"time to {target_accuracy:.1%} {model_name}"
        seeds, outcomes = iter(range(pytestconfig.getoption("seeds"))), []

        def start_next_seed():  # untimed: each round trains from scratch from the next seed
            run.restart(seed=next(seeds))

        def train():
            outcomes.append(train_to_accuracy(run, test_set, target=target_accuracy, max_epochs=recipe.epochs,
                                              clock=CLOCK))

        benchmark.pedantic(train, setup=start_next_seed, rounds=pytestconfig.getoption("seeds"))
        try:  # on a miss: TargetNotReached, naming the mean accuracy and each seed short of the target
            time_to_accuracy.check(outcomes, model_name, device)
        except TargetNotReached as miss:
            if expected_miss:
                pytest.xfail(f"{miss} (expected: {expected_miss})")
            raise
    accuracies = [outcome.accuracies[-1] for outcome in outcomes]
    benchmark.extra_info.update(metrics.extra_info(
        benchmark, kind="time-to-accuracy", model_name=model_name, device=device, batch_size=recipe.batch_size,
        samples=run.pipeline.samples, dataset=dataset_name, pipeline=setup.pipeline, train=True, final_loss=None,
        variant=setup.variant, first_step_seconds=run.first_step_seconds,
        epochs=statistics.mean(outcome.epochs for outcome in outcomes), setup=setup))
    benchmark.extra_info.update(
        recipe=recipe_name, lr=recipe.lr, schedule=recipe.schedule, max_epochs=recipe.epochs,
        target_accuracy=target_accuracy, seeds=len(outcomes), epochs=[outcome.epochs for outcome in outcomes],
        accuracies=[outcome.accuracies for outcome in outcomes], accuracy=statistics.mean(accuracies),
        accuracy_stdev=statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0)


def test_smoke_target_is_out_of_reach_of_a_model_stuck_on_one_class(mnist_root):
    """A model that always answers the most frequent class scores that class's share of the test images."""
    for name in ("mnist", "fashion-mnist"):
        labels = data.first(data.load(name, mnist_root, train=False), SMOKE_TEST_SAMPLES).targets
        assert torch.bincount(labels).max().item() / len(labels) < SMOKE_TARGET_ACCURACY - 0.02


def test_the_clock_stops_while_paused(monkeypatch):
    now = iter([10.0, 11.0, 15.0, 16.5])  # read, pause from 11 to 15, read
    monkeypatch.setattr(time_to_accuracy.time, "perf_counter", lambda: next(now))
    clock = TrainingClock()
    start = clock()
    with clock.paused():
        pass
    assert clock() - start == 2.5


def test_a_run_short_of_its_target_fails_with_the_accuracy_it_reached(mnist_train, mnist_test):
    run = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, samples=256)
    outcome = train_to_accuracy(run, data.first(mnist_test, SMOKE_TEST_SAMPLES), target=0.999, max_epochs=2,
                                clock=TrainingClock())
    assert (outcome.seed, outcome.epochs, outcome.reached, run.steps_done) == (0, 2, False, 4)
    with pytest.raises(time_to_accuracy.TargetNotReached) as failure:
        time_to_accuracy.check([outcome], "vgg", "cpu")
    message = str(failure.value)
    assert message.startswith(f"vgg on cpu reached {outcome.accuracies[-1]:.2%} test accuracy, the mean over "
                              "1 seed(s), short of the target 99.90%: seed 0 reached ")
    assert message.endswith(f" after 2 epoch(s) (best {max(outcome.accuracies):.2%})")


def test_a_recipe_is_judged_by_its_mean_accuracy_over_the_seeds():
    """As the speedruns judge theirs: a seed a hair short does not fail a recipe whose mean reaches the target."""
    reached = Outcome(0, 0.99, [0.97, 0.993])
    time_to_accuracy.check([reached, Outcome(1, 0.99, [0.96, 0.989])], "vgg", "cpu")
    with pytest.raises(time_to_accuracy.TargetNotReached) as failure:
        time_to_accuracy.check([reached, Outcome(1, 0.99, [0.96, 0.983])], "vgg", "cpu")
    assert str(failure.value) == ("vgg on cpu reached 98.80% test accuracy, the mean over 2 seed(s), short of the "
                                  "target 99.00%: seed 1 reached 98.30% after 2 epoch(s) (best 98.30%)")


def test_restart_trains_as_if_the_warm_up_never_happened(mnist_train):
    recipe = models.recipe("vgg", "fast")
    setup = setups.resolve("fast", "cpu", "vgg", recipe, mnist_train, setups.SMOKE)

    def train(warm_up_first):  # one run after the other: dropout draws from the process's random stream
        run = training.TrainingRun.create("vgg", "cpu", setup.pipeline, mnist_train, variant=setup.variant,
                                          recipe=recipe, samples=512)
        if warm_up_first:
            run.warm_up()
            run.restart()
        return torch.cat([run.epoch() for _ in range(recipe.epochs)]), run.model.classifier[-1].weight

    fresh_losses, fresh_weight = train(warm_up_first=False)
    restarted_losses, restarted_weight = train(warm_up_first=True)
    assert len(fresh_losses) == 4 and torch.equal(fresh_losses, restarted_losses)
    assert torch.equal(fresh_weight, restarted_weight)


def test_restart_from_another_seed_trains_as_a_run_created_with_it(mnist_train):
    def losses(run):
        return torch.cat([run.epoch() for _ in range(2)])

    created = losses(training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, samples=256, seed=1))
    reseeded = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, samples=256)
    first_seed = losses(reseeded)
    reseeded.restart(seed=1)
    assert reseeded.seed == 1 and torch.equal(losses(reseeded), created)
    assert not torch.equal(first_seed, created)


def test_one_cycle_warms_up_to_the_recipe_rate_and_anneals_to_nearly_zero(mnist_train):
    recipe = models.recipe("vgg", "fast")
    run = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, recipe=recipe, samples=1280)
    rates, step = [], run.step

    def recording_step(images, labels):
        rates.append(run.optimizer.param_groups[0]["lr"])
        return step(images, labels)

    run.step = recording_step
    for _ in range(recipe.epochs):
        run.epoch()
    assert len(rates) == recipe.epochs * len(run.pipeline) == 10
    assert rates[0] == pytest.approx(recipe.lr / 25) and max(rates) == pytest.approx(recipe.lr)
    assert rates[-1] < recipe.lr / 1000
