"""edge_ocr.sinks.spool: durable FIFO on a real directory."""

from __future__ import annotations

from edge_ocr.sinks.spool import Message, Spool


def test_fifo_survives_reopen_and_removes_only_what_is_acknowledged(tmp_path):
    spool = Spool(tmp_path, 100)
    seqs = [spool.append(Message("t/%d" % i, b"p%d" % i, 1, i % 2 == 0)) for i in range(5)]
    spool.remove(seqs[1])
    (tmp_path / ".000000000099.msg.999999999.tmp").write_bytes(b"half-")  # a dead writer's append
    again = Spool(tmp_path, 100)
    entries = again.after(0, 10)
    assert [m.topic for _, m in entries] == ["t/0", "t/2", "t/3", "t/4"]
    assert entries[0][1] == Message("t/0", b"p0", 1, True)
    assert not (tmp_path / ".000000000099.msg.999999999.tmp").exists()
    assert again.append(Message("t/5", b"")) > seqs[-1]
    assert [s for s, _ in again.after(seqs[2], 2)] == [seqs[3], seqs[4]]


def test_bound_drops_oldest_and_counts(tmp_path):
    spool = Spool(tmp_path, 3)
    for i in range(5):
        spool.append(Message("t", b"%d" % i))
    assert len(spool) == 3 and spool.dropped == 2
    assert [m.payload for _, m in spool.after(0, 10)] == [b"2", b"3", b"4"]
    assert len(list(tmp_path.glob("*.msg"))) == 3


def test_a_full_disk_drops_the_oldest_and_keeps_the_newest(small_disk):
    """The broker away and the spool's disk full: before, every new result was refused and the
    oldest kept, so a meter's current reading was the one lost. A full disk is a bound too."""
    spool = Spool(small_disk, 10000)
    for i in range(60):  # each message takes a 4 KB page: far more than 64 KB holds
        spool.append(Message("t", b"%d" % i + b"." * 1000))
    kept = [int(m.payload.split(b".")[0]) for _, m in spool.after(0, 100)]
    assert spool.dropped > 0 and kept[-1] == 59 and kept == list(range(60 - len(kept), 60))
    assert spool.dropped + len(kept) == 60


def test_at_the_bound_a_retained_message_a_newer_one_replaces_goes_before_any_event(tmp_path):
    """A long broker outage: each result spools a retained state and text and an event. The states
    a broker would have replaced took two thirds of the bound, so most events were dropped."""
    spool = Spool(tmp_path, 10)
    for i in range(20):
        spool.append(Message("p/meter/state", b"state %d" % i, 1, True))
        spool.append(Message("p/meter/text", b"text %d" % i, 1, True))
        spool.append(Message("p/meter/event", b"event %d" % i, 1, False))
    kept = [(m.topic, m.payload) for _, m in spool.after(0, 100)]
    # Before: the last 10 messages, 3 results' events. Now 8 events and the newest state and text.
    assert kept == [("p/meter/event", b"event %d" % i) for i in range(12, 19)] + [
        ("p/meter/state", b"state 19"), ("p/meter/text", b"text 19"), ("p/meter/event", b"event 19")]
    assert len(list(tmp_path.glob("*.msg"))) == 10 and spool.dropped == 12  # events only: states were replaced
    spool.remove(spool.after(0, 1)[0][0])  # an event acknowledged: 9 left
    spool.append(Message("p/meter/state", b"state 20", 1, True))  # under the bound every message stays
    assert [m.payload for _, m in spool.after(0, 100) if m.topic.endswith("state")] == [b"state 19", b"state 20"]
    spool.append(Message("p/meter/event", b"event 20", 1, False))  # at the bound: state 19 goes, not an event
    assert len(spool) == 10 and spool.dropped == 12
    assert [m.payload for _, m in spool.after(0, 100) if m.topic.endswith("state")] == [b"state 20"]


def test_what_is_acknowledged_leaves_no_trace_of_what_replaced_it(tmp_path):
    """Connected, each result's state is acknowledged before the next replaces it: the list of
    replaced entries grew by two a result for ever, and the first outage at the bound then walked it
    under the spool's lock (seconds per 20,000 results)."""
    spool = Spool(tmp_path, 10)
    for i in range(1000):
        for topic in ("p/meter/state", "p/meter/text"):
            spool.remove(spool.append(Message(topic, b"%d" % i, 1, True)))
    assert len(spool) == 0 and not spool._superseded and not spool._retained_here
