"""The uplift of a campaign's sends over its controls, with a confidence interval.

The interval is Newcombe's hybrid score interval for the difference of two independent
proportions (Newcombe 1998, method 10), as statsmodels computes it
(`statsmodels.stats.proportion.confint_proportions_2indep(method="newcomb")`): it behaves
at the small rates and small control groups campaigns have, where the Wald interval does not.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

__all__ = ["Uplift", "uplift", "uplifts", "intervals_ahead", "MIN_CONTROLS"]

# Below this many controls an uplift is not shown as a figure: with a 5% holdout, a campaign
# needs about 2,000 sends before its control group says anything.
MIN_CONTROLS = 100


@dataclass(frozen=True)
class Uplift:
    """Conversion rates (fractions, 0..1) and their difference. `low`/`high` bound the 95%
    interval of `absolute`; None when there are no sends or too few controls (`note` says
    which)."""
    sends: int
    send_conversions: int
    controls: int
    control_conversions: int
    send_rate: Optional[float]
    control_rate: Optional[float]
    absolute: Optional[float]           # send_rate - control_rate
    low: Optional[float]
    high: Optional[float]
    relative: Optional[float]           # absolute / control_rate; None when control_rate is 0
    incremental: Optional[float]        # absolute * sends: conversions the campaign caused
    note: str                           # "", "not significant", "too few controls", "no sends"

    def shown(self) -> str:
        """`+5.0pp [+1.2, +8.8]`, or the note when there is no figure: for tables."""
        if self.absolute is None:
            return self.note
        text = f"{self.absolute * 100:+.1f}pp [{self.low * 100:+.1f}, {self.high * 100:+.1f}]"
        return f"{text} not significant" if self.note else text


def uplift(sends: int, send_conversions: int, controls: int, control_conversions: int, *,
           min_controls: int = MIN_CONTROLS, alpha: float = 0.05) -> Uplift:
    """The uplift of `sends` (contacts sent, of which `send_conversions` converted) over
    `controls`. Counts are contacts; conversions are counted once per contact. Raises
    ValueError for negative counts or more conversions than contacts."""
    return uplifts([(sends, send_conversions, controls, control_conversions)], min_controls=min_controls,
                   alpha=alpha)[0]


def uplifts(counts: Sequence[tuple[int, int, int, int]], *, min_controls: int = MIN_CONTROLS,
            alpha: float = 0.05) -> list[Uplift]:
    """uplift() of each (sends, send_conversions, controls, control_conversions), with one
    call of statsmodels for all of them (a report has hundreds: campaigns x variants x days)."""
    for sends, send_conversions, controls, control_conversions in counts:
        for name, count, total in (("send", send_conversions, sends), ("control", control_conversions, controls)):
            if count < 0 or total < 0 or count > total:
                raise ValueError(f"{name} conversions {count} of {total} contacts")
    measured = [i for i, (sends, _, controls, _) in enumerate(counts) if sends and controls >= min_controls]
    intervals = {}
    if measured:
        n1, x1, n2, x2 = ([int(counts[i][k]) for i in measured] for k in range(4))
        low, high = _from_ahead(x1, n1, x2, n2, alpha) or _newcombe(x1, n1, x2, n2, alpha)
        intervals = {i: (float(a), float(b)) for i, a, b in zip(measured, low, high)}
    return [_figure(*c, intervals.get(i), min_controls) for i, c in enumerate(counts)]


def _newcombe(x1: list[int], n1: list[int], x2: list[int], n2: list[int], alpha: float) -> tuple[list, list]:
    """statsmodels' Newcombe intervals of x1/n1 - x2/n2, in this process: (lows, highs)."""
    from statsmodels.stats.proportion import confint_proportions_2indep
    import numpy as np
    low, high = confint_proportions_2indep(*(np.array(v, np.int64) for v in (x1, n1, x2, n2)),
                                           method="newcomb", compare="diff", alpha=alpha)
    return np.atleast_1d(low).tolist(), np.atleast_1d(high).tolist()


# The child of intervals_ahead: the same call as _newcombe, one JSON line of counts in, one of
# intervals out. It imports neither sigmatch nor anything but NumPy and statsmodels, so it runs
# wherever the interpreter that started it does. JSON keeps a float's every bit (repr).
_CHILD = """\
import json, os, sys
# The lowest priority: with `--workers N` every core streams, and an import that took a
# core's second from them slowed the run; idle cores, or the parent waiting for the answer,
# still give it all it needs.
try:
    os.nice(19)
except OSError:
    pass
import numpy as np
from statsmodels.stats.proportion import confint_proportions_2indep
for line in sys.stdin:
    x1, n1, x2, n2, alpha = json.loads(line)
    low, high = confint_proportions_2indep(*(np.array(v, np.int64) for v in (x1, n1, x2, n2)),
                                           method="newcomb", compare="diff", alpha=alpha)
    sys.stdout.write(json.dumps([np.atleast_1d(low).tolist(), np.atleast_1d(high).tolist()]) + "\\n")
    sys.stdout.flush()
"""

_ahead: Optional[subprocess.Popen] = None
_ahead_lock = threading.Lock()
# Seconds the funnel waits for the child's answer once it asks (the import takes about 1 s,
# and has had the whole run): a child stopped or stuck past it is killed, and the figures
# are computed here, as when it failed.
ANSWER_S = 10.0


@contextlib.contextmanager
def intervals_ahead(wanted: bool = True) -> Iterator[None]:
    """While the block runs, import statsmodels in a child process, so that the uplifts
    computed at its end do not wait for it. The import (scipy, pandas) takes about 1 s on the
    development VM, more than half of a 100k-subscriber `sigmatch replay`; a replay's main
    thread and its sinks use one core, so the child's import runs beside them rather than
    after them. uplifts() inside the block asks the child; a child that failed, or is gone,
    is replaced by the same call in this process (same library, same figures, the same error
    if statsmodels is missing). `wanted` False, or no interpreter to start: nothing is
    started. The child is stopped when the block ends; one killed with its parent exits at
    its end of input."""
    global _ahead
    child = None
    # already imported here (a second command in one process): nothing to gain
    if wanted and sys.executable and "statsmodels.stats.proportion" not in sys.modules:
        try:
            # -P: the current directory is not on the child's path (a json.py left in a
            # shared directory would run in it)
            child = subprocess.Popen([sys.executable, "-P", "-c", _CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            child = None
    with _ahead_lock:
        outer, _ahead = _ahead, child or _ahead
    try:
        yield
    finally:
        with _ahead_lock:
            _ahead = outer
        if child is not None:
            child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                with contextlib.suppress(OSError):
                    stream.close()


def _from_ahead(x1, n1, x2, n2, alpha: float) -> Optional[tuple[list, list]]:
    """The intervals from intervals_ahead's child; None when there is none or it failed
    (the caller then computes them here)."""
    global _ahead
    with _ahead_lock:
        child = _ahead
        if child is None:
            return None
        # a child that does not answer in time is killed: its readline then ends
        deadline = threading.Timer(ANSWER_S, child.kill)
        deadline.start()
        try:
            child.stdin.write(json.dumps([x1, n1, x2, n2, alpha]) + "\n")
            child.stdin.flush()
            low, high = json.loads(child.stdout.readline())
            if len(low) == len(high) == len(x1):
                return low, high
        except (OSError, ValueError, TypeError):
            pass
        finally:
            deadline.cancel()
        _ahead = None       # not asked again: the caller's own import decides
        return None


def _figure(sends: int, send_conversions: int, controls: int, control_conversions: int,
            interval: Optional[tuple[float, float]], min_controls: int) -> Uplift:
    send_rate = send_conversions / sends if sends else None
    control_rate = control_conversions / controls if controls else None
    blank = dict(sends=sends, send_conversions=send_conversions, controls=controls,
                 control_conversions=control_conversions, send_rate=send_rate, control_rate=control_rate,
                 absolute=None, low=None, high=None, relative=None, incremental=None)
    if not sends:
        return Uplift(**blank, note="no sends")
    if controls < min_controls:
        return Uplift(**blank, note="too few controls")
    low, high = interval
    absolute = send_rate - control_rate
    blank.update(absolute=absolute, low=low, high=high,
                 relative=absolute / control_rate if control_rate else None, incremental=absolute * sends)
    return Uplift(**blank, note="not significant" if low <= 0 <= high else "")
