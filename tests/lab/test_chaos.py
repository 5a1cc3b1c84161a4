"""Every fault of the catalogue (esc.lab.chaos) once, with a writer and a prober: no
acknowledged write lost, never two writers, and the pair healthy again afterwards.
``make chaos`` runs each of them several times and writes the table to docs/."""

from __future__ import annotations

import pytest

from esc.lab import chaos

pytestmark = pytest.mark.lab

# grouped by lab mode: the module's lab is rebuilt only when the mode changes
FAULTS = sorted(chaos.FAULTS.values(), key=lambda f: f.mode != "drbd")


@pytest.mark.parametrize("fault", [
    pytest.param(f, id=f.name, marks=[pytest.mark.xfail(
        reason="without a witness a partition can split the pair (docs/failure-modes.md)", strict=True)]
        if f.needs_witness else [])
    for f in FAULTS])
def test_fault(shared_lab, fault: chaos.Fault) -> None:  # type: ignore[no-untyped-def]
    shared_lab.ready(fault.mode)
    result = chaos.run_fault(fault, shared_lab.tmp)
    if not result.ok:
        shared_lab.failed()
    assert not result.lost, f"{len(result.lost)} acknowledged writes lost: {result.lost[:10]}"
    assert not result.dual_writer_windows, f"two writers: {result.dual_writer_windows}"
    assert result.ok, result.row()
