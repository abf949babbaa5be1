"""Files written whole or not at all: model files, stored results, reports, caches, extracted data.

Every file the suite writes goes through a temporary file beside it, renamed into place only when
complete, so that Ctrl-C, a kill or a full disk leaves the old file or the new one, never half of one.
"""
import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def replacing(target: str | os.PathLike):
    """A path beside ``target`` for the block to write, renamed onto ``target`` if the block succeeds and
    removed otherwise. Its name starts with a dot and ends in ``.partial``, so no ``*.json`` or ``*-ubyte``
    pattern reads it, and holds the process id, so concurrent processes (pytest-xdist workers, ranks)
    never write the same one."""
    target = Path(target)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
