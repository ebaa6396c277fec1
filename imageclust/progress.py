"""Progress of every loop that can take more than a few seconds: a tqdm bar on a terminal; in a log (CI,
``dvc exp run --queue``, stderr redirected to a file) one line every ``LOG_EVERY`` of the work instead of
a carriage-return flood, with the rate and the time left, and only for a loop that runs longer than
``QUIET_SECONDS`` (a 2-second epoch of a 100-epoch run says nothing: its loop logs the epoch)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

log = logging.getLogger("imageclust.progress")
LOG_EVERY = 0.1  # a line per tenth of the work when not on a terminal ...
QUIET_SECONDS = 5.0  # ... at most one per this many seconds, and none for a loop that ends sooner


def on_terminal() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


class LogProgress:
    """tqdm's interface (iterate, ``update``, ``close``, a context manager) as occasional log lines."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", initial=0):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = self.start_n = initial
        self.started = self.reported = time.perf_counter()
        self.next_report = self._after(initial)
        self.closed = False

    def _after(self, n: float) -> float:
        if not self.total:
            return float("inf")
        step = max(self.total * LOG_EVERY, 1)
        return (n // step + 1) * step

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.n >= self.next_report and self.n < (self.total or 0):
            self.next_report = self._after(self.n)
            if time.perf_counter() - self.reported >= QUIET_SECONDS:
                self._report()
                self.reported = time.perf_counter()

    def _report(self, done: bool = False) -> None:
        seconds = time.perf_counter() - self.started
        rate = (self.n - self.start_n) / seconds if seconds > 0 else 0.0
        if done:
            log.info("%s: %s %s in %.1fs (%.1f %s/s)", self.desc, f"{self.n:,.0f}", self.unit, seconds, rate, self.unit)
            return
        left = f", {(self.total - self.n) / rate:.0f}s left" if rate > 0 else ""
        share = 100 * self.n / self.total
        log.info("%s: %.0f%% (%s/%s %s, %.1f %s/s%s)", self.desc, share, f"{self.n:,.0f}", f"{self.total:,.0f}",
                 self.unit, rate, self.unit, left)  # fmt: skip

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def set_postfix(self, *args, **kwargs) -> None:  # tqdm's; a log line carries no postfix
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if time.perf_counter() - self.started >= QUIET_SECONDS:
                self._report(done=True)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(
    iterable: Iterable | None = None,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    initial: float = 0,
    disable: bool = False,
    **bar_options,
):
    """A bar for ``iterable`` (or for ``update`` calls up to ``total``): tqdm on a terminal, log lines
    otherwise; ``disable`` for the ranks of a distributed run that are not the first."""
    if disable:
        return tqdm(iterable, total=total, disable=True)
    if on_terminal():
        options = {"leave": False, "dynamic_ncols": True, **bar_options}
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, **options)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
