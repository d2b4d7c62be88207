"""Bounded on-disk FIFO of MQTT messages the broker has not acknowledged yet.

One file per message, ``<seq:012d>.msg``: a JSON header line ``{"topic","qos","retain"}``
then the payload bytes. Each is written to a temp file, fsynced and renamed, so it survives a
restart, a kill -9 or a power cut; an entry is removed only once its QoS 1 publish is
acknowledged. At the bound (``max_messages``, or a full disk) the oldest are dropped and counted. Imports errors only.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_ocr.atomic import remove_stale_temps, write_atomic
from edge_ocr.errors import SinkError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class Spool:
    """FIFO of ``Message`` in ``directory``, at most ``max_messages`` entries. Thread-safe."""

    SUFFIX = ".msg"

    def __init__(self, directory: Path, max_messages: int) -> None:
        self.directory = directory
        self.max_messages = max_messages
        self.dropped = 0
        self._lock = threading.Lock()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(directory)  # writes interrupted by a crash
            seqs = sorted(int(p.stem) for p in directory.glob("*" + self.SUFFIX) if p.stem.isdigit())
        except OSError as exc:
            raise SinkError("spool %s: %s" % (directory, exc.strerror)) from exc
        self._seqs: deque[int] = deque(seqs)
        # The newest entry of each retained topic appended by this process, and the older ones it
        # replaced (a broker keeps only the last): at the bound those go before any event does.
        self._retained: dict[str, int] = {}
        self._superseded: dict[int, None] = {}  # in the order they were replaced; gone once acknowledged
        self._retained_here: set[int] = set()  # retained entries still in the spool (not acknowledged)
        self._next = (seqs[-1] + 1) if seqs else 1
        if seqs:
            log.info("spool resumed dir=%s messages=%d", directory, len(seqs))
        self._trim()

    def __len__(self) -> int:
        with self._lock:
            return len(self._seqs)

    def _path(self, seq: int) -> Path:
        return self.directory / ("%012d%s" % (seq, self.SUFFIX))

    def append(self, message: Message) -> int:
        """Store ``message`` durably; returns its sequence number. Raises SinkError on disk failure."""
        header = json.dumps({"topic": message.topic, "qos": message.qos, "retain": message.retain}).encode()
        with self._lock:
            seq = self._next
            self._next += 1
            path = self._path(seq)
            while True:
                try:
                    write_atomic(path, header + b"\n" + message.payload)
                    break
                except OSError as exc:
                    # A full disk is a bound too: the oldest go, as at max_messages, so the newest
                    # results (a meter's current reading) are the ones kept.
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._seqs:
                        raise SinkError("spool %s: cannot write: %s" % (self.directory, exc.strerror)) from exc
                    self._drop_oldest("disk full")
            self._seqs.append(seq)
            if message.retain:
                older = self._retained.get(message.topic)
                if older is not None and older in self._retained_here:
                    self._superseded[older] = None
                self._retained[message.topic] = seq
                self._retained_here.add(seq)
            self._trim()
            return seq

    def _trim(self) -> None:
        while len(self._seqs) > self.max_messages:
            if not self._drop_superseded():
                self._drop_oldest("max=%d" % self.max_messages)

    def _drop_superseded(self) -> bool:
        """At the bound, a retained message a newer one of its topic replaces goes first (under the
        lock): 20,000 results in an outage at max_messages 10,000 kept 1 event in 6, the rest of the
        room taken by states and texts a broker would have replaced. Not counted as dropped: the
        newer one says the same. False when there is none left to drop."""
        while self._superseded:
            seq = next(iter(self._superseded))
            if self._untrack(seq):  # else acknowledged or dropped meanwhile
                self._path(seq).unlink(missing_ok=True)
                return True
        return False

    def _untrack(self, seq: int) -> bool:
        """Forget ``seq`` in every index (under the lock); False when it was no longer queued."""
        self._superseded.pop(seq, None)
        self._retained_here.discard(seq)
        try:
            self._seqs.remove(seq)
        except ValueError:
            return False
        return True

    def _drop_oldest(self, why: str) -> None:
        oldest = self._seqs[0]
        self._untrack(oldest)
        self._path(oldest).unlink(missing_ok=True)
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 100 == 0:
            log.warning("spool full, oldest dropped dir=%s %s dropped=%d", self.directory, why, self.dropped)

    def after(self, seq: int, limit: int) -> list[tuple[int, Message]]:
        """Up to ``limit`` entries with a sequence number above ``seq``, oldest first."""
        with self._lock:
            # The entries up to ``seq`` (sent, awaiting their acks) are the first few: no walk of a
            # spool of 100,000 for every 20 messages sent.
            wanted = list(itertools.islice((s for s in self._seqs if s > seq), limit))
        out = []
        for s in wanted:
            message = self._read(s)
            if message is not None:
                out.append((s, message))
        return out

    def newest(self, topics: set[str], limit: int = 1000,
               key: Callable[[str], str] = lambda topic: topic) -> dict[str, Message]:
        """The newest entry of each of ``topics`` (compared with each entry's ``key(topic)``) among the
        ``limit`` newest spooled (read newest first, stopping once each was found: a start never reads
        a whole full spool)."""
        with self._lock:
            seqs = list(reversed(self._seqs))[:limit]
        found: dict[str, Message] = {}
        for seq in seqs:
            if len(found) == len(topics):
                break
            message = self._read(seq)
            if message is not None and key(message.topic) in topics:
                found.setdefault(key(message.topic), message)
        return found

    def _read(self, seq: int) -> Message | None:
        try:
            raw = self._path(seq).read_bytes()
            header, _, payload = raw.partition(b"\n")
            meta = json.loads(header)
            return Message(str(meta["topic"]), payload, int(meta["qos"]), bool(meta["retain"]))
        except FileNotFoundError:
            return None  # dropped at the bound meanwhile
        except (OSError, ValueError, KeyError) as exc:
            log.error("spool entry unreadable, removed file=%s error=%s", self._path(seq), exc)
            self.remove(seq)
            return None

    def set_aside(self, seq: int) -> Path | None:
        """Move entry ``seq`` out of the queue into ``set-aside/`` beside it (kept, never sent
        again by this spool); returns where, or None if it was gone."""
        aside = self.directory / "set-aside"
        with self._lock:
            if not self._untrack(seq):
                return None
        target = aside / self._path(seq).name
        try:
            aside.mkdir(exist_ok=True)
            self._path(seq).rename(target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SinkError("spool %s: cannot set aside: %s" % (self.directory, exc.strerror)) from exc
        return target

    def remove(self, seq: int) -> None:
        """Forget entry ``seq`` (acknowledged); a missing entry is fine."""
        with self._lock:
            if not self._untrack(seq):
                return
        self._path(seq).unlink(missing_ok=True)
