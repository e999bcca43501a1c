"""Background tracking jobs: one per ``/track`` or ``/track_async`` request.

A job is what the labeling tool refers to by ``inference_request_uuid``: its progress, the
results waiting to be pulled (``/track_async``), whether it was stopped, and how it ended.
Jobs run on the app's model thread, so one model pass runs at a time and a waiting job
holds nothing but its request (frames are downloaded only once it runs). Finished jobs are
forgotten after ``KEEP_FINISHED_S`` or on ``/clear_tracking_results``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .errors import RequestNotFound, public_message
from .model_thread import ModelThread

logger = logging.getLogger(__name__)

KEEP_FINISHED_S = 1800.0  # a finished job's results stay this long for a late pull
KEEP_AFTER_CLEAR_S = 60.0  # the SDK also keeps a cleared request a minute


class Stage:
    QUEUED = "Queued"
    INFERENCE = "Inference"
    FINISHED = "Finished"
    CANCELLED = "Cancelled"
    ERROR = "Error"


class Job:
    """State of one request, shared by its worker thread and the pulling endpoints."""

    def __init__(self, kind: str, total: int) -> None:
        self.uuid = uuidlib.uuid4().hex
        self.kind = kind
        self.created_at = time.time()
        self.updated_at = self.created_at
        self.stage = Stage.QUEUED
        self.current = 0
        self.total = total
        self.error: BaseException | None = None
        self.result: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: list[tuple[int, Any]] = []  # (frame index, result)
        self.finished_at: float | None = None
        self.forget_at: float | None = None

    # -- control
    def stop(self) -> None:
        self._stop.set()
        self._touch()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def _touch(self) -> None:
        self.updated_at = time.time()

    def start(self) -> None:
        with self._lock:
            self.stage = Stage.INFERENCE
            self._touch()

    def advance(self, results: list[tuple[int, Any]] | None = None) -> None:
        """One more frame done; its results (if pulled by the tool) join the queue."""
        with self._lock:
            self.current += 1
            if results:
                self._pending.extend(results)
            self._touch()

    def finish(self, error: BaseException | None = None) -> None:
        with self._lock:
            self.error = error
            if error is not None:
                self.stage = Stage.ERROR
            elif self.stopped:
                self.stage = Stage.CANCELLED
            else:
                self.stage = Stage.FINISHED
            self.finished_at = time.time()
            self.forget_at = self.finished_at + KEEP_FINISHED_S
            self._touch()

    # -- pulling
    def pop(self, frame_range: tuple[int, int] | None = None) -> list[Any]:
        """Remove and return the waiting results (those of ``frame_range`` when given)."""
        with self._lock:
            if frame_range is None:
                taken, self._pending = self._pending, []
            else:
                low, high = min(frame_range), max(frame_range)
                taken = [item for item in self._pending if low <= item[0] <= high]
                self._pending = [item for item in self._pending if not low <= item[0] <= high]
            self._touch()
        return [result for _, result in taken]

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def status(self) -> dict[str, Any]:
        """The SDK's inference-request JSON (keys the tool and SDK clients read)."""
        with self._lock:
            progress = {"current": self.current, "total": self.total}
            exception = None
            if self.error is not None:
                exception = {
                    "type": type(self.error).__name__,
                    "message": public_message(self.error),
                }
            inferring = self.stage == Stage.INFERENCE
            has_result = self.result is not None
            return {
                "uuid": self.uuid,
                "stage": self.stage,
                "progress": progress,
                "preparing_progress": progress,
                "pending_results": len(self._pending),
                "final_result": has_result,
                "has_result": has_result,
                "result": has_result,
                "exception": exception,
                "is_inferring": inferring,
                "stopped": self.stopped,
                "cancel_inference": self.stopped,
                "paused": False,
                "finished": self.finished,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
            }


class JobRegistry:
    """The app's jobs by uuid; they run in order on the model thread."""

    def __init__(self, model_thread: ModelThread) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._worker = model_thread

    def submit(self, job: Job, body: Callable[[], None]) -> Future[None]:
        """Register ``job`` and run its ``body`` on the worker; ``body`` must not raise."""
        self._sweep()
        with self._lock:
            self._jobs[job.uuid] = job
        return self._worker.submit(self._run, job, body)

    @staticmethod
    def _run(job: Job, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # a bug in ``body``: never leave a job unfinished
            logger.exception("tracking job %s crashed", job.uuid)
            if not job.finished:
                job.finish(exc)

    def get(self, uuid: str) -> Job:
        self._sweep()
        with self._lock:
            job = self._jobs.get(uuid)
        if job is None:
            raise RequestNotFound(
                f"context.inference_request_uuid: no tracking request {uuid!r:.80} "
                "(finished requests are forgotten after a while or when cleared)"
            )
        return job

    def forget_soon(self, uuid: str) -> None:
        """``/clear_tracking_results``: stop it and drop it shortly (a last pull still works)."""
        job = self.get(uuid)
        job.stop()
        job.forget_at = time.time() + KEEP_AFTER_CLEAR_S

    def _sweep(self) -> None:
        now = time.time()
        with self._lock:
            for key in [k for k, j in self._jobs.items() if j.forget_at and j.forget_at < now]:
                del self._jobs[key]

    def active(self) -> int:
        with self._lock:
            return sum(1 for job in self._jobs.values() if not job.finished)

    def shutdown(self) -> None:
        with self._lock:
            for job in self._jobs.values():
                job.stop()
        self._worker.shutdown()
