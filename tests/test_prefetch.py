import threading
import time

import pytest

from babylon_pipeline.store.prefetch import prefetched


def test_items_arrive_in_order_and_all_of_them():
    assert list(prefetched(iter(range(1000)))) == list(range(1000))


def test_the_source_runs_ahead_by_at_most_depth_items():
    produced = []

    def source():
        for n in range(100):
            produced.append(n)
            yield n

    items = prefetched(source(), depth=2)
    assert next(items) == 0
    time.sleep(0.2)
    # one handed over, two waiting in the queue, one in the producer's hand
    assert len(produced) <= 4
    items.close()


def test_an_error_in_the_source_is_raised_at_the_item_it_stopped_at():
    def source():
        yield 1
        yield 2
        raise RuntimeError("connection lost")

    received = []
    with pytest.raises(RuntimeError, match="connection lost"):
        for item in prefetched(source()):
            received.append(item)
    assert received == [1, 2]


def test_closing_early_stops_the_thread_before_returning():
    def source():
        n = 0
        while True:
            n += 1
            yield n

    before = threading.active_count()
    items = prefetched(source(), depth=1)
    assert [next(items) for _ in range(3)] == [1, 2, 3]
    items.close()
    assert not any(t.name == "babylon-prefetch" and t.is_alive() for t in threading.enumerate())
    assert threading.active_count() == before


def test_the_source_is_advanced_by_one_thread_only():
    threads = set()

    def source():
        for n in range(50):
            threads.add(threading.get_ident())
            yield n

    assert sum(prefetched(source())) == sum(range(50))
    assert len(threads) == 1 and threading.get_ident() not in threads
