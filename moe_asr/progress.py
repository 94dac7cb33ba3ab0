"""Progress display that suits where it goes: a tqdm bar on a terminal, and in a log file
(stderr redirected or piped through ``tee``, as the recipes do) one plain line per
``step_percent`` of the work plus a final summary, instead of thousands of ``\\r`` updates."""

from __future__ import annotations

import sys
import time
from typing import IO

__all__ = ["LineProgress", "progress_bar"]


class LineProgress:
    """The part of tqdm's interface the library uses (update, set_postfix, close), written
    as ``desc: 30% (300/1000 utt, 12.1 s)`` lines."""

    def __init__(
        self,
        total: int | None,
        *,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        file: IO[str] | None = None,
        step_percent: int = 10,
    ) -> None:
        self.total = max(0, int(total or 0))  # 0: unknown, only the summary line
        self.n = int(initial)
        self.desc = desc or "progress"
        self.unit = unit
        self.file = file if file is not None else sys.stderr
        self.step = max(1, step_percent)
        self._last = self._percent()
        self._postfix = ""
        self._start = time.perf_counter()
        self._closed = False

    def _percent(self) -> int:
        if not self.total:
            return 0
        return min(100, self.n * 100 // self.total) // self.step * self.step

    def _line(self, head: str) -> None:
        secs = time.perf_counter() - self._start
        extra = f", {self._postfix}" if self._postfix else ""
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        print(
            f"{self.desc}: {head} ({count} {self.unit}, {secs:.1f} s{extra})",
            file=self.file,
            flush=True,
        )

    def update(self, n: int = 1) -> None:
        self.n += n
        pct = self._percent()
        if pct > self._last and pct < 100:
            self._last = pct
            self._line(f"{pct}%")

    def set_postfix(self, **values: object) -> None:
        self._postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line("stopped" if self.total and self.n < self.total else "done")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    total: int | None,
    *,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    disable: bool = False,
    file: IO[str] | None = None,
    leave: bool = True,
):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a ``LineProgress``."""
    from tqdm import tqdm

    file = file if file is not None else sys.stderr
    is_tty = getattr(file, "isatty", lambda: False)()
    if disable or is_tty:
        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            initial=initial,
            disable=disable,
            file=file,
            leave=leave,
            dynamic_ncols=True,
        )
    return LineProgress(total, desc=desc, unit=unit, initial=initial, file=file)
