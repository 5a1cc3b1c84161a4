"""The fault-injection suite's pure parts: the two-writers checker, fault selection
and the refusal of bad knobs (no lab needed)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from esc.cli.escadm import cli
from esc.lab import chaos
from esc.lab.lab import LabError
from esc.lab.measure import Ack, acks_of, dual_writer_windows


def a(node: str, sent: float, answered: float | None = None) -> Ack:
    return Ack(node, f"{node}-{sent}", sent, sent + 0.01 if answered is None else answered)


def test_one_failover_is_not_two_writers() -> None:
    acks = [a("n1", t / 10) for t in range(10)] + [a("n2", 2 + t / 10) for t in range(10)]
    assert dual_writer_windows(acks) == []


def test_interleaved_writers_are_flagged_as_one_window() -> None:
    acks = [a("n1", 0.0)] + [a(n, 1 + t / 10) for t in range(10) for n in ("n1", "n2")] + [a("n1", 5.0)]
    windows = dual_writer_windows(acks)
    assert len(windows) == 1 and windows[0][0] <= 1.2 and windows[0][1] >= 1.8


def test_a_failover_and_a_failback_are_not_two_writers() -> None:
    """A double failure: n1, then n2 alone, then n1 again with n2's data."""
    acks = ([a("n1", t / 10) for t in range(10)] + [a("n2", 2 + t / 10) for t in range(10)]
            + [a("n1", 6 + t / 10) for t in range(10)])
    assert dual_writer_windows(acks) == []


def test_overlapping_requests_are_not_proof() -> None:
    """An old node's slow answer that overlaps the new node's first ones proves nothing:
    its commit may have happened before the takeover."""
    acks = [a("n1", 0.0), a("n1", 0.5, answered=2.5), a("n2", 1.0), a("n2", 2.0)]
    assert dual_writer_windows(acks) == []


def test_acks_of_both_records() -> None:
    writer = {"acked": [["w-1", 10.5, "n1", 10.4], ["w-2", 11.0, "n1"]]}
    prober = {"acks": [["n2", "probe-n2-1", 12.0, 12.1]]}
    got = acks_of(writer, prober)
    assert got[0] == Ack("n1", "w-1", 10.4, 10.5) and got[1].sent == got[1].answered == 11.0
    assert got[2] == Ack("n2", "probe-n2-1", 12.0, 12.1)


def test_select() -> None:
    names = [f.name for f in chaos.select(["restart-both", "pause-active"])]
    assert names == ["pause-active", "restart-both"]  # catalogue order
    assert len(chaos.select(None)) == len(chaos.FAULTS)
    with pytest.raises(LabError, match="unknown fault.*nope"):
        chaos.select(["nope"])


@pytest.mark.parametrize(("args", "message"), [
    (["--fault", "nope"], "unknown fault(s) nope"),
    (["--count", "0"], "0 is not in the range"),
    (["--count", "many"], "is not a valid integer"),
])
def test_bad_knobs_are_refused(args: list[str], message: str) -> None:
    r = CliRunner().invoke(cli, ["lab", "chaos", *args])
    assert r.exit_code == 2 and message in r.output


def test_report_table() -> None:
    r = chaos.Result("pause-active", True, 100, [], [], 2.5, 3.5, {"n1": "ACTIVE", "n2": "STANDBY"},
                     {"n1": "STANDBY", "n2": "ACTIVE"})
    text = chaos.report([r, r], "Fault injection, test")
    assert "| pause-active | 2 | 2 | 0 | 0 | 2.50 / 2.50 | 3.50 / 3.50 | n1=STANDBY n2=ACTIVE |" in text
