"""Overlap the stages of a dub: decoding ahead in one thread, encoding behind in another.

Decoding (PyAV), rendering (OpenCV, numpy, torch) and encoding (a pipe to ffmpeg) spend most of their
time outside the Python interpreter lock, so on two cores they run side by side. Queues are bounded,
so memory holds a few frames per stage whatever the video's length; an error in any thread stops the
others and is raised in the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

_END = object()


class _Stopped(Exception):
    pass


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, failed: list):
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if failed:
                raise failed[0]


class prefetch:  # noqa: N801 (used like a generator function)
    """Iterate `items` in a background thread, `depth` items ahead. Use as a context manager (or call
    `close`) so that the thread stops when the consumer stops early."""

    def __init__(self, items: Iterable, depth: int = 8, timer=None):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop, self._failed = threading.Event(), []
        self._thread = threading.Thread(target=self._run, args=(iter(items), timer), daemon=True)
        self._thread.start()

    def _run(self, it: Iterator, timer) -> None:
        try:
            while True:
                if timer is None:
                    item = next(it, _END)
                else:
                    with timer():
                        item = next(it, _END)
                _put(self._q, item, self._stop)
                if item is _END:
                    return
        except _Stopped:
            return
        except BaseException as e:  # handed to the consumer
            self._failed.append(e)

    def __iter__(self):
        while True:
            item = _get(self._q, self._failed)
            if item is _END:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Worker:
    """Call `fn(*args)` for each `put(*args)`, in order, in a background thread, at most `depth` calls
    behind. `close()` waits for the rest; both raise an error the thread met."""

    def __init__(self, fn: Callable, depth: int = 8):
        self._fn = fn
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop, self._failed = threading.Event(), []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                args = _get(self._q, [])
                if args is _END:
                    return
                self._fn(*args)
        except BaseException as e:
            self._failed.append(e)
            self._stop.set()

    def _check(self) -> None:
        if self._failed:
            raise self._failed[0]

    def put(self, *args) -> None:
        self._check()
        try:
            _put(self._q, args, self._stop)
        except _Stopped:
            self._check()
            raise

    def close(self) -> None:
        """Finish every queued call, then stop."""
        if self._thread.is_alive():
            try:
                _put(self._q, _END, self._stop)
            except _Stopped:
                pass
            self._thread.join()
        self._check()

    def abort(self) -> None:
        """Stop without finishing the queue."""
        self._stop.set()
        while True:  # unblock a thread waiting on a full queue, then let it see the end
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        try:
            self._q.put_nowait(_END)
        except queue.Full:
            pass
        self._thread.join()
