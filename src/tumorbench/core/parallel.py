"""One function over many jobs on all cores, results in the jobs' order, with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from multiprocessing import Pool

from tqdm import tqdm

POOL_MIN_JOBS = 64  # below this, starting worker processes costs more than it saves


def worker_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parallel_map(
    function: Callable, jobs: list, desc: str = "", processes: int | None = None, progress: bool = True
) -> Iterator:
    """function(job) for every job, yielded in the jobs' order; a process pool for more than a few dozen
    jobs on more than one core. `function` must be a module-level function (the pool pickles it)."""
    processes = processes or worker_count()
    bar = {"desc": desc, "unit": "file", "disable": not progress or not desc, "total": len(jobs)}
    if len(jobs) < POOL_MIN_JOBS or processes == 1:
        yield from map(function, tqdm(jobs, **bar))
        return
    chunksize = max(1, min(64, len(jobs) // (processes * 8)))
    with Pool(processes) as pool:
        yield from tqdm(pool.imap(function, jobs, chunksize=chunksize), **bar)
