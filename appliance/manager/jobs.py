"""One long job at a time (bootstrap, clone, rewind, reinitialize) on a worker thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from appliance.core.state import JobResult

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """A job gave up before changing anything (e.g. its source is unreachable): try again later."""


class JobRunner:
    """Runs a callable in the background so that the HA loop keeps renewing the lease meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._name: str | None = None
        self._result: JobResult | None = None

    @property
    def running(self) -> str | None:
        with self._lock:
            return self._name if self._thread is not None and self._thread.is_alive() else None

    def start(self, name: str, work: Callable[[], tuple[bool, str]], on_done: Callable[[], None]) -> bool:
        """Start ``work`` (returns ok, detail) unless a job is already running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._name = name
            self._result = None
            self._thread = threading.Thread(target=self._run, args=(name, work, on_done), name=f"job-{name}",
                                            daemon=True)
            self._thread.start()
        return True

    def _run(self, name: str, work: Callable[[], tuple[bool, str]], on_done: Callable[[], None]) -> None:
        retryable = False
        try:
            ok, detail = work()
        except RetryLater as exc:
            ok, detail, retryable = False, str(exc), True
            log.warning("job %s postponed: %s", name, exc)
        except Exception as exc:  # a job failure must reach decide(), not kill the thread silently
            log.exception("job %s crashed", name)
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._result = JobResult(job=name, ok=ok, detail=detail[-500:], retryable=retryable)
            self._name = None
        if ok:  # a failure waits for the next regular tick instead of retrying in a tight loop
            on_done()

    def take_result(self) -> JobResult | None:
        """The finished job's result, handed out once."""
        with self._lock:
            result, self._result = self._result, None
            return result

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
