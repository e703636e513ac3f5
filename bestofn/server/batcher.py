"""Micro-batching onto the engine: one worker thread, the only one that ever calls it,
merges the requests that arrive within ``server.batch_window_ms`` into one
``BestOfN.run_tasks`` call (one generate, one scoring call); after a batch it also waits a
little for the clients it just answered, who mostly send their next request at once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

from bestofn.pipeline import BestOfN, Task
from bestofn.server.errors import ApiError, invalid, shutting_down, timeout_error
from bestofn.values import Selection

logger = logging.getLogger("bestofn.server")

SHUTDOWN_JOIN_S = 30.0
"""How long shutdown waits for a batch already inside the engine (it cannot be interrupted)."""

REFILL_SHARE = 0.02
"""After a batch, wait up to this share of its time for the clients it answered to send
again (at most ``REFILL_CAP_S``): a request that misses the next batch waits a whole batch
more, while waiting for it costs the batch only this share."""
REFILL_CAP_S = 1.0


@dataclass
class Job:
    """One HTTP request's work: a task (generate then score, or score given candidates)."""

    task: Task
    deadline: float
    """time.monotonic() after which the answer is no longer wanted."""

    def __post_init__(self) -> None:
        self.future: Future[Selection] = Future()


class Batcher:
    """Merges queued jobs into one engine.generate and one scorer call per batch.

    Handlers ``submit`` jobs from the event loop; one worker thread takes the first job,
    waits up to ``batch_window_ms`` for more (at most ``max_batch_requests``), runs the
    batch and resolves every job's future. Only this thread touches the engine.
    """

    def __init__(self, best: BestOfN, *, refill_share: float = REFILL_SHARE) -> None:
        self.best = best
        self.refill_share = refill_share
        self.config = best.config
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stopped: str | None = None
        """Why the worker thread ended, if it did."""
        self.running = 0
        """Jobs in the batch the engine is working on now."""
        self.batches = 0
        self.jobs = 0
        self.largest_batch = 0
        self._refill = (0.0, 0)
        """(until when, how many jobs) the next batch waits for after the last one: the jobs
        queued when it ended plus one from each client it answered."""

    @property
    def alive(self) -> bool:
        """False once the worker thread has died (nothing would ever answer a job)."""
        if self._stopped is not None:
            return False
        thread = self._thread
        return thread is None or thread.is_alive() or self._closed

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def start(self) -> None:
        with self._cond:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="bestofn-batcher", daemon=True)
            self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job, or raise 429 at once when ``server.max_queue`` jobs already wait."""
        limit = self.config.server.max_queue
        with self._cond:
            if self._closed:
                raise shutting_down()
            self._start_locked()
            if not self.alive:
                raise self._stopped_error()
            if len(self._queue) >= limit:
                # Jobs whose clients already got their 504 still sit here; drop them first.
                self._queue = deque(j for j in self._queue if not j.future.cancelled())
            if len(self._queue) >= limit:
                raise ApiError(
                    429,
                    f"the server is at capacity: {len(self._queue)} requests already wait for "
                    f"the engine (server.max_queue={limit}); retry after a moment",
                    type="rate_limit_error",
                    code="queue_full",
                    headers={"Retry-After": "1"},
                )
            self._queue.append(job)
            self._cond.notify()

    async def run(self, job: Job) -> Selection:
        """Submit ``job`` and wait for it until its deadline (then 504)."""
        self.submit(job)
        left = max(0.0, job.deadline - time.monotonic())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job.future), timeout=left)
        except TimeoutError:
            job.future.cancel()  # still queued: the worker skips it
            raise timeout_error(self.config.server.request_timeout_s) from None
        except ApiError:
            raise
        except Exception as exc:
            raise ApiError(
                500,
                f"the engine failed on the batch holding this request ({type(exc).__name__}: "
                f"{exc}); the server keeps serving, retry the request",
                type="server_error",
                code="engine_error",
            ) from exc

    def close(self, join_s: float = SHUTDOWN_JOIN_S) -> None:
        """Refuse new jobs, answer queued ones with 503 and let the worker finish."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(shutting_down())
        if thread is not None:
            thread.join(join_s)

    def _take(self) -> list[Job] | None:
        """The next batch: the first queued job and those arriving within the window after
        it, at most ``max_batch_requests``. Right after a batch the window stretches (to its
        refill time) until as many jobs are queued as there were waiting at its end plus
        one per client it answered: those clients mostly send again at once, but on a busy
        machine not all within a few milliseconds, and one that misses the batch waits a
        whole batch more."""
        window = self.config.server.batch_window_ms / 1000.0
        most = self.config.server.max_batch_requests
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            until = time.monotonic() + window
            refill_until, expected = self._refill
            expected = min(expected, most)
            while len(self._queue) < most and not self._closed:
                target = until if len(self._queue) >= expected else max(until, refill_until)
                left = target - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = [self._queue.popleft() for _ in range(min(most, len(self._queue)))]
            self.running = len(batch)
            return batch

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            # Not an engine error (those are caught per batch) but SystemExit and the like:
            # nothing will take jobs any more, so say so now instead of letting each wait.
            logger.critical("the engine worker stopped", exc_info=True)
            with self._cond:
                self._stopped = f"{type(exc).__name__}: {exc}"
                pending = list(self._queue)
                self._queue.clear()
            for job in pending:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(self._stopped_error())

    def _stopped_error(self) -> ApiError:
        return ApiError(
            503,
            f"the engine worker has stopped ({self._stopped}); restart the server",
            type="server_error",
            code="worker_stopped",
        )

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            now = started = time.monotonic()
            live = []
            for job in batch:
                if not job.future.set_running_or_notify_cancel():
                    continue  # its client timed out while it was queued
                if job.deadline <= now:
                    job.future.set_exception(timeout_error(self.config.server.request_timeout_s))
                    continue
                live.append(job)
            try:
                if live:
                    self._serve(live)
            except Exception as exc:
                # The engine (or scorer) failed: every job of this batch gets the error (a
                # 500), and the loop goes on to the next batch.
                logger.exception("a batch of %d requests failed", len(live))
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(exc)
            except BaseException as exc:
                # Never hand SystemExit & co. to the event loop: awaiting it would stop the
                # whole server. The batch's clients get a 503 and the worker ends.
                self._stopped = f"{type(exc).__name__}: {exc}"
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(self._stopped_error())
                raise
            finally:
                ended = time.monotonic()
                refill_s = min(self.refill_share * (ended - started), REFILL_CAP_S)
                with self._cond:
                    self.running = 0
                    self.batches += 1 if live else 0
                    self.jobs += len(live)
                    self.largest_batch = max(self.largest_batch, len(live))
                    self._refill = (ended + refill_s, len(self._queue) + len(live))

    def _serve(self, jobs: list[Job]) -> None:
        selections = self.best.run_tasks([job.task for job in jobs])
        for job, selection in zip(jobs, selections, strict=True):
            failure = selection.failure
            if failure is None:
                job.future.set_result(selection)
            else:  # only this job is bad: a 400 naming what to change
                job.future.set_exception(invalid(failure.reason, failure.param, failure.code))
