"""Links of the simulator: people who walk between adjacent zones over a shared line counter.

A scenario's :class:`Link` names a source zone, the receiving zone (``into``) and a line
counter of ``into`` on their shared boundary (the registry's ``neighbours`` counter, e.g.
``wy-gate-south`` between Naresuan Bridge and the Wat Yai grounds). Each second a share
``out(t)`` of the source's departures cross into ``into`` and a share ``back(t)`` of
``into``'s departures cross back; a crossing is a departure of one zone in that second and
an arrival of the other in the next (the people crossing are among its arrivals), so the
link conserves people. The link's counter counts exactly those crossings (entries: into
``into``, exits: back), and the zones' other line counters count the rest of their flow.

Ground truth (``truth["links"]``): per link, every 5 s, the true crossings into and back.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas import Kind, Zone

__all__ = ["Counting", "Link", "LinkSims", "resolve_links"]

Target = Callable[[float], float]


def _none(t: float) -> float:
    return 0.0


@dataclass(frozen=True)
class Link:
    """People crossing from ``source`` into ``into`` (a share ``out(t)`` of the source's
    departures) and back (a share ``back(t)`` of ``into``'s) over ``counter``, a line
    counter of ``into``."""

    source: str
    into: str
    counter: str
    out: Target
    back: Target = _none


class Counting(Protocol):
    """A simulated line counter: the entries and exits since its previous reading."""

    sensor_id: str
    zone: Zone
    kind: Kind
    entries_acc: int
    exits_acc: int


@dataclass
class LinkSims:
    """The links of one run: the crossings in transit, and their truth."""

    links: list[tuple[Link, Counting]]
    rng: random.Random
    binomial: Callable[[random.Random, int, float], int]
    arriving: dict[str, int] = field(default_factory=dict)  # per zone, arrivals over links
    _sent: list[int] = field(default_factory=list)  # per link, crossed in the last second
    _acc: list[list[int]] = field(default_factory=list)
    _series: list[list[list[int]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sent = [0] * len(self.links)
        self._acc = [[0, 0] for _ in self.links]
        self._series = [[] for _ in self.links]

    @property
    def counters(self) -> set[str]:
        return {lk.counter for lk, _ in self.links}

    def step(self, t: int, now_ms: int, left: dict[str, int]
             ) -> tuple[dict[str, int], dict[str, int]]:
        """Second ``t``: the crossings out of ``left`` (each zone's departures this second,
        reduced by those who cross), counted on the links' counters. Returns per zone the
        arrivals and departures over a link's counter this second (the rest of the zone's
        flow is its other counters')."""
        via_in = self.arriving
        via_out: dict[str, int] = {}
        self.arriving = {}
        for i, (lk, counter) in enumerate(self.links):
            sent = self.binomial(self.rng, left[lk.source], lk.out(t))
            left[lk.source] -= sent
            back = self.binomial(self.rng, left[lk.into], lk.back(t))
            left[lk.into] -= back
            self.arriving[lk.into] = self.arriving.get(lk.into, 0) + sent
            self.arriving[lk.source] = self.arriving.get(lk.source, 0) + back
            via_out[lk.source] = via_out.get(lk.source, 0) + sent
            via_out[lk.into] = via_out.get(lk.into, 0) + back
            counter.entries_acc += self._sent[i]  # crossed last second: into ``into`` now
            counter.exits_acc += back
            acc = self._acc[i]
            acc[0] += self._sent[i]
            acc[1] += back
            self._sent[i] = sent
            if t % 5 == 0:
                self._series[i].append([now_ms, *acc])
                self._acc[i] = [0, 0]
        return via_in, via_out

    def truth(self) -> list[dict[str, Any]]:
        return [{"source": lk.source, "into": lk.into, "counter": lk.counter,
                 "series": series} for (lk, _), series in zip(self.links, self._series,
                                                            strict=True)]


def resolve_links(links: Iterable[Link], zones: Iterable[Zone],
                  counters: Iterable[Counting]) -> list[tuple[Link, Counting]]:
    """The links between zones of the run, each with its counter's simulation."""
    zs = list(zones)
    ids = {z.zone_id for z in zs}
    sims = list(counters)
    out: list[tuple[Link, Counting]] = []
    for lk in links:
        if lk.source not in ids or lk.into not in ids:
            continue
        sim = next((s for s in sims if s.sensor_id == lk.counter), None)
        if sim is None or sim.kind is not Kind.LINE_COUNT or sim.zone.zone_id != lk.into:
            raise ValueError(f"link {lk.source} -> {lk.into}: {lk.counter} is not a line "
                             f"counter of {lk.into}")
        if any(sim is s for _, s in out):
            raise ValueError(f"link {lk.source} -> {lk.into}: {lk.counter} is another link's")
        # The flow indicators' truth (indicator_truth) takes every counter with a width to
        # count its zone's whole flow: not so in a zone with a link.
        if any(z.zone_id in (lk.source, lk.into) and s.kind is Kind.LINE_COUNT and s.width_m
               for z in zs for s in z.sensors):
            raise ValueError(f"link {lk.source} -> {lk.into}: a line counter with width_m "
                             f"in one of its zones")
        out.append((lk, sim))
    return out
