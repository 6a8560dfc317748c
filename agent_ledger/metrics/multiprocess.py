"""Metrics across ``serve --workers N``: one private directory of value files per run.

prometheus_client's multiprocess mode has each process write its values to memory-mapped files
in ``PROMETHEUS_MULTIPROC_DIR`` and sums them when scraped. The directory must be empty when a
run starts (files of an earlier run would be summed in) and private to the run (two services
on one machine must not add up each other's traffic), so ``serve`` makes a fresh one under the
system's temporary directory, names it after its own process id, removes the directories of
earlier runs whose process is gone, and removes its own on the way out.

A worker that dies leaves its files: its counters rightly keep counting (what it served was
served), but its "live" gauges (pool connections) must stop counting. A worker that stops
cleanly drops them itself; every scrape also drops those of any process that no longer exists
(a worker killed, then replaced by uvicorn).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

import psutil

__all__ = ["VARIABLE", "forget_dead_processes", "forget_process", "run_directory"]

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "agent-ledger-metrics-"
_RUN_DIRECTORY = re.compile(rf"^{re.escape(_PREFIX)}(\d+)-")
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


@contextlib.contextmanager
def run_directory(parent: str | None = None) -> Iterator[str]:
    """A new, empty directory for this run's values, set as PROMETHEUS_MULTIPROC_DIR for this
    process and the workers it starts; removed, and the variable restored, at the end."""
    parent = parent or tempfile.gettempdir()
    _remove_abandoned(parent)
    path = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent)
    before = os.environ.get(VARIABLE)
    os.environ[VARIABLE] = path
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop(VARIABLE, None)
        else:
            os.environ[VARIABLE] = before
        shutil.rmtree(path, ignore_errors=True)


def _remove_abandoned(parent: str) -> None:
    """Directories of earlier runs whose serve process no longer exists (killed, say)."""
    for name in os.listdir(parent):
        found = _RUN_DIRECTORY.match(name)
        if found and not psutil.pid_exists(int(found.group(1))):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def forget_process(path: str, pid: int) -> None:
    """Stop counting ``pid``'s live gauges (prometheus_client's ``mark_process_dead``)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


def forget_dead_processes(path: str) -> None:
    """Stop counting the live gauges of every process that no longer exists."""
    pids = set()
    for file in glob.glob(os.path.join(path, "gauge_live*.db")):
        found = _LIVE_GAUGE_FILE.match(os.path.basename(file))
        if found:
            pids.add(int(found.group(1)))
    for pid in pids:
        if not psutil.pid_exists(pid):
            forget_process(path, pid)
