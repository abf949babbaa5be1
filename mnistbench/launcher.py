"""torchrun started from the suite as a subprocess (forking inside pytest hangs): a rendezvous on a free port
of 127.0.0.1, each rank's share of the cores, a deadline, and one message naming the rank and the cause
when a rank fails.

When a rank fails, torchrun stops the others and prints every failed rank with its exit code and the error
file in which ``@record`` saved its exception. The first of those in torchrun's "Root Cause" is chosen by
timestamps in whole seconds, so a rank that failed only because its peer vanished (gloo's "Connection
closed by peer") can take the blame; ``failure`` instead names a rank that died on its own without a
Python error (a crash), else the rank whose error file was written first.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

HOST = "127.0.0.1"
# The wall-clock time torchrun was started, for the ranks to measure the launch (process start, rendezvous).
LAUNCHED_AT_ENV = "MNISTBENCH_LAUNCHED_AT"
# After SIGTERM torchrun gives its ranks 30 s to stop before it kills them.
STOP_GRACE_SECONDS = 45
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # holds mnistbench/ and models/ for the ranks to import


class LaunchError(RuntimeError):
    """torchrun could not start, a rank failed, or the run passed its deadline."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def check_port(port: int) -> None:
    """A rendezvous endpoint held by another program makes torchrun wait forever; refuse it up front."""
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError as error:
            raise LaunchError(f"port {port} on {HOST} is already in use ({error.strerror}): torchrun's rendezvous "
                              f"would wait on it; choose another port, or none to use a free one") from None


def check_ranks(device: str, ranks_per_node: int) -> None:
    """One GPU per rank: more ranks than GPUs is an error before anything starts."""
    if torch.device(device).type == "cuda" and ranks_per_node > torch.cuda.device_count():
        raise LaunchError(f"{ranks_per_node} ranks on {device} need one GPU each, and this machine has "
                          f"{torch.cuda.device_count()}")


def command(entry: list[str], *, ranks_per_node: int, nodes: int = 1, port: int, log_dir: Path) -> list[str]:
    """torchrun running ``entry`` (``-m module ...`` or ``script.py ...``), its c10d rendezvous on ``HOST:port``,
    the ranks' error files under ``log_dir``."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc-per-node={ranks_per_node}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={HOST}:{port}", "--max-restarts=0", f"--log-dir={log_dir}",
            *entry]


def run(entry: list[str], *, workdir: Path, ranks_per_node: int, nodes: int = 1, device: str = "cpu",
        threads_per_rank: int = 1, port: int | None = None, timeout_seconds: float) -> list[Path]:
    """Run ``entry`` under torchrun with ``ranks_per_node`` ranks on each of ``nodes`` agents, all on this host
    (more than one agent simulates several machines), each rank with ``threads_per_rank`` CPU threads; returns
    the files holding each agent's output.

    Raises ``LaunchError`` naming the failed rank and its error, or saying that the run passed
    ``timeout_seconds`` (then every agent is stopped and, through them, every rank).
    """
    check_ranks(device, ranks_per_node)
    if port is None:
        port = free_port()
    else:
        check_port(port)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_rank), LAUNCHED_AT_ENV: repr(time.time()),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}
    agents, logs = [], []
    try:
        for node in range(nodes):
            logs.append(workdir / f"node{node}.log")
            with open(logs[-1], "wb") as log:
                agents.append(subprocess.Popen(
                    command(entry, ranks_per_node=ranks_per_node, nodes=nodes, port=port,
                            log_dir=workdir / f"node{node}"), stdout=log, stderr=subprocess.STDOUT, env=env))
        deadline = time.monotonic() + timeout_seconds
        for agent in agents:
            try:
                agent.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop(agents)
                raise LaunchError(f"torchrun did not finish within {timeout_seconds:.0f} s and was stopped; "
                                  f"its last output:\n{tail(logs)}") from None
    finally:
        stop(agents)  # only still-running agents: after an interruption of this process, say
    failed = [failure(log.read_text(errors="replace"), agent.returncode)
              for agent, log in zip(agents, logs) if agent.returncode != 0]
    if failed:
        raise LaunchError("; ".join(failed))
    return logs


def stop(agents: list[subprocess.Popen]) -> None:
    """SIGTERM each running agent, which stops its ranks; SIGKILL what is left after the grace period."""
    running = [agent for agent in agents if agent.poll() is None]
    for agent in running:
        agent.send_signal(signal.SIGTERM)
    for agent in running:
        try:
            agent.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


# One failed rank in torchrun's report: "rank : 1 (local_rank: 1)", "exitcode : 1 (pid: 42)", "error_file: PATH".
_FAILED_RANK = re.compile(r"^\s*rank\s*:\s*(\d+).*\n\s*exitcode\s*:\s*(-?\d+).*\n\s*error_file\s*:\s*(\S+)", re.MULTILINE)


def failure(output: str, status: int) -> str:
    """One line naming the rank that failed first and why, from torchrun's report in ``output``."""
    failed = {(int(rank), int(code), path) for rank, code, path in _FAILED_RANK.findall(output)}
    # A rank without an error file that torchrun did not stop itself (SIGTERM) crashed on its own.
    crashed = sorted((rank, code) for rank, code, path in failed if not Path(path).is_file() and code != -signal.SIGTERM)
    if crashed:
        rank, code = crashed[0]
        cause = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code} without a Python error"
        return f"rank {rank} failed: {cause}"
    recorded = sorted((Path(path).stat().st_mtime_ns, rank, path) for rank, code, path in failed if Path(path).is_file())
    if recorded:
        _, rank, path = recorded[0]
        message = json.loads(Path(path).read_text())["message"]
        cause = (message["message"] if isinstance(message, dict) else message).strip().splitlines()[0]
        return f"rank {rank} failed: {cause}"
    last = [line.strip() for line in output.splitlines() if line.strip()][-1:] or ["no output"]
    return f"torchrun exited with status {status}: {last[0]}"


def tail(logs: list[Path], lines: int = 15) -> str:
    return "\n".join(line for log in logs for line in log.read_text(errors="replace").splitlines()[-lines:])
