"""Whether two runs' rounds differ more than their noise explains: a rank test on the raw rounds, as asv does.

The Mann-Whitney U test (through scipy) asks whether one run's rounds tend to be slower than the other's,
without assuming any distribution of the times. Two-sided, at ``ALPHA`` = 0.002, asv's threshold: a history
tests every benchmark of every new run, and at 0.05 one benchmark in twenty would be called changed by
chance alone. With few rounds no ordering is rare enough: with n and m rounds the smallest two-sided p is
2 / C(n + m, n) (one side's rounds all faster than the other's), 0.33 with 2 rounds a side, 0.0022 with 6
and 0.00058 with 7, so a change can be called significant only from 7 rounds a side (``ROUNDS_NEEDED``);
with fewer the test is not made and ``Test.note`` says so. Rounds of one run share its process and its
machine's mood, so the test only says the rounds differ; whether that is a change of the code is for the
threshold and the run-to-run noise to say (``history``).
"""
import math
from dataclasses import dataclass

ALPHA = 0.002


def smallest_p(n: int, m: int) -> float:
    """The smallest two-sided p the exact Mann-Whitney test can give for ``n`` and ``m`` rounds (no ties)."""
    return min(1.0, 2 / math.comb(n + m, n)) if n and m else 1.0


ROUNDS_NEEDED = next(n for n in range(1, 100) if smallest_p(n, n) < ALPHA)


@dataclass(frozen=True)
class Test:
    p: float | None  # two-sided, None where no test could be made
    note: str = ""  # why no test was made

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < ALPHA


def rank_test(before, after) -> Test:
    """Mann-Whitney U on two runs' rounds (seconds each), or why it cannot tell: a run without stored rounds,
    or too few rounds for any p below ``ALPHA``."""
    if before is None or after is None:
        return Test(None, "rounds not stored: judged by their spread")
    if smallest_p(len(before), len(after)) >= ALPHA:
        return Test(None, f"too few rounds to test ({len(before)} and {len(after)}: p cannot go below "
                          f"{smallest_p(len(before), len(after)):.2g}; {ROUNDS_NEEDED} a side can reach {ALPHA:g})")
    from scipy.stats import mannwhitneyu  # here, not at the top: scipy.stats costs every process 0.7 s to import

    return Test(float(mannwhitneyu(before, after, alternative="two-sided").pvalue))
