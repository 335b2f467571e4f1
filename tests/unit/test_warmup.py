"""The kernels' warm-up (streams/warmup.py): after it, a pipeline compiles nothing new."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]

# In a process of its own: in this one, other tests may have compiled the kernels already.
CHILD = textwrap.dedent("""
    import sys
    import orjson
    from numba.core.registry import CPUDispatcher
    from benchmarks import data
    from streams import grid_kernels, kernels, slope_kernels
    from streams.pipeline import Pipeline
    from streams.records import SourceMessage
    from streams.warmup import warm_up

    def compiled():
        return {f"{m.__name__}.{n}": len(f.signatures)
                for m in (kernels, slope_kernels, grid_kernels)
                for n, f in vars(m).items() if isinstance(f, CPUDispatcher)}

    before = compiled()
    seconds = warm_up()
    warm = compiled()
    ds = data.build(27, 6000)  # the benchmark's input: the demo registry's zones, cloned
    pipe = Pipeline(ds.zones)
    for k in range(0, len(ds.batch100), 5):
        pipe.process_sensor_batch([SourceMessage("t", 0, k + i, None, key, value)
                                   for i, (key, value) in enumerate(ds.batch100[k:k + 5])])
    pipe.finish()
    print(orjson.dumps({"before": before, "warm": warm, "after": compiled(),
                        "seconds": seconds}).decode())
""")


@pytest.mark.slow
def test_after_the_warm_up_a_pipeline_compiles_no_kernel() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env, check=True,
                         capture_output=True, timeout=300).stdout
    got = orjson.loads(out.splitlines()[-1])
    assert not any(got["before"].values()), got["before"]  # nothing ran before it
    entries = {n for n in got["warm"] if not n.split(".")[-1].startswith("_")}
    assert len(entries) == 6  # arrival, ingest, close; Theil-Sen; the grid's two
    assert all(got["warm"][n] >= 1 for n in entries), got["warm"]
    assert got["after"] == got["warm"]  # no kernel compiled for the real input
