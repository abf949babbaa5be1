"""Stopping a run as Ctrl-C does: SIGTERM (``timeout``'s default signal, a cancelled CI job, ``docker stop``, the
torchrun agent stopping its ranks after a Ctrl-C or a failed rank) raises ``KeyboardInterrupt``, so that the code
that keeps the finished work on Ctrl-C (the benchmarks that finished, the last complete epoch) keeps it on SIGTERM
too, and says so; by default SIGTERM ends the process with nothing said and no ``finally`` run."""
import signal
import threading


def stop_as_ctrl_c(signum, frame):
    """A signal handler: stop as Ctrl-C would."""
    raise KeyboardInterrupt


def sigterm_as_ctrl_c():
    """Make SIGTERM stop this process as Ctrl-C would, where it has its default action and this is the main thread
    (only there can Python handle a signal): the handler it replaced, to hand to ``restore``, or None."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        return signal.signal(signal.SIGTERM, stop_as_ctrl_c)
    return None


def restore(previous) -> None:
    """SIGTERM's handler as ``sigterm_as_ctrl_c`` found it (a run inside a process, a test's, leaves it as found)."""
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
