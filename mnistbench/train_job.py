"""The articles' job as a command: train N epochs with progress, evaluate every epoch, keep a usable model.

Each completed epoch prints the articles' loss line plus the test accuracy and the epoch's wall time,
then replaces the saved model atomically; Ctrl-C stops the run and says which epoch the file holds.
Started by torchrun, every rank trains its shard of each epoch in DistributedDataParallel; rank 0 alone
prints, evaluates and saves (the unwrapped network, so the file is the same as a single process's).
"""
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

import models

from . import checkpoints, data, distributed, interrupts, setups, training
from . import quiet  # noqa: F401 (registers its watcher: a fast probe on a machine that is not quiet is not cached)


@dataclass
class Summary:
    epochs_done: int
    train_seconds: float  # training only: evaluation and saving excluded
    images: int
    best_accuracy: float
    best_epoch: int
    interrupted: bool


def default_out(model_name: str) -> str:
    """The model file a run writes, ``mnist_vgg.pth``: as the VGG article's script names its ``mnist_vggnet.pth``,
    with the registry's model name."""
    return f"mnist_{model_name}.pth"


def train(model_name: str, device: str, *, recipe_name: str = "article", epochs: int | None = None,
          setup: str | None = None, out: str | Path | None = None, dataset: str = "mnist", root=None,
          samples: int | None = None, seed: int = 0, progress: bool | None = None,
          fast_policy: setups.FastPolicy = setups.FastPolicy(), log=print) -> Summary:
    """Train ``model_name`` with its ``article`` or ``fast`` recipe in ``setup`` (by default the recipe's
    own) for ``epochs`` (by default the recipe's; a one-cycle schedule spans them), evaluating and saving
    to ``out`` after each epoch; ``log`` receives every printed line. The progress bar is drawn only on a
    terminal unless ``progress`` says otherwise: in a log file the per-epoch lines are the progress."""
    recipe = models.recipe(model_name, recipe_name)
    recipe = dataclasses.replace(recipe, epochs=epochs or recipe.epochs)
    setup_name = setup or setups.RECIPE_SETUPS[recipe_name]
    out = Path(out or default_out(model_name))
    if fast_policy.pinned is not None:
        if setup_name != "fast":
            raise ValueError(f"--fast-variant pins the fast setup's variant, and the {setup_name} setup runs its own: "
                             f"add --pipeline fast, or leave --fast-variant out")
        if reason := setups.pinned_cannot_serve(fast_policy.pinned, device, model_name, recipe.schedule):
            raise ValueError(reason)
    train_set = data.load(dataset, root, train=True)
    test_set = data.load(dataset, root, train=False)
    member = distributed.join(device)  # rank 0 of 1 unless torchrun started this process
    device, progress = member.device, progress if member.is_main else False
    log = log if member.is_main else lambda line: None
    if member.world_size > 1 and setup_name == "fast" and fast_policy.pinned is None:
        raise ValueError("under torchrun each rank would measure the fast variant on its own and could choose "
                         "another: pin it with --fast-variant (for instance the one a single process chose)")
    chosen = setups.resolve(setup_name, device, model_name, recipe, train_set, fast_policy)
    if reason := chosen.variant.unsupported_on(device):
        raise ValueError(f"the {setup_name} setup ({chosen.variant}) cannot run on {device}: {reason}")
    run = training.TrainingRun.create(model_name, device, chosen.pipeline, train_set, variant=chosen.variant,
                                      recipe=recipe, samples=samples, seed=seed, shard=member.shard,
                                      wrap_model=member.wrap)
    if recipe.schedule == "onecycle" and recipe.epochs * len(run.pipeline) < 2:  # OneCycleLR over one step
        raise ValueError(f"the {recipe_name} recipe's one-cycle schedule over {recipe.epochs * len(run.pipeline)} step "
                         f"trains at its final rate, near zero, and learns nothing: give it 2 steps at least "
                         f"(--samples over {recipe.batch_size}, or --epochs 2)")
    run.warm_up()  # compilation and autotuning out of epoch 1's time; ``restart`` then trains from scratch
    run.restart()
    epochs, images_per_epoch = recipe.epochs, run.pipeline.samples * member.world_size
    how = chosen.choice.source if chosen.choice else "fixed"
    log(f"training {model_name} on {device}, {member}, {recipe_name} recipe ({setup_name}: {chosen.variant}, {how}), "
        f"{epochs} epochs of {images_per_epoch} {dataset} images, batch {recipe.batch_size}"
        f"{' per rank' if member.world_size > 1 else ''}, "
        f"Adam lr {recipe.lr} {recipe.schedule}" + (f", label smoothing {recipe.label_smoothing}"
                                                     if recipe.label_smoothing else ""))
    summary = Summary(0, 0.0, 0, 0.0, 0, False)
    existed = out.exists()  # replaced only by the first epoch's weights (--overwrite)
    sigterm_before = interrupts.sigterm_as_ctrl_c()  # a job scheduler's stop, or torchrun's after a Ctrl-C
    try:
        for epoch in range(1, epochs + 1):
            batches = tqdm(run.pipeline, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                           disable=None if progress is None else not progress)
            start = time.perf_counter()
            loss = member.average(run.epoch(batches).mean())
            seconds = time.perf_counter() - start
            if not member.is_main:  # rank 0 evaluates and saves for all: DDP keeps the models identical
                summary.epochs_done, summary.train_seconds = epoch, summary.train_seconds + seconds
                continue
            accuracy, test_loss = run.evaluate(test_set)
            checkpoints.save(run.model, out)
            summary.epochs_done, summary.train_seconds = epoch, summary.train_seconds + seconds
            summary.images += images_per_epoch
            if accuracy > summary.best_accuracy:
                summary.best_accuracy, summary.best_epoch = accuracy, epoch
            log(f"Epoch [{epoch}/{epochs}], Loss: {loss.item():.4f}, test accuracy {accuracy:.2%}, "
                f"test loss {test_loss:.4f}, {seconds:.1f} s")
    except KeyboardInterrupt:
        summary.interrupted = True
        if summary.epochs_done:
            kept = f"{out} holds the weights after epoch {summary.epochs_done}"
        else:
            kept = f"nothing was saved: {out} is the file that was there before" if existed else "nothing was saved"
        log(f"interrupted during epoch {summary.epochs_done + 1}: {kept}")
        return summary
    finally:
        interrupts.restore(sigterm_before)
        member.close()
    log(f"done: {summary.epochs_done} epochs in {summary.train_seconds:.1f} s of training "
        f"({summary.images / summary.train_seconds:.0f} images/s), best test accuracy "
        f"{summary.best_accuracy:.2%} (epoch {summary.best_epoch}); weights of the last epoch saved to {out}")
    return summary
