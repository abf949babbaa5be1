"""The data-parallel benchmark's rank program with one fault: rank 1 raises after two steps of its timed
epoch, while rank 0 waits for it in the next all-reduce. test_distributed.py starts it through torchrun."""
import os

from mnistbench import distributed, training

FAILING_RANK, STEPS_BEFORE_FAILURE = 1, 2
timed_epoch = training.TrainingRun.epoch


def failing_epoch(self, batches=None):
    def fail_mid_epoch(batches):
        for step, batch in enumerate(batches):
            if step == STEPS_BEFORE_FAILURE and int(os.environ["RANK"]) == FAILING_RANK:
                raise RuntimeError(f"rank {FAILING_RANK} fails after {step} steps of the timed epoch")
            yield batch

    return timed_epoch(self, fail_mid_epoch(self.pipeline if batches is None else batches))


training.TrainingRun.epoch = failing_epoch
distributed.main()
