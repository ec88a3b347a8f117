"""CPU time of the server and database processes, read from ``/proc`` (Linux).

CPU time (user + system) spent per request is steadier than a rate on a machine that
other jobs share: it counts the work done, not the wall time it took. The bench reads
it before and after each load run:

- the server: every process of its process group (the uvicorn master and workers;
  :class:`~flashsale.demo.server.ServerProcess` starts each server in a group of its
  own), plus the CPU of their exited, reaped children;
- PostgreSQL, two ways: the backends serving the service's database, sampled during
  the run (:class:`BackendSampler`; the figure the bench reports, right on a server
  that other databases keep busy too), and the whole cluster: every ``postgres``
  process on this machine plus the postmaster's ``cutime + cstime``, which holds the
  CPU of backends that exited (a pool closes connections under load and opens new
  ones), right only when nothing else uses the server meanwhile. Unknown (None) when
  no ``postgres`` process is visible (a server on another machine).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

#: Kernel clock ticks per second (``/proc/<pid>/stat`` times are in ticks).
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """One line of ``/proc/<pid>/stat``: the fields the bench needs (times in ticks)."""

    pid: int
    comm: str
    ppid: int
    pgrp: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def own(self) -> int:
        """Ticks spent by the process itself."""
        return self.utime + self.stime

    @property
    def children(self) -> int:
        """Ticks of its exited children it has reaped."""
        return self.cutime + self.cstime


def read_stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat`` parsed; None when the process is gone (or not readable)."""
    try:
        data = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or ')'.
    left, right = data.index("("), data.rindex(")")
    fields = data[right + 2 :].split()
    return ProcStat(
        pid=pid,
        comm=data[left + 1 : right],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def all_stats() -> list[ProcStat]:
    """Every readable process's stat."""
    stats = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                stats.append(stat)
    return stats


def ticks_to_us(ticks: int) -> float:
    """Clock ticks as microseconds."""
    return ticks * 1_000_000 / CLOCK_TICKS


def group_cpu_us(pgrp: int, stats: list[ProcStat] | None = None) -> float:
    """CPU µs spent so far by process group ``pgrp`` (its live processes and their
    reaped children)."""
    stats = all_stats() if stats is None else stats
    return ticks_to_us(sum(s.own + s.children for s in stats if s.pgrp == pgrp))


def postgres_cpu_us(stats: list[ProcStat] | None = None) -> float | None:
    """CPU µs spent so far by the local PostgreSQL cluster(s): every ``postgres`` process
    plus each postmaster's reaped children; None when no ``postgres`` process is seen."""
    stats = all_stats() if stats is None else stats
    postgres = {s.pid: s for s in stats if s.comm == "postgres"}
    if not postgres:
        return None
    ticks = 0
    for s in postgres.values():
        ticks += s.own
        if s.ppid not in postgres:  # a postmaster: its children's exited backends
            ticks += s.children
    return ticks_to_us(ticks)


@dataclass(frozen=True)
class CpuMark:
    """CPU µs of the server group and of PostgreSQL (None: not measured) at one moment."""

    server_us: float
    db_us: float | None


def cpu_mark(server_pgrp: int, *, postgres: bool) -> CpuMark:
    """Read the server group's CPU (and PostgreSQL's when ``postgres``) now."""
    stats = all_stats()
    return CpuMark(group_cpu_us(server_pgrp, stats), postgres_cpu_us(stats) if postgres else None)


def _backends_of(database: str) -> dict[int, int]:
    """``{pid: ticks}`` of the PostgreSQL backends connected to ``database`` now (their
    command line names it: ``postgres: <cluster>: <user> <database> <client> <state>``)."""
    found = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if not cmdline.startswith(b"postgres:"):
            continue
        if database not in cmdline.replace(b"\0", b" ").decode("utf-8", "replace").split():
            continue
        stat = read_stat(pid)
        if stat is not None:
            found[pid] = stat.own
    return found


class BackendSampler:
    """CPU of the PostgreSQL backends serving one database over a period, when other
    databases on the same server are busy too (a shared server): the backends are
    found by their command line and sampled every ``interval`` seconds in a thread, so
    a backend that exits meanwhile (a pool closing a connection) keeps the CPU it had
    at its last sample (at most ``interval`` of its work is lost). WAL writing and
    checkpoints, shared by every database, are not counted.

    Args:
        database: the database's name.
        interval: seconds between samples.
    """

    def __init__(self, database: str, interval: float = 0.1) -> None:
        self.database = database
        self.interval = interval
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the first sample and start sampling."""
        self._first = _backends_of(self.database)
        self._last = dict(self._first)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pg-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._last.update(_backends_of(self.database))

    def stop(self) -> float:
        """Stop sampling; returns the CPU µs the database's backends spent since
        :meth:`start`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._last.update(_backends_of(self.database))
        ticks = sum(t - self._first.get(pid, 0) for pid, t in self._last.items())
        return ticks_to_us(ticks)
