"""One function over many jobs on all cores, results in the jobs' order, with a progress bar."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from multiprocessing import Pool

from tqdm import tqdm

POOL_MIN_JOBS = 64  # below this, starting worker processes costs more than it saves
IN_FLIGHT = 4  # chunks per worker submitted ahead of the consumer: enough to keep every worker busy


def worker_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_chunk(function: Callable, chunk: list) -> list:
    return [function(job) for job in chunk]


def parallel_map(
    function: Callable, jobs: list, desc: str = "", processes: int | None = None, progress: bool = True
) -> Iterator:
    """function(job) for every job, yielded in the jobs' order; a process pool for more than a few dozen
    jobs on more than one core. `function` must be a module-level function (the pool pickles it).

    At most IN_FLIGHT chunks per worker are queued or waiting to be taken (Pool.imap would queue every
    job at once and keep every result the consumer has not taken yet), so a slow consumer, such as a
    model predicting 30,000 decoded images, holds a bounded number of results, not the whole folder's."""
    processes = processes or worker_count()
    bar = {"desc": desc, "unit": "file", "disable": not progress or not desc, "total": len(jobs)}
    if len(jobs) < POOL_MIN_JOBS or processes == 1:
        yield from map(function, tqdm(jobs, **bar))
        return
    chunksize = max(1, min(64, len(jobs) // (processes * 8)))
    chunks = (jobs[i : i + chunksize] for i in range(0, len(jobs), chunksize))
    with Pool(processes) as pool, tqdm(**bar) as progress_bar:
        pending = deque(pool.apply_async(_run_chunk, (function, c)) for c in islice(chunks, processes * IN_FLIGHT))
        while pending:
            results = pending.popleft().get()
            chunk = next(chunks, None)
            if chunk is not None:
                pending.append(pool.apply_async(_run_chunk, (function, chunk)))
            progress_bar.update(len(results))
            yield from results
