import gc

import pytest

from babylon_pipeline.windowing.collector import collector_paused


def test_the_collector_is_paused_inside_and_back_after_even_on_error():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("stage failed")
    assert gc.isenabled()


def test_a_collector_already_off_stays_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_it_decorates_a_stage():
    @collector_paused()
    def stage() -> bool:
        return gc.isenabled()

    assert stage() is False and gc.isenabled()
