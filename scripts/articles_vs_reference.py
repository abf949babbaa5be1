"""The articles' own training loop against the suite's ``reference`` epoch, alternated in one process.

    python scripts/articles_vs_reference.py --model vgg [--rounds N] [--samples N] [--allocator pinned]

``reference`` must cost what the articles' script costs, or the suite's CPU side of "23x" is not theirs.
Each round trains one epoch of the articles' loop (their model class, executed from their published code
under ``../shared/seeds`` or $MNISTBENCH_SEEDS; their ``DataLoader`` with ``ToTensor`` + ``Normalize``,
``shuffle=True``; zero_grad, forward, cross-entropy, backward, Adam's step and ``loss.item()`` per batch),
then one epoch of the suite's ``reference`` setup (``TrainingRun``), each after a few untimed steps, on
the CPU with this process's threads: A B A B, so a machine whose speed drifts slows both alike. Each
epoch's minor page faults per step are printed beside its time (``mnistbench.allocator``). ``--allocator
pinned`` runs both in the allocator state of the suite's own process (what ``reference`` gets in a timed
run); ``default`` (the default) leaves glibc's dynamic thresholds, as the articles' script has them in its
own process. At the end: each loop's median, the ratio, and the rank test's p (``mnistbench history``'s).
The MNIST root is ``--mnist-root``, else $MNISTBENCH_DATA, else ./data. Nothing is saved.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn, optim

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import models  # noqa: E402 (after the checkout is put on the path)
from mnistbench import allocator, data  # noqa: E402
from mnistbench.reports.significance import ROUNDS_NEEDED, rank_test  # noqa: E402
from mnistbench.training import WARM_UP_STEPS, TrainingRun  # noqa: E402

WARM_UP = 1 + WARM_UP_STEPS  # untimed steps before each loop's first epoch, as TrainingRun.warm_up takes


class ArticlesLoop:
    """The articles' script, one epoch per ``epoch()`` call, over the first ``samples`` images of each shuffled
    epoch (all of them by default)."""

    def __init__(self, model_name: str, root, samples: int | None):
        from articles import article_model_class  # noqa: PLC0415 (benchmarks/ holds the articles' code loader)

        recipe = models.recipe(model_name)
        dataset = data.load("mnist", root, train=True, transform=data.article_transform())
        self.loader = torch.utils.data.DataLoader(dataset=dataset, batch_size=recipe.batch_size, shuffle=True)
        self.batches = len(self.loader) if samples is None else -(-samples // recipe.batch_size)
        torch.manual_seed(0)
        self.model = article_model_class(model_name)()
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = optim.Adam(self.model.parameters(), lr=recipe.lr)

    def epoch(self, batches: int | None = None) -> int:
        """Train ``batches`` batches (by default an epoch's) as their script does; returns how many."""
        self.model.train()
        running_loss, done = 0.0, 0
        for images, labels in self.loader:
            if done == (batches or self.batches):
                break
            self.optimizer.zero_grad()
            loss = self.criterion(self.model(images), labels)
            loss.backward()
            self.optimizer.step()
            running_loss += loss.item()
            done += 1
        return done


def timed(epoch) -> tuple[float, int, float]:
    """Seconds of ``epoch()`` (which returns its steps), its steps, and its minor page faults per step."""
    faults, start = allocator.minor_faults(), time.perf_counter()
    steps = epoch()
    seconds = time.perf_counter() - start
    return seconds, steps, (allocator.minor_faults() - faults) / max(1, steps)


def alternate(model_name: str, root, rounds: int, samples: int | None) -> dict[str, list[tuple[float, int, float]]]:
    """``rounds`` epochs of each loop, taking turns: ``{"articles": [...], "reference": [...]}``, each epoch as
    ``timed`` gives it."""
    theirs = ArticlesLoop(model_name, root, samples)
    ours = TrainingRun.create(model_name, "cpu", "reference", data.load("mnist", root, train=True), samples=samples)
    theirs.epoch(WARM_UP)
    ours.warm_up()
    measured = {"articles": [], "reference": []}
    for round_number in range(1, rounds + 1):
        measured["articles"].append(timed(theirs.epoch))
        ours.restart()
        measured["reference"].append(timed(lambda: len(ours.epoch())))
        print(f"round {round_number}: " + ", ".join(f"{name} {seconds:.3f} s ({steps} steps, {faults:.1f} faults/step)"
                                                    for name, (seconds, steps, faults) in
                                                    ((n, m[-1]) for n, m in measured.items())), flush=True)
    return measured


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=models.names(), required=True)
    parser.add_argument("--rounds", type=int, default=ROUNDS_NEEDED,
                        help=f"epochs of each loop (default: {ROUNDS_NEEDED}, the fewest a side from which the rank "
                             f"test can call a difference significant)")
    parser.add_argument("--samples", type=int, help="the first N images of each shuffled epoch (default: all)")
    parser.add_argument("--allocator", choices=("default", "pinned"), default="default",
                        help="glibc's dynamic thresholds, as the articles' script runs (default), or pinned as the suite")
    parser.add_argument("--mnist-root", help=f"data root (default: ${data.ROOT_ENV}, else {data.DEFAULT_ROOT})")
    args = parser.parse_args(argv)
    if args.rounds < 1 or (args.samples is not None and args.samples < 1):
        parser.error("--rounds and --samples must be positive integers")
    if args.allocator == "pinned":
        allocator.pin()
    print(f"{args.model}, {torch.get_num_threads()} threads, allocator {allocator.state()}", flush=True)
    try:
        measured = alternate(args.model, data.resolve_root(args.mnist_root), args.rounds, args.samples)
    except (data.DataError, pytest.skip.Exception) as error:  # no data; the articles' code not found
        print(f"articles_vs_reference: {getattr(error, 'msg', error)}", file=sys.stderr)
        return 2
    medians = {name: statistics.median(seconds for seconds, _, _ in epochs) for name, epochs in measured.items()}
    test = rank_test(*([seconds for seconds, _, _ in measured[name]] for name in ("articles", "reference")))
    print(f"median: articles {medians['articles']:.3f} s, reference {medians['reference']:.3f} s; reference / articles "
          f"{medians['reference'] / medians['articles']:.3f}; " + (f"p {test.p:.2g}" if test.p is not None else test.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
