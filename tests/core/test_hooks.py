"""The hook bus: priority order, stopping, folding, crash isolation."""

import logging

from relay.core.hooks import HookBus, Stop


def test_priority_order_highest_first_then_registration_order():
    bus, seen = HookBus(), []
    bus.add("h", lambda: seen.append("low"), priority=-5)
    bus.add("h", lambda: seen.append("high"), priority=10)
    bus.add("h", lambda: seen.append("mid1"))
    bus.add("h", lambda: seen.append("mid2"))
    assert bus.run("h") is None
    assert seen == ["high", "mid1", "mid2", "low"]


def test_run_stops_at_first_non_none():
    bus, seen = HookBus(), []
    bus.add("h", lambda x: seen.append(1), priority=3)
    bus.add("h", lambda x: "stopped:" + x, priority=2)
    bus.add("h", lambda x: seen.append(3), priority=1)
    assert bus.run("h", "a") == "stopped:a"
    assert seen == [1]


def test_fold_threads_value_replaces_and_stops():
    bus = HookBus()
    bus.add("f", lambda v, k: v + k, priority=3)
    bus.add("f", lambda v, k: None, priority=2)      # None keeps the value
    bus.add("f", lambda v, k: v * 10, priority=1)
    assert bus.fold("f", 1, 2) == 30
    bus.add("f", lambda v, k: Stop("final"), priority=2)
    assert bus.fold("f", 1, 2) == "final"
    assert bus.fold("nobody", 7) == 7


def test_crashing_handler_is_logged_with_its_module_and_skipped(caplog):
    bus, seen = HookBus(), []
    bus.add("h", lambda *a: 1 / 0, priority=5, owner="crashy")
    bus.add("h", lambda *a: seen.append("after"))
    with caplog.at_level(logging.ERROR):
        assert bus.run("h") is None
        bus.fold("h", 3)
    assert seen == ["after", "after"]
    assert "module crashy" in caplog.text and "ZeroDivisionError" in caplog.text
    assert bus.errors == 2


def test_remove_and_registration_during_run():
    bus, seen = HookBus(), []
    h2 = None

    def first():
        seen.append("first")
        bus.remove(h2)  # removing mid-run does not disturb the running chain
        bus.add("h", lambda: seen.append("late"))

    bus.add("h", first, priority=1)
    h2 = bus.add("h", lambda: seen.append("second"))
    bus.run("h")
    assert seen == ["first", "second"]
    seen.clear()
    bus.run("h")
    assert seen == ["first", "late"]


def test_timer_queue_periodic_skips_missed_periods_and_cancels():
    from relay.core.timers import TimerQueue
    q, runs = TimerQueue(), []
    t = q.every(1.0, runs.append, now=0.0)
    q.run_due(1.0)
    q.run_due(5.5)   # 2, 3, 4, 5 were missed: one run, then back on schedule
    q.run_due(6.4)
    q.run_due(6.5)
    assert runs == [1.0, 5.5, 6.5]
    t.cancel()
    q.run_due(100.0)
    assert runs == [1.0, 5.5, 6.5]
    assert q.next_deadline() is None
