"""Where the cells of a grid run: a local process pool (the default) or a Ray cluster.

    with cell_executor("local", workers=2, initializer=warm, initargs=(grid,)) as ex:
        fut = ex.submit(run_one, grid, cell)          # a concurrent.futures.Future
        wait([fut], return_when=FIRST_COMPLETED)

Both backends hand back `concurrent.futures.Future`s, so a grid's scheduling loop (what to
submit when, streaming results into summary.csv, resume) is one piece of code whichever
engine runs the cells. On Ray each cell is one task (`num_cpus=1`); `initializer(*initargs)`
runs once per worker process before its first cell there (a pool's initializer, done lazily,
since Ray reuses worker processes across tasks).

Ray is an optional extra (`pip install lbw-sim[ray]`): imported only when asked for.
`address=None` starts a private local instance; `auto` or `ray://host:10001` joins a
cluster, and the `lbw_sim` package travels with the job (`runtime_env.py_modules`), so the
cluster's workers need only the dependencies (torch, numpy, pandas, zclip, scikit-learn …).
"""

from __future__ import annotations

import multiprocessing as mp
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lbw_sim.errors import SpecError

BACKENDS = ("local", "ray")


class RayExecutor:
    """`submit(fn, *args) -> Future` over Ray tasks; started (or joined) on construction."""

    def __init__(self, address: str | None = None, initializer: Callable | None = None,
                 initargs: tuple = (), num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise SpecError("--backend", "ray is not installed: pip install 'lbw-sim[ray]' "
                                         "(or ray==2.60.0)") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            import lbw_sim

            # the package travels with the job: a cluster's workers (and a local instance's,
            # when lbw_sim is not installed but run from a checkout) import this very code
            env = {"py_modules": [str(Path(lbw_sim.__file__).parent)],
                   "env_vars": {"OMP_NUM_THREADS": "1"}}
            ray.init(address=address, num_cpus=None if address else (num_cpus or None),
                     include_dashboard=False, log_to_driver=False, runtime_env=env,
                     ignore_reinit_error=True)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        #: cells in flight: `num_cpus` if given, else one per CPU of the cluster
        self.slots = max(1, num_cpus or cpus)
        self.token = uuid.uuid4().hex
        self.initializer, self.initargs = initializer, initargs
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_ray_call)
        self._init_ref = ray.put((initializer, initargs)) if initializer else None

    def submit(self, fn: Callable, *args: Any) -> Future:
        return self._remote.remote(self.token, self._init_ref, fn, args).future()

    def shutdown(self, cancel: bool = False) -> None:
        if self.started:
            self.ray.shutdown()


_INITIALISED: set[str] = set()


def _ray_call(token: str, init: tuple | None, fn: Callable, args: tuple) -> Any:
    """One cell on a Ray worker: the grid's initializer once per process, then the cell."""
    if init is not None and token not in _INITIALISED:
        initializer, initargs = init
        initializer(*initargs)
        _INITIALISED.add(token)
    return fn(*args)


class LocalExecutor:
    """A spawn-context process pool (no fork of a process already running torch threads)."""

    def __init__(self, workers: int, initializer: Callable | None = None,
                 initargs: tuple = ()):
        self.slots = max(1, workers)
        self.pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                        initializer=initializer, initargs=initargs)

    def submit(self, fn: Callable, *args: Any) -> Future:
        return self.pool.submit(fn, *args)

    def shutdown(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


@contextmanager
def cell_executor(backend: str = "local", *, workers: int = 2, address: str | None = None,
                  initializer: Callable | None = None,
                  initargs: tuple = ()) -> Iterator[LocalExecutor | RayExecutor]:
    """A cell executor for `backend`; on an error inside the block, pending cells are
    cancelled rather than waited for. `workers` is the local pool's size; on Ray the cells
    kept in flight (0: one per CPU of the cluster, or of the machine for a private instance).
    The executor's `slots` says how many cells to keep submitted."""
    check_backend(backend, address)
    if backend == "ray":
        ex: LocalExecutor | RayExecutor = RayExecutor(address, initializer, initargs, workers)
    else:
        ex = LocalExecutor(workers or 2, initializer, initargs)
    try:
        yield ex
    except BaseException:
        ex.shutdown(cancel=True)
        raise
    ex.shutdown()


def check_backend(backend: str, address: str | None) -> None:
    """Reject an unknown backend, or an address without Ray, with the flag's name."""
    if backend not in BACKENDS:
        raise SpecError("--backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if address and backend != "ray":
        raise SpecError("--address", "only the ray backend takes an address")
