"""The one decode pool: streamed (the pipeline) and in ordered batches (learning), on real photos."""

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conftest import TEST_PHOTOS
from phototag.ingest.pool import DecodePool, decode_workers, prepared_batches


@dataclass
class Item:
    path: Path


def small(image):
    return np.asarray(image.resize((8, 8)), dtype=np.float32)


def test_prepared_batches_in_order_leaving_out_unreadable_photos():
    paths = [TEST_PHOTOS / "jpeg" / "flower.jpg", TEST_PHOTOS / "broken" / "corrupted.heic",
             TEST_PHOTOS / "heic" / "pug.heic", TEST_PHOTOS / "makers" / "r_sony.jpg",
             TEST_PHOTOS / "jpeg" / "missing.jpg", TEST_PHOTOS / "orientation" / "hopper_orientation_6.jpg"]
    items = [Item(p) for p in paths]
    batches = list(prepared_batches(small, items, batch=2, workers=3))
    assert [[i.path.name for i in b] for b, _ in batches] == [
        ["flower.jpg"], ["pug.heic", "r_sony.jpg"], ["hopper_orientation_6.jpg"]]
    for batch_items, prepared in batches:
        assert len(prepared) == len(batch_items) and all(p.shape == (8, 8, 3) for p in prepared)


def test_decode_pool_streams_every_result_then_the_end():
    pool = DecodePool(lambda n: n * n, workers=3, max_in_flight=2)
    feeder = threading.Thread(target=pool.feed, args=(iter(range(20)), threading.Event()))
    feeder.start()
    results = []
    while (item := pool.get(timeout=30)) is not None:
        results.append(item)
    feeder.join()
    assert sorted(results) == [n * n for n in range(20)] and pool.error is None


def test_decode_pool_keeps_the_producers_error_and_abort_unblocks_it():
    def jobs():
        yield 1
        raise ValueError("walk failed")

    pool = DecodePool(lambda n: n, workers=1, max_in_flight=1)
    pool.feed(jobs(), threading.Event())
    assert pool.get(timeout=5) == 1 and pool.get(timeout=5) is None
    assert isinstance(pool.error, ValueError)

    blocked = DecodePool(lambda n: n, workers=1, max_in_flight=1)
    stop = threading.Event()
    feeder = threading.Thread(target=blocked.feed, args=(iter(range(100)), stop))
    feeder.start()  # waits for a slot after the first item: nobody takes results
    stop.set()
    blocked.abort()
    feeder.join(timeout=10)
    assert not feeder.is_alive()


def test_decode_workers_asked_then_setting_then_cpus(tmp_path):
    from phototag.config import load_settings

    three = load_settings(tmp_path / "a", environ={"PHOTOTAG_DECODE_WORKERS": "3"})
    assert decode_workers(three, 5) == 5
    assert decode_workers(three) == 3
    assert decode_workers(load_settings(tmp_path / "b", environ={})) >= 1
