"""RESULTS.md and its plots from one benchmark run."""

from __future__ import annotations

import math
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .__main__ import Bench

LABELS = {"ceiling": "ceiling (raw aiokafka + orjson)",
          "io-ceiling": "I/O ceiling (ceiling + producing safetour's output records)",
          "safetour": "safetour worker",
          "faust-native": "faust-native (agent + hopping Table)",
          "quixstreams": "quixstreams (sliding window)"}


def _f(x: float, digits: int = 0) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _ratio(a: float, b: float) -> str:
    if any(math.isnan(v) for v in (a, b)) or b <= 0:
        return "n/a"
    return f"{a / b:.2f}x" if a / b < 10 else f"{a / b:.0f}x"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} vCPU {cpu}, {mem:.0f} GiB, {platform.system()} {platform.release()}"


def plots(bench: Bench, out_dir: Path) -> list[str]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from .__main__ import SHAPES, SYSTEMS  # noqa: PLC0415

    res = bench.res
    names = []
    systems = [s for s in SYSTEMS if any((s, sh) in res.rates for sh in SHAPES)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.38
    for i, shape in enumerate(SHAPES):
        vals = [res.median(s, shape) for s in systems]
        xs = [j + (i - 0.5) * width for j in range(len(systems))]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in vals], width,
                      label="1 reading / message" if shape == "single"
                      else "100 readings / message")
        for b, v in zip(bars, vals, strict=True):
            ax.annotate(_f(v), (b.get_x() + b.get_width() / 2, max(b.get_height(), 1)),
                        ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(range(len(systems)), [LABELS[s].split(" (")[0] for s in systems])
    ax.set_ylabel("readings / s (median, log scale)")
    ax.set_title("Throughput on the same topic, one run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=110)
    plt.close(fig)
    names.append("throughput.png")

    lat = res.latency
    if lat.get("samples"):
        fig, ax = plt.subplots(figsize=(8, 4))
        for label, raw in (("raw produce → consume", lat["raw_samples"]),
                           ("safetour: closing reading → density published", lat["samples"])):
            xs = sorted(raw)
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log)")
        ax.set_ylabel("fraction ≤ x")
        ax.set_title(f"Latency at {lat['rate']:,.0f} readings/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "latency.png", dpi=110)
        plt.close(fig)
        names.append("latency.png")

    if res.scale:
        fig, ax1 = plt.subplots(figsize=(8, 4))
        zs = [p["zones"] for p in res.scale]
        ax1.plot(zs, [p["ns_per_reading"] / 1000 for p in res.scale], "o-",
                 label="µs per reading")
        ax1.set_xscale("log")
        ax1.set_xlabel("zones (log)")
        ax1.set_ylabel("µs of worker time per reading")
        ax2 = ax1.twinx()
        ax2.plot(zs, [p["peak_rss_mib"] for p in res.scale], "s--", color="tab:red",
                 label="peak RSS, MiB")
        ax2.set_ylabel("peak RSS, MiB")
        ax1.set_title("Cost per reading and memory against zone count")
        fig.legend(loc="upper left", bbox_to_anchor=(0.1, 0.9))
        fig.tight_layout()
        fig.savefig(out_dir / "scale.png", dpi=110)
        plt.close(fig)
        names.append("scale.png")
    return names


def ratio_rows(bench: Bench) -> list[tuple[str, list[str]]]:
    """The ratio table: safetour against each system run, per shape (medians)."""
    from .__main__ import SHAPES, SYSTEMS  # noqa: PLC0415

    res = bench.res
    return [(f"safetour / {LABELS[other].split(' (')[0]}",
             [_ratio(res.median("safetour", sh), res.median(other, sh)) for sh in SHAPES])
            for other in SYSTEMS if other != "safetour"
            and any((other, sh) in res.rates for sh in SHAPES)]


def write_results(bench: Bench, out: Path) -> None:
    from .__main__ import SHAPES, SYSTEMS, versions  # noqa: PLC0415

    res, a = bench.res, bench.args
    out.parent.mkdir(parents=True, exist_ok=True)
    images = plots(bench, out.parent)
    v = versions()
    lines = [
        "# End-to-end benchmark results" + (" (SMOKE RUN: no claims)" if a.smoke else ""),
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python -m benchmarks"
        f"{' --smoke' if a.smoke else ''}` ({a.reps} repetitions, medians; "
        f"{a.readings:,} readings over {a.zones} zones per topic). Machine: {machine()}; "
        "shared and noisy, so only ratios measured in this run mean anything.",
        "",
        "Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()) +
        "; Apache Kafka 4.1.1 (KRaft, embedded, loopback).",
        "",
        "## Throughput (readings/s to the last density output)",
        "",
        "| system | 1 reading/msg | x ceiling | 100 readings/msg | x ceiling | runs |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for s in SYSTEMS:
        if not any((s, sh) in res.rates for sh in SHAPES):
            continue  # not run (--systems)
        row = [LABELS[s]]
        for shape in SHAPES:
            m = res.median(s, shape)
            row += [_f(m), _ratio(m, res.median("ceiling", shape))]
        runs = "; ".join(
            f"{shape}: " + ", ".join(_f(x) for x in res.rates.get((s, shape), []))
            for shape in SHAPES)
        lines.append("| " + " | ".join(row) + f" | {runs} |")
    lines += ["", "| ratio (medians) | 1 reading/msg | 100 readings/msg |", "|---|---:|---:|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in ratio_rows(bench)]
    if bench.captured.records:
        lines += ["", "The I/O ceiling consumes and decodes as the ceiling does and produces, "
                  "to topics of its own and the same partitions, the records the safetour run "
                  "of the same repetition produced (last run: "
                  f"{len(bench.captured.records):,} records, "
                  f"{bench.captured.bytes / 2**20:.1f} MiB), each once the input has passed "
                  "the point where safetour could emit it; idempotent, acks=all, 5 ms linger, "
                  f"`{a.io_mode}` mode (`benchmarks/ceiling_io.py`)."]
    lat = res.latency
    if lat:
        lines += [
            "", "## Latency at half of safetour's rate", "",
            f"{lat['rate']:,.0f} readings/s for {lat['seconds']:.0f} s of live readings "
            "(event time = now) on 108 zones.", "",
            "| path | p50 ms | p99 ms |", "|---|---:|---:|",
            f"| raw: producer → a plain consumer | {_f(lat['raw_p50'])} | "
            f"{_f(lat['raw_p99'])} |",
            f"| safetour: reading that closes a window → its density record appended | "
            f"{_f(lat['p50'])} | {_f(lat['p99'])} |",
        ]
    if res.scale:
        base = res.scale[0]["ns_per_reading"]
        lines += ["", "## Memory and cost per reading against zone count", "",
                  "Single readings; the rate runs from the worker's readiness (`/readyz`) to "
                  "its last density output, the whole job including the first windows' "
                  "wait, so it reads lower than the throughput table's steady state.", "",
                  "| zones | readings | readings/s | µs per reading | x of fewest zones | "
                  "peak RSS MiB |", "|---:|---:|---:|---:|---:|---:|"]
        for p in res.scale:
            lines.append(f"| {p['zones']:,} | {p['readings']:,} | {_f(p['rate'])} | "
                         f"{_f(p['ns_per_reading'] / 1000, 1)} | "
                         f"{_ratio(p['ns_per_reading'], base)} | {_f(p['peak_rss_mib'])} |")
    rec = res.recovery
    if rec:
        lines += ["", "## Recovery after kill -9", "",
                  f"{rec['zones']:,} zones of state; snapshots every 2 s. First density "
                  f"output {_f(rec['seconds_to_first_output'], 1)} s after the restart "
                  "(process start included); the "
                  f"{rec['compared']} values of that first window "
                  f"{'equal' if rec['first_window_matches_uninterrupted'] else 'do NOT equal'}"
                  " those of an uninterrupted worker on the same input."]
    if res.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res.notes]
    lines += ["", "## Plots", ""] + [f"![{i}]({i})" for i in images]
    lines += ["", "Targets, the profile and what it says: [ANALYSIS.md](ANALYSIS.md). The density "
              "kernels alone: [RESULTS-kernels.md](RESULTS-kernels.md)."]
    out.write_text("\n".join(lines) + "\n")
