"""What a timed case records besides its times, read around its rounds by watchers: how much energy the
device used, how quiet the machine was. Each kind of watcher is one module that registers a factory here;
the benchmarks only open ``watching(device)`` around their timed rounds and add what it found to their
``extra_info``.

A watcher is started right before the timed rounds, told when each round is about to begin where rounds
have an untimed ``setup`` (epochs, time to accuracy; a step benchmark's rounds are one window), paused during
that setup and while a time-to-accuracy run evaluates (the clock stops then, and so should whatever counts
against the training), and stopped after the last round, when it returns the fields it adds to the result.
"""
import contextlib
from collections.abc import Callable, Collection, Iterator
from typing import Protocol


class Watcher(Protocol):
    def start(self) -> None: ...

    def lap(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def stop(self) -> dict: ...


# Factories of the watchers every timed case gets, by device (e.g. ``cpu``, ``cuda:0``), in the order
# ``watching`` starts them; ``INNERMOST``, those kept after all the others (``register``).
WATCHERS: list[Callable[[str], Watcher]] = []
INNERMOST: set[Callable[[str], Watcher]] = set()


def register(make: Callable[[str], Watcher], *, innermost: bool = False) -> None:
    """Give every timed case a watcher made by ``make``. An ``innermost`` one (energy) stays after all the
    others whatever order their modules were imported in (the ``mnistbench train`` job imports energy before
    quiet), so that it watches only the rounds, not the others' readings."""
    if innermost:
        INNERMOST.add(make)
    WATCHERS.append(make)
    WATCHERS.sort(key=lambda factory: factory in INNERMOST)  # stable: the others keep their order


class Watching:
    """The watchers of one case while its rounds run; ``info`` holds their fields once the block is left."""

    def __init__(self, watchers: list[Watcher]):
        self.watchers = watchers
        self.info: dict = {}

    def lap(self) -> None:
        """A round is about to begin (called untimed, before each round, the first included, inside ``paused``:
        no watcher's own reading at a lap, the quiet canary's say, then counts against another's round)."""
        for watcher in self.watchers:
            watcher.lap()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time that does not count (the setup before a round, a time-to-accuracy run's evaluation)."""
        for watcher in self.watchers:
            watcher.pause()
        try:
            yield
        finally:
            for watcher in self.watchers:
                watcher.resume()


@contextlib.contextmanager
def watching(device: str, leave_out: Collection[Callable[[str], Watcher]] = ()) -> Iterator[Watching]:
    """Every registered watcher of ``device`` but those ``leave_out`` makes, around the block (the case's timed
    rounds), nested: started in ``WATCHERS``' order and stopped in reverse, so that the innermost (energy)
    watches only the rounds and not the readings of the others (the quiet canary)."""
    watched = Watching([make(device) for make in WATCHERS if make not in leave_out])
    for watcher in watched.watchers:
        watcher.start()
    try:
        yield watched
    finally:
        for watcher in reversed(watched.watchers):
            watched.info.update(watcher.stop())
