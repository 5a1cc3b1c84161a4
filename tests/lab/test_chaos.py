"""Every fault of the catalogue (esc.lab.chaos) once, with a writer and a prober: no
acknowledged write lost, never two writers, and the pair healthy again afterwards.
Then, on a lab with a witness, the faults a witness changes. ``make chaos`` runs
each of them several times and writes the tables to docs/benchmarks/."""

from __future__ import annotations

import pytest

from esc.lab import chaos

pytestmark = pytest.mark.lab

# grouped by lab: the module's lab is rebuilt only when the lab needed changes
PLAIN = [(f, False) for f in sorted(chaos.FAULTS.values(), key=lambda f: f.mode != "drbd")
         if not f.witness_only]
WITH_WITNESS = [(chaos.FAULTS[n], True) for n in ("partition", "partition-all", "power-cut-active",
                                                    "pause-active", "kill-witness")]
# the etcd witness's own faults (3 members beside the client)
WITH_ETCD = [(chaos.FAULTS[n], "etcd") for n in ("kill-etcd-member", "kill-etcd-all")]
# a second network between the nodes (--ha_heartbeat_list), no witness
TWO_PATHS = [(chaos.FAULTS[n], False, 2) for n in ("partition", "partition-all", "power-cut-active",
                                                   "cut-active")]


def _param(fault: chaos.Fault, witness: bool | str, paths: int = 1):  # type: ignore[no-untyped-def]
    marks = []
    if fault.needs_witness_with(paths) and not witness:
        marks.append(pytest.mark.xfail(
            reason="without a witness a partition of every network between the nodes can split the "
                   "pair (docs/failure-modes.md)", strict=True))
    tag = (f"-{witness}" if isinstance(witness, str) else "-witness" if witness else "") + \
        (f"-{paths}paths" if paths > 1 else "")
    return pytest.param(fault, witness, paths, id=f"{fault.name}{tag}", marks=marks)


@pytest.mark.parametrize(("fault", "witness", "paths"),
                         [_param(f, w) for f, w in PLAIN + WITH_WITNESS + WITH_ETCD]
                         + [_param(*x) for x in TWO_PATHS])
def test_fault(shared_lab, fault: chaos.Fault, witness: bool | str, paths: int) -> None:  # type: ignore[no-untyped-def]
    shared_lab.ready(fault.mode, witness, paths)
    result = chaos.run_fault(fault, shared_lab.tmp)
    if not result.ok:
        shared_lab.failed()
    assert not result.lost, f"{len(result.lost)} acknowledged writes lost: {result.lost[:10]}"
    assert not result.dual_writer_windows, f"two writers: {result.dual_writer_windows}"
    assert result.ok, result.row()
