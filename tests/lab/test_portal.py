"""The portal on https://VIP:9001/ in a real browser (Debian's chromium driven by
Playwright), from the lab's client namespace: log in, see the pair, see a deployment
made through the REST API, lose the active and see the new one on the same page (the
live stream reconnects through the VIP, the session is in the replicated database),
switch back from the page (who asked is in the history), log out."""

from __future__ import annotations

import json
import time

import pytest

from browser import chromium_in
from esc.lab import lab as labmod
from esc.lab import net

pytestmark = pytest.mark.lab


def _role_of(page, node: str, timeout_s: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until the live card says ``node`` is ACTIVE (the page is not reloaded)."""
    t = time.monotonic()
    page.wait_for_function(
        """node => { const el = document.getElementById('role-' + node);
                     return el && el.textContent.trim() === 'ACTIVE'; }""",
        arg=node, timeout=timeout_s * 1000)
    return time.monotonic() - t


def test_the_portal_through_a_failover_and_a_switchover(lab) -> None:  # type: ignore[no-untyped-def]
    state = labmod.load_state()
    url = f"https://{lab.vip}:{state['portal_port']}"
    old = lab.active()
    new = lab.other(old)
    assert lab.post("portal-dep") in (201, 202)
    # the standby's 9001 is closed
    code = (f"import socket\ntry: socket.create_connection(({labmod.node_ip(new)!r}, 9001), 3)\n"
            "except ConnectionRefusedError: print('refused')")
    assert lab.client_python(code).strip() == "refused"
    with chromium_in(net.ns(labmod.CLIENT)) as browser:
        context = browser.new_context(ignore_https_errors=True)  # the pair's own certificate
        page = context.new_page()
        page.on("dialog", lambda d: d.accept())  # the confirmations of the admin's actions
        page.goto(url + "/")
        assert page.url.endswith("/login")
        page.fill("#login-user", state["portal_user"])
        page.fill("#login-password", "wrong")
        page.click("#login-submit")
        assert "wrong user or password" in page.inner_text("#error")
        page.fill("#login-user", state["portal_user"])
        page.fill("#login-password", state["portal_password"])
        page.click("#login-submit")
        page.wait_for_selector(f"#role-{old}")
        assert page.inner_text(f"#role-{old}") == "ACTIVE"
        assert page.inner_text("#role-peer") == "STANDBY"
        assert page.inner_text("#user") == f"{state['portal_user']} (admin)"

        page.click("a[href='/deployments']")
        page.wait_for_selector("#deployments")
        assert "portal-dep" in page.inner_text("#deployments")

        page.click("a[href='/']")
        page.wait_for_selector(f"#role-{old}")
        labmod.kill(old)
        # the stream breaks with the old active; the page opens it again through the VIP
        _role_of(page, new, timeout_s=30)
        assert "/login" not in page.url  # still logged in: the session was replicated

        labmod.start(old)
        lab.wait_roles({old: "STANDBY", new: "ACTIVE"}, timeout=60)
        deadline = time.monotonic() + 30  # a complete synchronous standby to switch to
        while not lab.status(new).get("db", {}).get("peer_complete"):
            assert time.monotonic() < deadline, "the old active did not become a complete standby"
            time.sleep(0.3)
        # the portal asks the agent's shared status, up to 0.5 s older than lab.status:
        # "not a complete standby" is then still the truth as the portal knows it
        deadline = time.monotonic() + 10
        while True:
            page.evaluate("document.querySelector('#result').innerHTML = ''")
            page.click("#switchover")
            page.wait_for_selector("#result p")
            said = page.inner_text("#result")
            if "not a complete standby" not in said or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "switchover: asked" in said
        _role_of(page, old, timeout_s=30)
        lab.wait_roles({old: "ACTIVE", new: "STANDBY"}, timeout=30)

        page.goto(url + "/history?kind=switchover")
        assert f"portal user {state['portal_user']}" in page.inner_text("table.history")

        # a viewer, added on the active, known on both (replicated); it sees, it cannot act
        assert "run this on the active" in lab.escadm(new, "portal", "user", "add", "--user_pass",
                                                      "eve:viewer-pass-1", check=False).stderr
        lab.escadm(old, "portal", "user", "add", "--user_pass", "eve:viewer-pass-1", "--role", "viewer")
        shown = json.loads(lab.escadm(new, "portal", "show", "--json").stdout)
        assert {"name": "eve", "role": "viewer", "from": "escadm portal user add"} in shown["users"]
        viewer = browser.new_context(ignore_https_errors=True).new_page()
        viewer.goto(url + "/login")
        viewer.fill("#login-user", "eve")
        viewer.fill("#login-password", "viewer-pass-1")
        viewer.click("#login-submit")
        viewer.wait_for_selector(f"#role-{old}")
        assert viewer.inner_text("#user") == "eve (viewer)" and viewer.query_selector("#switchover") is None

        page.goto(url + "/")
        page.click("#logout")
        page.wait_for_url("**/login")
        page.goto(url + "/events")
        assert page.url.endswith("/login")  # the session is over on the server too
        context.close()
