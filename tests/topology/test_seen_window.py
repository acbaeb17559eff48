"""The per-origin dedupe window (netsplit.replay.SeenWindow): duplicates dropped, reordering within the
window accepted once, and a hole that never fills (a frame of that origin routed to other servers only)
left behind without every later frame paying for it."""

from netsplit.replay import SeenWindow


def test_in_order_reordered_and_duplicate_frames():
    w = SeenWindow()
    assert [w.accept(s) for s in (1, 2, 4, 3, 3, 2, 5)] == [True, True, True, True, False, False, True]
    assert w.low == 5 and not w.above


def test_a_hole_that_never_fills_is_passed_and_the_window_empties_again():
    w = SeenWindow()
    w.accept(1)                                   # seq 2 went to another server: never seen here
    for s in range(3, 3 + SeenWindow.MAX_ABOVE + 1):
        assert w.accept(s)
    # Past the limit the window moves beyond the hole and the run after it: nothing is left held,
    # so the frames that follow take the in-order path (before, every one of them scanned 65,536).
    assert w.low == 2 + SeenWindow.MAX_ABOVE + 1 and not w.above
    assert w.accept(w.low + 1) and not w.above
    assert not w.accept(2)                        # the hole's frame, arriving after all: too old
