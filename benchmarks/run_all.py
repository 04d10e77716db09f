"""Run every benchmark and print one table (``make bench``).

Each script runs in its own Python process (``script.py --json FILE``), so
one benchmark's memory, threads and warm caches never affect another's; a
script that crashes or overruns its time limit shows as an ERROR row and the
others still run. Columns: the figure, the measured value, the baseline
measured in the same run, their ratio, the target, and PASS / MISS (INFO:
no target; SKIPPED: not measurable here, e.g. no GPU).

A MISS is a finding, not a failure: the exit status is 1 only when a script
failed to run. The whole run takes a few minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import Row, format_table, row

HERE = Path(__file__).resolve().parent
# script -> time limit in seconds (typical run on 2 cores: 10 s, 30 s, 100 s, 40 s, 5 s)
SCRIPTS = {"encoding.py": 120, "pools.py": 240, "training.py": 420, "layout.py": 240, "gpu.py": 300}


def run_script(name: str, limit: int) -> list[Row]:
    """The rows of one benchmark script, run in a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="itertrain-bench-") as tmp:
        out = Path(tmp) / "rows.json"
        try:
            done = subprocess.run([sys.executable, str(HERE / name), "--json", str(out)], cwd=HERE.parent,
                                  capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return [row(name, None, "", status="ERROR", note=f"did not finish within {limit} s")]
        if done.returncode != 0 or not out.exists():
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            return [row(name, None, "", status="ERROR", note=last)]
        return json.loads(out.read_text())


def main() -> int:
    started = time.perf_counter()
    rows: list[Row] = []
    timings = []
    for name, limit in SCRIPTS.items():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rows += [{"bench": name.removesuffix(".py"), **r} for r in run_script(name, limit)]
        timings.append(f"{name} {time.perf_counter() - t0:.0f} s")
    counts = Counter(r["status"] for r in rows)
    print(format_table(rows))
    print(f"\n{', '.join(f'{counts[s]} {s}' for s in ('PASS', 'MISS', 'INFO', 'SKIPPED', 'ERROR') if counts[s])}")
    print(f"total wall time {time.perf_counter() - started:.0f} s ({'; '.join(timings)})")
    return 1 if counts["ERROR"] else 0


if __name__ == "__main__":
    sys.exit(main())
