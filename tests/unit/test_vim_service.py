"""The VIM helper (root) and its client in the unprivileged controller: every driver
call and every error goes through the socket as the driver gave it; a bad name or spec
is refused before the driver sees it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from esc import privileges
from esc.vim.driver import Network, VimError, VmConflict, VmNotFound, VmSpec
from esc.vim.fake import FakeDriver
from esc.vim.service import RemoteDriver, serve

NET = Network("sw", "br0")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the helper's socket is chowned")


@pytest.fixture
def remote() -> Iterator[tuple[RemoteDriver, FakeDriver, Path]]:
    privileges.ensure_service_user()
    d = Path(tempfile.mkdtemp(prefix="esc-vim-"))
    sock = d / "vim.sock"
    fake = FakeDriver()
    srv = serve(sock, fake)
    try:
        yield RemoteDriver(sock, timeout=5), fake, sock
    finally:
        srv.shutdown()
        sock.unlink(missing_ok=True)
        d.rmdir()


def test_calls_and_answers_go_through(remote: tuple[RemoteDriver, FakeDriver, Path]) -> None:
    driver, fake, sock = remote
    st = sock.stat()
    assert st.st_mode & 0o777 == 0o660 and st.st_gid == privileges.service_ids()[1]
    spec = VmSpec("t.d.vm1", "cirros", "10.0.0.5/24", NET)
    info = driver.create_vm(spec)
    assert info == fake.get("t.d.vm1")
    assert driver.get("t.d.vm1") == info and driver.list() == [info]
    assert driver.spec("t.d.vm1") == spec
    assert driver.stop_vm("t.d.vm1").state == "stopped" == fake.get("t.d.vm1").state  # type: ignore[union-attr]
    assert driver.reboot_vm("t.d.vm1").name == "t.d.vm1"
    driver.delete_vm("t.d.vm1")
    assert driver.get("t.d.vm1") is None and driver.spec("t.d.vm1") is None
    driver.delete_vm("t.d.vm1")  # idempotent, as the driver


def test_errors_keep_their_kind(remote: tuple[RemoteDriver, FakeDriver, Path]) -> None:
    driver, fake, _ = remote
    with pytest.raises(VmNotFound):
        driver.reboot_vm("absent")
    driver.create_vm(VmSpec("vm", "cirros", "10.0.0.5/24", NET))
    with pytest.raises(VmConflict):
        driver.create_vm(VmSpec("vm", "web", "10.0.0.5/24", NET))
    fake.fail_next = "the VIM is full"
    with pytest.raises(VimError, match="the VIM is full"):
        driver.create_vm(VmSpec("vm2", "cirros", "10.0.0.6/24", NET))


def test_bad_names_and_specs_are_refused_before_the_driver(remote: tuple[RemoteDriver, FakeDriver, Path]
                                                          ) -> None:
    driver, fake, _ = remote
    for bad in ("../etc", "a b", "-x", "x" * 70):
        with pytest.raises(ValueError):
            driver.get(bad)
    http = driver.http
    for body in ({"name": "vm", "image": "cirros", "address": "10.0.0.5", "network": {"namespace": "sw",
                                                                                     "bridge": "br0"}},
                 {"name": "other", "image": "cirros", "address": "10.0.0.5/24",
                  "network": {"namespace": "sw", "bridge": "br0"}},
                 {"name": "vm"}, []):
        r = http.put("/v1/vms/vm", json=body)
        assert r.status_code == 400, body
    assert fake.list() == []


def test_a_helper_that_is_gone_is_a_vim_error(tmp_path: Path) -> None:
    with pytest.raises(VimError, match="does not answer"):
        RemoteDriver(tmp_path / "nothing.sock", timeout=1).list()
