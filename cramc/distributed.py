"""Run independent simulation tasks serially or on a Dask distributed cluster.

Dask distributed was chosen over Ray because it installs from PyPI as pure
Python wheels on every platform cramc supports, its LocalCluster needs no
separate services (so the tests run a real multi-process cluster), and the same
code drives a real cluster by scheduler address (`dask scheduler` and
`dask worker` on the machines).  Every task carries its own seed and the
results are collected back in task order, so a sweep gives identical results
whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cramc.errors import UserError


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[tuple[Any, ...]],
    workers: int = 0,
    scheduler: str | None = None,
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """fn(*task) for every task, in task order; on `workers` local processes or at `scheduler`."""
    if not workers and not scheduler:
        out = []
        for i, t in enumerate(tasks):
            r = fn(*t)
            out.append(r)
            if on_done:
                on_done(i, r)
        return out
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise UserError("--workers/--scheduler need Dask distributed: pip install 'cramc[distributed]'") from None
    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="30s")
        else:
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
            )
            client = Client(cluster)
    except OSError as e:
        raise UserError(f"cannot reach the Dask scheduler {scheduler}: {e}") from None
    try:
        futures = [client.submit(fn, *t, pure=False) for t in tasks]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(tasks)
        for f in as_completed(futures):
            i = index[f.key]
            results[i] = f.result()
            if on_done:
                on_done(i, results[i])
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
