"""The worker loads (and warms up) its model on its own thread, and a failed load stops the start with its error."""

from __future__ import annotations

import threading

import pytest

from noise2art.service.worker import Worker
from noise2art.store import Store


class Loaded:
    """A model's stand-in that records where and whether it was warmed up."""

    def __init__(self, seen: dict):
        self.seen = seen

    def warm_up(self):
        self.seen["warmed on"] = threading.current_thread().name


def test_the_model_loads_and_warms_up_on_the_worker_thread_before_it_is_ready(tmp_path):
    store = Store(tmp_path / "data")
    seen = {}

    def load():
        seen["thread"] = threading.current_thread().name
        return Loaded(seen)

    worker = Worker(store, None)
    worker.start(load)
    try:
        worker.wait_ready()
        assert isinstance(worker.model, Loaded) and seen["thread"] == "noise2art-worker"
        assert seen["warmed on"] == "noise2art-worker"
    finally:
        worker.stop()
        store.close()


def test_a_failed_load_is_raised_by_wait_ready(tmp_path):
    store = Store(tmp_path / "data")

    def load():
        raise FileNotFoundError("no model folder 'nowhere'")

    worker = Worker(store, None)
    worker.start(load)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        worker.wait_ready()
    worker._thread.join(5)
    assert not worker._thread.is_alive()  # the thread ends: no worker loop without a model
    store.close()
