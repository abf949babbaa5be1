"""Short keys for machine identities, as asv names its machines: each identity named once, in a legend.

A machine identity (``mnistbench.machine.identity``) is long, because everything in it decides speed: a
table that repeats it in every row is over 200 characters wide. The Markdown tables therefore write ``m1``,
``m2``... and print the identities once above the table; CSV and JSON keep the identity in every row, as
data should. Keys are numbered in the order the machines first appear in the results read (oldest run
first), so the same results give the same keys in every command, and a key names a machine on the
command line (``mnistbench compare m1 m2``).
"""
from .results import Result


class SelectionError(ValueError):
    """A machine named on the command line that the results hold none of, or more than one of."""


def keys(results: list[Result]) -> dict[str, str]:
    """``{identity: key}`` for every machine of ``results`` (in time order): ``m1`` for the first to appear."""
    ordered = dict.fromkeys(result.machine for result in results)
    return {identity: f"m{number}" for number, identity in enumerate(ordered, start=1)}


def extended(machine_keys: dict[str, str], results: list[Result]) -> dict[str, str]:
    """``machine_keys`` with the next keys for the machines of ``results`` (in time order) that it lacks: a
    machine named by its key among the stored results keeps that key beside a file read from elsewhere."""
    new = [identity for identity in keys(sorted(results, key=lambda result: result.run_time))
           if identity not in machine_keys]
    return {**machine_keys, **{identity: f"m{number}" for number, identity in enumerate(new, len(machine_keys) + 1)}}


def legend(used: list[str], machine_keys: dict[str, str]) -> list[str]:
    """One Markdown list line per machine of ``used`` (identities, in key order): ``- m1: AMD EPYC (...)``; a line
    break in a hand-edited identity written as a space."""
    return [f"- {key}: {identity}".replace("\n", " ") for identity, key in machine_keys.items() if identity in used]


def select(text: str, results: list[Result]) -> list[Result]:
    """The results of the one machine ``text`` names: its key (``m2``), its identity in full, or a part of it
    that only one identity holds (``26/2/1``). ``SelectionError`` naming the candidates otherwise."""
    machine_keys = keys(results)
    by_key = {key: identity for identity, key in machine_keys.items()}
    if text in by_key:
        chosen = [by_key[text]]
    elif text in machine_keys:
        chosen = [text]
    else:
        chosen = [identity for identity in machine_keys if text in identity]
    if len(chosen) != 1:
        candidates = chosen or list(machine_keys)
        what = "more than one machine" if chosen else "no machine"
        raise SelectionError(f"{text!r} is no file or folder, and names {what} of the results read; choose one of: "
                             + "; ".join(f"{machine_keys[identity]} = {identity}" for identity in candidates))
    return [result for result in results if result.machine == chosen[0]]


def one_host(name: str, results: list[Result]) -> list[Result]:
    """``results``, read from the file or folder ``name``, if they come from one machine (one host CPU, whatever
    its devices); ``SelectionError`` naming the machines otherwise, one of which the command line must name."""
    if len({result.host for result in results}) > 1:
        machine_keys = keys(results)
        raise SelectionError(f"{name} holds the results of more than one machine; name one of them instead: "
                             + "; ".join(f"{key} = {identity}" for identity, key in machine_keys.items()))
    return results
