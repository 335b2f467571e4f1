"""Lanes: the worker's view of a :class:`~streams.pipeline.Pipeline` fed from the by-zone topic.

The zone router (streams/route.py) merges every upstream partition's readings of a zone's
by-zone partition ``p`` into one log. Routers run in several workers and read their input
partitions at different speeds (a backlog, a rebalance), so one log interleaves streams whose
event times are minutes apart: judged by one clock, the slower stream's readings would be
late. Each by-zone partition therefore has one clock per upstream partition, a *lane*:
``lane = p * WIDTH + upstream partition % WIDTH``, each an ordered sub-stream, as each input
partition was before the router. A zone is driven by the lane of its first reading; readings of
the zone on another lane (a second partitioner) are placed but move no clock (the engine's
rule for mis-keyed readings).

Everything the worker does by by-zone partition goes through here: process, snapshot (one
container of the partition's lane snapshots), restore, drop, tick and the watermark.

**Routed again.** A router that crashed (or froze) before committing its input is followed by
one that routes the same input again: every record of an upstream partition arrives on the
by-zone partition once more, in the same order. Each by-zone partition remembers, per upstream
(topic, partition), the position of the last record it took, (origin offset, first item index
of a split batch); a record at or before it is a repeat and is dropped whole (counted as a
duplicate). Readings alone could not be deduplicated as exactly: a sensor's dedup ring holds
its last 16 event ids, fewer than a fetch routed again may repeat.
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from .density import MAX_PARTITIONS
from .pipeline import Pipeline
from .records import Consumed, Origin, Outputs, read_origin

log = logging.getLogger(__name__)

WIDTH = 64
"""Lanes per by-zone partition (upstream partitions beyond it share lanes, modulo)."""
MAX_BY_ZONE_PARTITIONS = MAX_PARTITIONS // WIDTH
LANES_FORMAT = 1
"""Format of the lane container a by-zone partition's snapshot is."""


class Lanes:
    """By-zone partitions over ``pipe``'s engine partitions (the lanes)."""

    def __init__(self, pipe: Pipeline, width: int = WIDTH) -> None:
        self.pipe = pipe
        self.width = width
        # Per (by-zone partition, upstream topic, upstream partition): the position of the
        # last record taken, (origin offset, first item index or -1).
        self.taken: dict[tuple[int, str, int], tuple[int, int]] = {}

    def lanes_of(self, partition: int) -> range:
        if not 0 <= partition < MAX_PARTITIONS // self.width:
            raise ValueError(f"by-zone partition {partition} out of 0.."
                             f"{MAX_PARTITIONS // self.width - 1}")
        return range(partition * self.width, (partition + 1) * self.width)

    def _in_use(self, partition: int) -> list[int]:
        r = self.lanes_of(partition)
        return self.pipe.engine.partitions_in_use(r.start, r.stop)

    def process(self, messages: Sequence[Consumed], now_ms: int | None) -> Outputs:
        fresh: list[Consumed] = []
        origins: list[Origin] = []
        for m in messages:
            o = read_origin(m)
            if o.message is not m:  # routed (no origin: the record stands for itself)
                key = (m.partition, o.message.topic, o.message.partition)
                pos = (o.message.offset, o.items[0] if o.items else -1)
                last = self.taken.get(key)
                if last is not None and pos <= last:
                    continue
                self.taken[key] = pos
            fresh.append(m)
            origins.append(o)
        out = self.pipe.process_routed_batch(fresh, now_ms, lane_width=self.width,
                                             origins=origins)
        out.duplicates += len(messages) - len(fresh)
        return out

    def tick(self, now_ms: int, partitions: Iterable[int] | None,
             upstream: Iterable[int] | None = None) -> Outputs:
        """Wall-clock progress for the lanes of ``partitions`` (None: all) whose upstream
        partition is in ``upstream`` (None: any): a lane whose router is behind or frozen
        keeps its clock, so the readings it has yet to route are not made late."""
        if partitions is None and upstream is None:
            return self.pipe.tick(now_ms, None)
        parts = range(MAX_PARTITIONS // self.width) if partitions is None else partitions
        ups = None if upstream is None else {u % self.width for u in upstream}
        lanes = [p * self.width + u for p in parts
                 for u in (range(self.width) if ups is None else sorted(ups))]
        return self.pipe.tick(now_ms, lanes)

    def drop_partition(self, partition: int) -> list[str]:
        self.taken = {k: v for k, v in self.taken.items() if k[0] != partition}
        return [z for lane in self._in_use(partition) for z in self.pipe.drop_partition(lane)]

    def watermark(self, partition: int) -> int | None:
        marks = [w for lane in self._in_use(partition)
                 if (w := self.pipe.engine.watermark(lane)) is not None]
        return max(marks) if marks else None

    def snapshot(self, partition: int) -> bytes:
        """The snapshots of the partition's lanes, in one container (numpy ``.npz``)."""
        lanes = self._in_use(partition)
        arrays = {f"lane_{lane}": np.frombuffer(self.pipe.snapshot(lane), dtype=np.uint8)
                  for lane in lanes}
        taken = sorted((k[1], k[2], v[0], v[1]) for k, v in self.taken.items()
                       if k[0] == partition)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, lanes_format=np.array([LANES_FORMAT]),
                 partition=np.array([partition]), lanes=np.array(lanes, dtype=np.int64),
                 taken_topics=np.array([t[0] for t in taken], dtype=str),
                 taken_pos=np.array([t[1:] for t in taken], dtype=np.int64).reshape(-1, 3),
                 **arrays)
        return zlib.compress(buf.getvalue(), 1)

    def restore(self, blob: bytes, now_ms: int | None = None) -> tuple[int, bool]:
        """Put back a :meth:`snapshot`; return (zones restored, whether ``blob`` was a lane
        container). Anything else (a snapshot of a worker before the router: its offset is
        of another topic) only carries its open episodes over (``Pipeline.restore``): the
        caller must not resume at its offset."""
        with np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False) as f:
            files = set(f.files)
            if "lanes_format" not in files:
                subs = None
            else:
                fmt = int(f["lanes_format"][0])
                if fmt != LANES_FORMAT:
                    raise ValueError(f"lane container format {fmt} (this version reads "
                                     f"{LANES_FORMAT})")
                subs = [f[f"lane_{int(lane)}"].tobytes() for lane in f["lanes"].tolist()]
                part = int(f["partition"][0])
                if "taken_pos" in files:
                    for topic, (up, off, idx) in zip(f["taken_topics"].tolist(),
                                                     f["taken_pos"].tolist(), strict=True):
                        self.taken[(part, str(topic), int(up))] = (int(off), int(idx))
        if subs is None:
            self.pipe.restore(blob, now_ms, density=False)
            log.warning("a snapshot from before the zone router: its open episodes are "
                        "carried over, its offset (of the sensor topic) is not used")
            return 0, False
        return sum(self.pipe.restore(sub, now_ms) for sub in subs), True


class Direct:
    """The same surface as :class:`Lanes` for a worker that reads the sensor topic itself
    (no router): each input partition is one engine partition, its snapshot the pipeline's."""

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe

    def process(self, messages: Sequence[Consumed], now_ms: int | None) -> Outputs:
        return self.pipe.process_sensor_batch(messages, now_ms)

    def tick(self, now_ms: int, partitions: Iterable[int] | None,
             upstream: Iterable[int] | None = None) -> Outputs:
        return self.pipe.tick(now_ms, partitions)

    def drop_partition(self, partition: int) -> list[str]:
        return self.pipe.drop_partition(partition)

    def watermark(self, partition: int) -> int | None:
        return self.pipe.engine.watermark(partition)

    def snapshot(self, partition: int) -> bytes:
        return self.pipe.snapshot(partition)

    def restore(self, blob: bytes, now_ms: int | None = None) -> tuple[int, bool]:
        return self.pipe.restore(blob, now_ms), True
