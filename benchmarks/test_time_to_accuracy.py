"""Time to accuracy: model x device x recipe, training wall time to the target test accuracy (99% by
default), the evaluation after each epoch excluded from the clock.

``article`` is the articles' job (their hyperparameters in their loop, fp32), timed until each seed first
reaches the target (MLPerf's definition); ``fast`` is the suite's tuned recipe on the same network
(resident data, its own batch and share of each epoch, a one-cycle schedule, label smoothing, the device's
fast variant), whose whole schedule is timed and judged by the mean accuracy over the seeds (the
speedruns'). A miss fails the case with the accuracy reached and stores no time, unless the recipe is
known to fall short of that target (the article's GoogLeNet recipe diverges): then the miss is an expected
outcome, reported with the accuracy reached, and the standard matrix leaves the run out on the kind of
device where the miss was measured.
"""
import importlib
import math
import os
import statistics
import traceback
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import models
from conftest import SMOKE_TARGET_ACCURACY, SMOKE_TEST_SAMPLES
from mnistbench import allocator, data, devices, energy, guards, metrics, setups, time_to_accuracy, training, watch
from mnistbench.time_to_accuracy import Outcome, TargetNotReached, TrainingClock, train_to_accuracy
from mnistbench.variants import Variant

CLOCK = TrainingClock()


@pytest.mark.benchmark(timer=CLOCK)
@pytest.mark.parametrize("recipe_name", models.RECIPES)
def test_time_to_accuracy(benchmark, pytestconfig, model_name, device, recipe_name, target_accuracy, train_set,
                          test_set, dataset_name, accuracy_epoch_samples, fast_policy):
    recipe = models.recipe(model_name, recipe_name)
    expected_miss = recipe.expected_miss(target_accuracy)
    if expected_miss and recipe.known_on == torch.device(device).type and pytestconfig.getoption("matrix") != "exhaustive":
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

        with watch.watching(device) as watched:
            def start_next_seed():  # untimed: each round trains from scratch from the next seed
                with watched.paused():
                    run.restart(seed=next(seeds))
                    watched.lap()

            def train():
                outcomes.append(train_to_accuracy(run, test_set, target=target_accuracy, max_epochs=recipe.epochs,
                                                  clock=CLOCK, judged_by=recipe.judged_by, watched=watched))

            benchmark.pedantic(train, setup=start_next_seed, rounds=pytestconfig.getoption("seeds"))
        try:  # on a miss: TargetNotReached, naming the mean accuracy and each seed short of the target
            time_to_accuracy.check(outcomes, model_name, device, recipe.judged_by)
        except TargetNotReached as miss:
            if expected_miss:
                pytest.xfail(f"{miss} (expected: {expected_miss})")
            shortened = (f" (each epoch trained on {accuracy_epoch_samples:,} of the {len(train_set):,} training "
                         f"images: --epoch-samples)" if accuracy_epoch_samples else "")
            # a recipe's outcome, not a fault of the code: its message alone, without the test's source
            raise pytest.fail.Exception(f"{type(miss).__name__}: {miss}{shortened}", pytrace=False) from None
        # a run's training, without its evaluations, for as many epochs as the median run took
        epochs = math.ceil(statistics.median(outcome.epochs for outcome in outcomes))
        watched_info = energy.own_window(watched.info, device, lambda: [run.epoch() for _ in range(epochs)],
                                         between=lambda: run.restart(seed=0), what="runs of the first seed",
                                         round_seconds=metrics.median_seconds(benchmark))
    accuracies = [outcome.accuracies[-1] for outcome in outcomes]
    benchmark.extra_info.update(watched_info)
    benchmark.extra_info.update(allocator.faults_per(watched.info, "epoch", sum(o.epochs for o in outcomes)))
    benchmark.extra_info.update(metrics.extra_info(
        benchmark, kind="time-to-accuracy", model_name=model_name, device=device, batch_size=recipe.batch_size,
        samples=run.pipeline.samples, dataset=dataset_name, pipeline=setup.pipeline, train=True, final_loss=None,
        variant=setup.variant, first_step_seconds=run.first_step_seconds, warm_up_seconds=run.warm_up_seconds,
        images_timed=run.pipeline.samples * sum(outcome.epochs for outcome in outcomes), setup=setup,
        watched=watched_info))
    benchmark.extra_info.update(
        recipe=recipe_name, judged_by=recipe.judged_by, definition=time_to_accuracy.DEFINITIONS[recipe.judged_by],
        **recipe.stored_fields(),
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


def test_a_schedule_is_judged_by_its_mean_accuracy_and_a_target_by_every_seed():
    """The speedruns' fixed schedule passes when the mean over the seeds reaches the target, a seed a hair
    short included; MLPerf's time to the target counts that seed as a miss."""
    reached, close = Outcome(0, 0.99, 2, [0.97, 0.993]), Outcome(1, 0.99, 2, [0.96, 0.989])
    time_to_accuracy.check([reached, close], "vgg", "cpu", "schedule")
    with pytest.raises(time_to_accuracy.TargetNotReached) as failure:
        time_to_accuracy.check([reached, close], "vgg", "cpu", "target")
    assert str(failure.value) == ("vgg on cpu reached 99.10% test accuracy, the mean over 2 seed(s), and 1 seed(s) "
                                  "never reached the target 99.00%: seed 1 reached 98.90% after 2 epoch(s) (best 98.90%)")
    with pytest.raises(time_to_accuracy.TargetNotReached) as failure:
        time_to_accuracy.check([reached, Outcome(1, 0.99, 2, [0.96, 0.983])], "vgg", "cpu", "schedule")
    assert str(failure.value) == ("vgg on cpu reached 98.80% test accuracy, the mean over 2 seed(s), short of the "
                                  "target 99.00%: seed 1 reached 98.30% after 2 epoch(s) (best 98.30%)")


def test_a_schedule_trains_all_its_epochs_evaluated_at_its_end_and_a_target_stops_at_it():
    class Run:  # a run whose test accuracy is 50% after its first epoch, 60% after its second, 70% after its third
        seed = 0

        def __init__(self):
            self.epochs = 0

        def epoch(self):
            self.epochs += 1

        def evaluate(self, test_set):
            return 0.4 + self.epochs / 10, 0.0

    for judged_by, epochs, accuracies in (("target", 1, [0.5]), ("schedule", 3, [0.7])):
        outcome = train_to_accuracy(Run(), None, target=0.45, max_epochs=3, clock=TrainingClock(), judged_by=judged_by)
        assert (outcome.epochs, outcome.accuracies, outcome.reached) == (epochs, pytest.approx(accuracies), True)


def test_restart_trains_as_if_the_warm_up_never_happened(mnist_train):
    recipe = models.recipe("vgg", "fast")
    setup = setups.resolve("fast", "cpu", "vgg", recipe, mnist_train, setups.SMOKE)

    def train(warm_up_first):  # one run after the other: dropout draws from the process's random stream
        run = training.TrainingRun.create("vgg", "cpu", setup.pipeline, mnist_train, variant=setup.variant,
                                          recipe=recipe, samples=8 * recipe.batch_size)
        if warm_up_first:
            run.warm_up()
            run.restart()
        return torch.cat([run.epoch() for _ in range(recipe.epochs)]), run.model.classifier[-1].weight

    fresh_losses, fresh_weight = train(warm_up_first=False)
    restarted_losses, restarted_weight = train(warm_up_first=True)
    assert len(fresh_losses) == 8 * recipe.epochs and torch.equal(fresh_losses, restarted_losses)
    assert torch.equal(fresh_weight, restarted_weight)


@pytest.mark.parametrize("optimizer", ["default", "foreach", "fused"])
def test_restart_zeroes_the_optimizers_state_in_place_for_a_captured_step_to_replay(mnist_train, optimizer):
    """A CUDA graph (``cudagraphs-step``) replays Adam's update on the state tensors of its capture: a restart
    that replaced them would leave the graph updating orphans, and the run would not start afresh; in place, it
    trains as a fresh run does, in each implementation of Adam."""
    variant = Variant(optimizer=optimizer)
    fresh = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, variant=variant, samples=256).epoch()
    run = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, variant=variant, samples=256)
    run.epoch()
    held = [value for state in run.optimizer.state.values() for value in state.values()]
    run.restart()
    kept = [value for state in run.optimizer.state.values() for value in state.values()]
    assert len(held) == 3 * len(list(run.model.parameters())) and all(a is b for a, b in zip(held, kept, strict=True))
    assert all(not value.any() for value in kept)
    assert torch.equal(run.epoch(), fresh)


def test_restart_from_another_seed_trains_as_a_run_created_with_it(mnist_train):
    def losses(run):
        return torch.cat([run.epoch() for _ in range(2)])

    created = losses(training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, samples=256, seed=1))
    reseeded = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, samples=256)
    first_seed = losses(reseeded)
    reseeded.restart(seed=1)
    assert reseeded.seed == 1 and torch.equal(losses(reseeded), created)
    assert not torch.equal(first_seed, created)


def test_restart_draws_each_seeds_weights_once_and_trains_from_the_copy_as_from_fresh_weights(mnist_train,
                                                                                              monkeypatch):
    """A restart within an energy window (``energy.own_window``) must be a few copies, not GoogLeNet's 33 ms of
    drawing weights again, and a run restarted from the copy trains exactly as one from freshly drawn weights
    (the first restart of each seed), dropout's draws from the CPU's stream included."""
    run = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, samples=256)
    drawn = []
    build = models.build
    monkeypatch.setattr(training.models, "build", lambda name: drawn.append(name) or build(name))
    losses = []
    for seed in (0, 1, 0, 1, 0):
        run.restart(seed=seed)
        losses.append(run.epoch())
    assert drawn == ["vgg", "vgg"]
    assert torch.equal(losses[2], losses[0]) and torch.equal(losses[4], losses[0]) and torch.equal(losses[3], losses[1])
    assert not torch.equal(losses[1], losses[0])


class HostReads(TorchDispatchMode):
    """The values read back to the host (``.item()`` and its kin) by the optimizer or its schedule: on CUDA each
    is a wait for the device, which a capture forbids."""

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.found += [f"{Path(frame.filename).name}:{frame.lineno}" for frame in traceback.extract_stack()
                           if f"torch{os.sep}optim" in frame.filename][-1:]
        return func(*args, **(kwargs or {}))


def test_a_captured_steps_one_cycle_is_read_on_the_device_without_a_wait_and_restarts_in_place(mnist_train,
                                                                                             monkeypatch):
    """What a captured step (``cudagraphs-step``, CUDA only) needs of the fast recipe's one-cycle schedule, shown
    on the CPU with its capturable Adam allowed there and the step run eagerly: no value read back to the host
    by Adam or the schedule in any step (``foreach`` Adam reads a tensor beta1 back at every step, the reason it
    is refused), the rate and beta1 held in the same tensors with the values ``OneCycleLR`` sets as numbers,
    back to their first values in place at a restart, and the run trains as the one with numbers does."""
    monkeypatch.setattr(importlib.import_module("torch.optim.adam"), "_get_capturable_supported_devices",
                        lambda supports_xla=True: ["cpu"])
    recipe = models.recipe("vgg", "fast")

    def train(variant):  # one run after the other: dropout draws from the process's random stream
        run = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, variant=variant, recipe=recipe,
                                          samples=6 * recipe.batch_size)
        step = training.make_train_step(run.model, run.optimizer, "cpu", label_smoothing=recipe.label_smoothing)
        group, values = run.optimizer.param_groups[0], []

        def recording_step(images, labels):  # eager, as the captured step's warm-up calls run
            values.append((float(group["lr"]), float(group["betas"][0]), float(group["betas"][1])))
            return step(images, labels)

        run.step = recording_step
        held = group["lr"], group["betas"][0]
        with HostReads() as reads:
            losses = torch.cat([run.epoch() for _ in range(recipe.epochs)])
        return run, held, values, losses, reads.found

    *_, expected, plain_losses, _ = train(Variant())
    run, held, values, losses, reads = train(Variant(compile="cudagraphs-step"))
    group = run.optimizer.param_groups[0]
    assert isinstance(run.schedule, training.OneCycleOnDevice) and group["capturable"] and not group["foreach"]
    assert reads == []
    assert group["lr"] is held[0] and group["betas"][0] is held[1] and all(map(torch.is_tensor, held))
    assert torch.allclose(torch.tensor(values), torch.tensor(expected)) and len({beta for _, beta, _ in values}) > 1
    assert torch.allclose(losses, plain_losses, rtol=1e-4, atol=1e-5)
    run.restart()
    assert group["lr"] is held[0] and group["betas"][0] is held[1]
    assert torch.allclose(torch.stack(held), torch.tensor(expected[0][:2]))
    assert "device_beta1" not in run.schedule.state_dict()
    foreach = torch.optim.Adam(run.model.parameters(), capturable=True, foreach=True)
    foreach.param_groups[0].update(lr=torch.tensor(1e-3), betas=(torch.tensor(0.9), 0.999))
    for parameter in run.model.parameters():
        parameter.grad = torch.ones_like(parameter)
    with HostReads() as reads:
        foreach.step()
    assert reads, "foreach Adam reads a tensor beta1 back: if it no longer does, it need not be refused"


def test_one_cycle_warms_up_to_the_recipe_rate_and_anneals_to_nearly_zero(mnist_train):
    recipe = models.recipe("vgg", "fast")
    run = training.TrainingRun.create("vgg", "cpu", "resident", mnist_train, recipe=recipe,
                                      samples=10 * recipe.batch_size)
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
