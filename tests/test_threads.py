"""The dub's stage overlap: order kept, errors raised in the caller, threads stopped."""

import time

import pytest

from realtalk_cli.inference.threads import Worker, prefetch


def test_prefetch_keeps_order_and_stops_early():
    consumed = []
    made = []

    def items():
        for i in range(1000):
            made.append(i)
            yield i

    with prefetch(items(), depth=4) as stream:
        for x in stream:
            consumed.append(x)
            if x == 9:
                break
    assert consumed == list(range(10))
    assert not stream._thread.is_alive()  # the producer stopped when the consumer did
    assert len(made) < 20  # and had read only a bounded way ahead


def test_prefetch_raises_the_producers_error():
    def items():
        yield 1
        raise ValueError("bad frame 2")

    with pytest.raises(ValueError, match="bad frame 2"), prefetch(items()) as stream:
        assert list(stream) == [1]


def test_worker_runs_in_order_and_reports_errors():
    seen = []
    w = Worker(seen.append, depth=2)
    for i in range(50):
        w.put(i)
    w.close()
    assert seen == list(range(50))

    def fail(x):
        if x == 3:
            raise OSError("disk full")

    w = Worker(fail, depth=2)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            w.put(i)
        w.close()


def test_worker_abort_does_not_wait_for_the_queue():
    w = Worker(lambda x: time.sleep(0.05), depth=100)
    for i in range(100):
        w.put(i)
    t0 = time.perf_counter()
    w.abort()
    assert time.perf_counter() - t0 < 1.0  # 100 x 50 ms would be 5 s
