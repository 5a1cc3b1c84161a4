"""Running the simulation over many seeds (in parallel processes) and replaying one."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable

from esc.sim.world import SafetyViolation, run_seed


def with_witness(seed: int) -> bool:
    """Odd seeds run with a witness (and the faults only a witness survives)."""
    return seed % 2 == 1


def paths_for(seed: int) -> int:
    """Half the seeds without a witness have a second network between the nodes."""
    return 2 if seed % 4 == 2 else 1


def one(seed: int) -> tuple[int, str | None]:
    try:
        run_seed(seed, witness=with_witness(seed), paths=paths_for(seed))
    except SafetyViolation as e:
        return seed, f"SafetyViolation: {e}"
    except Exception as e:  # a crash of the agent code under simulation is a finding too
        return seed, f"{type(e).__name__}: {e}"
    return seed, None


def run_many(seeds: Iterable[int], jobs: int = 2) -> list[tuple[int, str]]:
    seeds = list(seeds)
    if jobs <= 1:
        results = [one(s) for s in seeds]
    else:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(one, seeds, chunksize=max(1, len(seeds) // (jobs * 8)))
    return [(s, why) for s, why in results if why is not None]


def first_failure(seeds: Iterable[int], jobs: int = 2) -> tuple[int, str] | None:
    """The first failing seed found (in completion order), stopping there."""
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for seed, why in pool.imap_unordered(one, seeds, chunksize=4):
            if why is not None:
                pool.terminate()
                return seed, why
    return None


def replay(seed: int) -> tuple[bool, str]:
    """The same seed runs the same way: its whole trace, and how it ended."""
    from esc.sim import world

    holder: list[world.World] = []
    original = world.World.__init__

    def keep(self: world.World, *a: object, **k: object) -> None:
        original(self, *a, **k)  # type: ignore[arg-type]
        holder.append(self)
    world.World.__init__ = keep  # type: ignore[method-assign]
    try:
        try:
            run_seed(seed, witness=with_witness(seed), paths=paths_for(seed))
            end, ok = f"seed {seed}: ok", True
        except Exception as e:
            end, ok = f"seed {seed}: {type(e).__name__}: {e}", False
    finally:
        world.World.__init__ = original  # type: ignore[method-assign]
    trace = holder[0].sched.trace if holder else []
    return ok, "\n".join([*trace, end])
