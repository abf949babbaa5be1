"""Data-parallel training through ``torch.distributed``: what each rank that torchrun starts does.

torchrun starts one process per rank and tells it its place in environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``GROUP_WORLD_SIZE``), beside variables of its own (``TORCHELASTIC_RUN_ID``).
Those it shares with other launchers may be left over in a plain shell (a SLURM job, an exported torchrun
environment): a process that torchrun did not start trains alone and says which it ignored, instead of
waiting up to 600 s for ranks that will never come. Each rank joins the process group (``gloo`` on
CPUs, ``nccl`` with one CUDA GPU per rank) and builds the same ``TrainingRun`` a single process would, with
two differences: its pipeline yields the rank's slice of every epoch, and the network runs inside
``DistributedDataParallel``, which averages the gradients over the ranks during the backward pass. The
batch size stays the recipe's per rank (weak scaling), so the global batch grows with the ranks.

``python -m mnistbench.distributed`` is the rank program of the data-parallel benchmark: untimed warm-up,
then one timed epoch of the rank's shard, every step timed with the device synchronised; rank 0 gathers
every rank's step times and writes them, with the ranks' losses and weight digests, to a JSON report.
"""
import argparse
import hashlib
import json
import os
import statistics
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel

from . import allocator, atomic, data, devices, energy, launcher, metrics
from .reports.scaling import scaling_efficiency
from .training import TrainingRun

# Why this benchmark's rounds are single steps, unlike the epochs and step loops of the others.
TIMING = ("each step timed on every rank with its device synchronised before and after, and the slowest rank's "
          "time kept: a data-parallel step is as slow as its slowest rank, which whole-epoch timing would hide")
# Why this benchmark's results carry no energy figure.
UNMEASURED_ENERGY = ("the steps are timed inside torchrun's rank processes; the benchmark's own process sees only "
                     "the whole launch, whose energy would count start-up, data loading and warm-up with them")
# DistributedDataParallel's own default bucket size, passed explicitly so that every result records it.
BUCKET_CAP_MB = 25
DEFAULT_TIMEOUT_SECONDS = 600
# Under torch 2.11 a gloo worker thread frees the tensors of the collective it has just run only once it holds
# Python's lock, and the process group's destructor (run when DistributedDataParallel is freed) joins that
# thread with the lock held: a rank then hung at its end in 7 of 7 runs of the test command's 2-rank case with
# pytest's output piped. A pause with the lock released before leaving the group lets the workers finish (4 of 4
# such runs passed with 0.2 s); torch 2.14.1 never hung without it. docs/data-parallel.md has the stacks.
TEARDOWN_PAUSE_SECONDS = 0.2
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}
# The env:// variables a launcher sets for its ranks, which torch.distributed reads.
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                  "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """Whether torchrun started this process as one rank of a distributed run: its ``env://`` variables are set,
    and ``TORCHELASTIC_RUN_ID``, which torchrun alone sets."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"))


def ignored_rank_variables() -> tuple[str, ...]:
    """``NAME=value`` of each launcher variable set in a process that torchrun did not start (none in a rank)."""
    if launched_by_torchrun():
        return ()
    return tuple(f"{name}={os.environ[name]}" for name in RANK_VARIABLES if name in os.environ)


@dataclass
class Rank:
    """This process's place in a data-parallel run; a process that torchrun did not start is rank 0 of 1."""

    device: str
    rank: int = 0
    world_size: int = 1
    nodes: int = 1
    backend: str | None = None  # None: a single process, no process group
    ignored: tuple[str, ...] = ()  # launcher variables left over in a process that torchrun did not start

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, evaluates and saves."""
        return self.rank == 0

    def __str__(self) -> str:
        if self.backend is None and self.ignored:
            return f"a single process (torchrun did not start it: {' '.join(self.ignored)} ignored)"
        if self.backend is None:
            return "a single process"
        return f"data-parallel over {self.world_size} rank(s) on {self.nodes} node(s) ({self.backend})"

    def wrap(self, network: nn.Module) -> nn.Module:
        """``network`` in ``DistributedDataParallel`` (unchanged in a single process). DDP copies rank 0's
        weights to every rank; from here on each rank draws its own dropout masks, as its data differ too."""
        if self.backend is None:
            return network
        if isinstance(network, torch._dynamo.eval_frame.OptimizedModule):
            raise ValueError("a torch.compile'd network cannot be wrapped in DistributedDataParallel here; "
                             "use an eager setup (reference, resident) for data-parallel training")
        torch.manual_seed(torch.initial_seed() + self.rank)
        device_ids = [self.device] if self.backend == "nccl" else None
        return DistributedDataParallel(network, device_ids=device_ids, bucket_cap_mb=BUCKET_CAP_MB)

    def average(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over all ranks (the value itself in a single process)."""
        if self.backend is None:
            return value
        value = value.detach().to(self.device, torch.float32).clone()
        dist.all_reduce(value)
        return value.cpu() / self.world_size

    def close(self) -> None:
        """Leave the process group, once its worker threads have freed the last collective's tensors
        (``TEARDOWN_PAUSE_SECONDS``)."""
        if self.backend is not None and dist.is_initialized():
            time.sleep(TEARDOWN_PAUSE_SECONDS)
            dist.destroy_process_group()


def join(device: str = "cpu", timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Rank:
    """This process's ``Rank``; when torchrun started it, it joins the process group first.

    On CUDA each rank takes the GPU of its local rank, ``cuda:LOCAL_RANK``, whatever index ``device``
    names. Every collective waits at most ``timeout_seconds`` for the other ranks, so a rank that hangs
    makes the others fail with a timeout instead of waiting forever.
    """
    if not launched_by_torchrun():
        return Rank(device, ignored=ignored_rank_variables())
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    kind = torch.device(device).type
    if kind not in BACKENDS:
        raise ValueError(f"data-parallel training runs on cpu (gloo) or cuda (nccl), not on {device}")
    if kind == "cuda":
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            raise ValueError(f"local rank {local_rank} has no GPU of its own: this node has {gpus} "
                             f"GPU(s); start at most {gpus} rank(s) per node (torchrun --nproc-per-node)")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    backend = BACKENDS[kind]
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds),
                            device_id=torch.device(device) if kind == "cuda" else None)
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", 1))
    return Rank(device, rank, world_size, nodes, backend)


class StepTimer:
    """Wraps an epoch's batches and records each step's wall time, the device synchronised before and after:
    from handing a batch (already sliced) to the training loop until the loop asks for the next one."""

    def __init__(self, batches: Iterable, device: str):
        self.batches = batches
        self.device = device
        self.seconds: list[float] = []

    def __iter__(self) -> Iterator:
        for batch in self.batches:
            devices.synchronize(self.device)
            start = time.perf_counter()
            yield batch
            devices.synchronize(self.device)
            self.seconds.append(time.perf_counter() - start)


def weights_digest(model: nn.Module) -> str:
    """A SHA-256 of every value of the model's ``state_dict``: equal digests mean bit-identical models."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def measure_steps(model_name: str, device: str, dataset: str = "mnist", root=None, *, samples: int | None = None,
                  seed: int = 0, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> dict | None:
    """On every rank: the article's recipe on resident data in fp32, warmed up untimed, then one timed epoch
    of the rank's shard of ``samples`` images (by default the whole split). Returns the report on rank 0,
    None on the others."""
    member = join(device, timeout_seconds)
    ready_at = time.time()
    try:
        train_set = data.load(dataset, root, train=True)
        devices.reset_peak_memory(member.device)  # before the warm-up, as every other benchmark does
        run = TrainingRun.create(model_name, member.device, "resident", train_set, samples=samples, seed=seed,
                                 shard=member.shard, wrap_model=member.wrap)
        run.warm_up()
        if member.backend is not None:
            dist.barrier()  # every rank starts its clock at the same moment
        timer = StepTimer(run.pipeline, member.device)
        faults = allocator.minor_faults()
        losses = run.epoch(timer)
        faults = allocator.minor_faults() - faults
        mine = {
            "rank": member.rank, "device": member.device,
            "device_name": devices.name(member.device), "threads": torch.get_num_threads(), "ready_at": ready_at,
            "first_step_seconds": run.first_step_seconds, "warm_up_seconds": run.warm_up_seconds,
            "step_seconds": timer.seconds, "losses": losses.tolist(),
            "minor_faults_per_step": round(faults / max(1, len(timer.seconds)), 1),
            "weights_digest": weights_digest(run.model), "peak_memory_mib": devices.peak_memory(member.device)[0],
        }
        everyone = [mine]
        if member.backend is not None:
            everyone = [None] * member.world_size
            dist.all_gather_object(everyone, mine)
    finally:
        member.close()
    if not member.is_main:
        return None
    launched_at = os.environ.get(launcher.LAUNCHED_AT_ENV)
    return {
        "model": model_name, "world_size": member.world_size, "nodes": member.nodes, "backend": member.backend,
        "batch_size": run.pipeline.batch_size, "bucket_cap_mb": BUCKET_CAP_MB,
        # A step is as slow as its slowest rank; the loss of a step is the mean over the ranks.
        "step_seconds": [max(times) for times in zip(*(r["step_seconds"] for r in everyone))],
        "losses": [sum(values) / len(values) for values in zip(*(r["losses"] for r in everyone))],
        "launch_seconds": max(r["ready_at"] for r in everyone) - float(launched_at) if launched_at else None,
        "ranks": everyone,
    }


@dataclass
class StepReport:
    """What the ranks measured, as rank 0 wrote it (see ``measure_steps``)."""

    model: str
    world_size: int
    nodes: int
    backend: str | None
    batch_size: int  # per rank
    bucket_cap_mb: int
    step_seconds: list[float]  # per timed step, the slowest rank's time
    losses: list[float]  # per timed step, the mean over the ranks
    launch_seconds: float | None  # from starting torchrun until the last rank joined the process group
    ranks: list[dict]

    @classmethod
    def read(cls, path) -> "StepReport":
        return cls(**json.loads(Path(path).read_text()))

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def digests(self) -> set[str]:
        return {rank["weights_digest"] for rank in self.ranks}

    def extra_info(self, benchmark, *, dataset: str, one_rank_images_per_second: float | None = None) -> dict:
        """The suite's ``extra_info`` for a data-parallel step: the per-device fields of rank 0 (the worst
        rank's peak memory), the world, and throughput in total, per rank and against one rank of the
        same run (``one_rank_images_per_second``; a one-rank report is its own)."""
        main = self.ranks[0]
        info = metrics.extra_info(
            benchmark, kind="distributed", model_name=self.model, device=main["device"], batch_size=self.batch_size,
            samples=self.global_batch_size, dataset=dataset, pipeline="resident", train=True,
            final_loss=self.losses[-1], first_step_seconds=max(rank["first_step_seconds"] for rank in self.ranks),
            warm_up_seconds=max(rank.get("warm_up_seconds") or 0 for rank in self.ranks) or None)
        info.update({
            **energy.unavailable(UNMEASURED_ENERGY),
            "timing": TIMING,
            "device_name": main["device_name"], "threads": main["threads"],  # the ranks' own, not this process's
            "peak_memory_mib": round(max(rank["peak_memory_mib"] for rank in self.ranks), 1),
            "world_size": self.world_size, "nodes": self.nodes, "backend": self.backend,
            "global_batch_size": self.global_batch_size, "bucket_cap_mb": self.bucket_cap_mb,
            "threads_per_rank": main["threads"], "timed_steps": len(self.step_seconds),
            "launch_seconds": self.launch_seconds,
            **({"minor_faults_per_step": max(rank["minor_faults_per_step"] for rank in self.ranks)}
               if all("minor_faults_per_step" in rank for rank in self.ranks) else {}),
            "rank_images_per_second": [self.batch_size / statistics.median(rank["step_seconds"]) for rank in self.ranks],
        })
        if "images_per_second" in info:  # timed by pytest-benchmark
            total = info["images_per_second"]
            one_rank = total if self.world_size == 1 else one_rank_images_per_second
            info["images_per_second_per_rank"] = total / self.world_size
            info["scaling_efficiency"] = scaling_efficiency(total, self.world_size, one_rank)
            if "peak_tflops" in info:  # the peak of all the ranks' devices together
                info["peak_tflops"] *= self.world_size
                info["utilisation"] /= self.world_size
        return info


class ReplayClock:
    """pytest-benchmark's timer for step times measured inside the ranks: each call of ``advance`` moves it on
    by the next recorded time, so the rounds pytest-benchmark stores are exactly those measurements."""

    def __init__(self):
        self.now = 0.0
        self.recorded: list[float] = []

    def __repr__(self) -> str:  # pytest-benchmark stores this as the timer of each result
        return "mnistbench ReplayClock: per-step wall time of the slowest rank, measured inside the ranks"

    def __call__(self) -> float:
        return self.now

    def load(self, seconds: list[float]) -> int:
        """Queue ``seconds`` to replay; returns how many rounds they make."""
        self.recorded = list(seconds)
        return len(self.recorded)

    def advance(self) -> None:
        self.now += self.recorded.pop(0)


def world_sizes(devices_available: int) -> list[int]:
    """The world sizes to measure on ``devices_available`` devices: 1, 2, 4, ... and all of them."""
    sizes = [1]
    while sizes[-1] * 2 <= devices_available:
        sizes.append(sizes[-1] * 2)
    return sizes + ([devices_available] if devices_available > sizes[-1] else [])


def launch_steps(model_name: str, device: str, world_size: int, *, workdir: Path, dataset: str = "mnist", root=None,
                 samples: int | None = None, threads_per_rank: int = 1, timeout_seconds: float,
                 collective_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, entry: list[str] | None = None,
                 ) -> StepReport:
    """Run ``measure_steps`` on ``world_size`` ranks through torchrun (``launcher.run``) and read rank 0's
    report; ``entry`` replaces the rank program (``python -m mnistbench.distributed``) with another that
    takes the same arguments. Raises ``launcher.LaunchError`` naming the rank that failed and why."""
    out = workdir / "report.json"
    arguments = ["--model", model_name, "--device", device, "--dataset", dataset, "--seed", "0",
                 "--timeout", str(collective_timeout_seconds), "--out", str(out)]
    arguments += ["--mnist-root", str(root)] if root else []
    arguments += ["--samples", str(samples)] if samples else []
    launcher.run((entry or ["-m", __name__]) + arguments, workdir=workdir, ranks_per_node=world_size, device=device,
                 threads_per_rank=threads_per_rank, timeout_seconds=timeout_seconds)
    return StepReport.read(out)


@record
def main(argv=None) -> None:
    """The benchmark's rank program, run by torchrun: ``measure_steps``, the report written by rank 0."""
    parser = argparse.ArgumentParser(prog="python -m mnistbench.distributed", description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl, one GPU per rank)")
    parser.add_argument("--dataset", default="mnist", choices=data.DATASETS)
    parser.add_argument("--mnist-root")
    parser.add_argument("--samples", type=int, help="images per timed epoch, over all ranks (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help="seconds a collective waits for the other ranks")
    parser.add_argument("--out", required=True, help="JSON report, written by rank 0")
    args = parser.parse_args(argv)
    allocator.pin()  # every rank in the allocator state of the suite's own process
    report = measure_steps(args.model, args.device, args.dataset, args.mnist_root, samples=args.samples,
                           seed=args.seed, timeout_seconds=args.timeout)
    if report is not None:
        with atomic.replacing(args.out) as partial:
            partial.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
