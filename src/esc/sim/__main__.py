"""``python -m esc.sim``: run the simulation over many seeds, or replay one.

    python -m esc.sim --seeds 10000 [--start 0] [--jobs 2]
    python -m esc.sim --seed 1234 --trace      # replays one seed and prints its trace
"""

from __future__ import annotations

import argparse
import sys
import time

from esc.sim.run import replay, run_many


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="esc.sim", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1000)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, help="replay this seed")
    p.add_argument("--trace", action="store_true", help="print the replayed seed's trace")
    a = p.parse_args(argv)
    if a.seed is not None:
        ok, text = replay(a.seed)
        print(text if a.trace or not ok else text.splitlines()[-1])
        return 0 if ok else 1
    t0 = time.monotonic()
    failures = run_many(range(a.start, a.start + a.seeds), jobs=a.jobs)
    took = time.monotonic() - t0
    for seed, why in failures:
        print(f"seed {seed}: {why}\n  replay: python -m esc.sim --seed {seed} --trace")
    print(f"{a.seeds} seeds in {took:.1f}s: {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
