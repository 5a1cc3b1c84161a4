"""The VIM helper: the local driver's calls served to the unprivileged controller.

Making a VM here means namespaces, veth links and processes in them: root's work. The
controller runs as the ``esc`` user (esc.privileges), so the agent runs this small
helper as root (``python -m esc.vim.service --root R``, while the node has a VIM
configured) on a unix socket only root and the ``esc`` group can reach, and the
controller's :class:`RemoteDriver` calls it. The helper takes nothing but the driver's
own calls, each checked as the driver checks them (names, specs); what it can do is
what the controller could ask of the driver anyway.

    GET    /v1/vms                 -> [VmInfo]
    GET    /v1/vms/NAME            -> VmInfo (404)
    PUT    /v1/vms/NAME   VmSpec   -> VmInfo (409 another spec)
    DELETE /v1/vms/NAME            -> 204
    POST   /v1/vms/NAME/reboot     -> VmInfo (404)
    GET    /v1/vms/NAME/spec       -> VmSpec (404)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from datetime import datetime
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from esc import logs, web
from esc.config import ConfigError, NodePaths, load_config
from esc.vim.driver import Network, VimError, VmConflict, VmInfo, VmNotFound, VmSpec, check_name

log = logging.getLogger("esc.vim.service")

CALL_TIMEOUT_S = 60.0  # a creation waits for the guest to answer (the driver's start_timeout)


def spec_to_dict(spec: VmSpec) -> dict:
    return {"name": spec.name, "image": spec.image, "address": spec.address,
            "network": {"namespace": spec.network.namespace, "bridge": spec.network.bridge}}


def spec_from_dict(data: object) -> VmSpec:
    if not isinstance(data, dict) or not isinstance(data.get("network"), dict):
        raise ValueError("a VM spec needs name, image, address and network {namespace, bridge}")
    net = data["network"]
    if not all(isinstance(net.get(k), str) for k in ("namespace", "bridge")):
        raise ValueError("network: namespace and bridge must be strings")
    return VmSpec(name=data.get("name"), image=data.get("image"), address=str(data.get("address", "")),
                  network=Network(net["namespace"], net["bridge"]))


def info_from_dict(data: dict) -> VmInfo:
    return VmInfo(name=data["name"], address=data["address"], state=data["state"], pid=data["pid"],
                  created_at=datetime.fromisoformat(data["created_at"]), image=data.get("image", ""))


def app(driver) -> Starlette:  # type: ignore[no-untyped-def]
    def failed(e: Exception) -> Response:
        if isinstance(e, VmNotFound):
            return JSONResponse({"error": str(e), "kind": "not_found"}, 404)
        if isinstance(e, VmConflict):
            return JSONResponse({"error": str(e), "kind": "conflict"}, 409)
        if isinstance(e, ValueError):
            return JSONResponse({"error": str(e), "kind": "bad_request"}, 400)
        return JSONResponse({"error": str(e), "kind": "vim"}, 500)

    def named(request: Request) -> str:
        return check_name(request.path_params["name"])

    async def vms(request: Request) -> Response:
        try:
            return JSONResponse([i.to_dict() for i in await run_in_threadpool(driver.list)])
        except (VimError, ValueError) as e:
            return failed(e)

    async def vm(request: Request) -> Response:
        try:
            name = named(request)
            if request.method == "GET":
                info = await run_in_threadpool(driver.get, name)
                if info is None:
                    raise VmNotFound(f"no VM named {name!r}")
                return JSONResponse(info.to_dict())
            if request.method == "DELETE":
                await run_in_threadpool(driver.delete_vm, name)
                return Response(status_code=204)
            spec = spec_from_dict(await web.read_json(request, limit=4096))
            if spec.name != name:
                raise ValueError(f"the spec names {spec.name!r}, the path {name!r}")
            return JSONResponse((await run_in_threadpool(driver.create_vm, spec)).to_dict())
        except web.BodyError as e:
            return JSONResponse({"error": str(e), "kind": "bad_request"}, e.status)
        except (VimError, ValueError) as e:
            return failed(e)

    async def reboot(request: Request) -> Response:
        try:
            return JSONResponse((await run_in_threadpool(driver.reboot_vm, named(request))).to_dict())
        except (VimError, ValueError) as e:
            return failed(e)

    async def stop(request: Request) -> Response:
        try:
            return JSONResponse((await run_in_threadpool(driver.stop_vm, named(request))).to_dict())
        except (VimError, ValueError) as e:
            return failed(e)

    async def spec(request: Request) -> Response:
        try:
            name = named(request)
            found = await run_in_threadpool(driver.spec, name)
            if found is None:
                raise VmNotFound(f"no VM named {name!r}")
            return JSONResponse(spec_to_dict(found))
        except (VimError, ValueError) as e:
            return failed(e)

    return Starlette(routes=[Route("/v1/vms", vms),
                             Route("/v1/vms/{name}", vm, methods=["GET", "PUT", "DELETE"]),
                             Route("/v1/vms/{name}/reboot", reboot, methods=["POST"]),
                             Route("/v1/vms/{name}/stop", stop, methods=["POST"]),
                             Route("/v1/vms/{name}/spec", spec)])


class RemoteDriver:
    """The VimDriver the controller uses: each call goes to the helper. A helper that
    does not answer is a VimError (the worker retries the work later)."""

    def __init__(self, sock: Path, timeout: float = CALL_TIMEOUT_S) -> None:
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://vim",
                                 timeout=timeout)

    def _call(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        try:
            r = self.http.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise VimError(f"the VIM helper does not answer ({e.__class__.__name__})") from None
        if r.status_code < 400:
            return r
        try:
            error = r.json()
        except ValueError:
            error = {}
        message = str(error.get("error", f"HTTP {r.status_code}"))
        kind = error.get("kind")
        if kind == "not_found":
            raise VmNotFound(message)
        if kind == "conflict":
            raise VmConflict(message)
        if kind == "bad_request":
            raise ValueError(message)
        raise VimError(message)

    def create_vm(self, spec: VmSpec) -> VmInfo:
        return info_from_dict(self._call("PUT", f"/v1/vms/{spec.name}", spec_to_dict(spec)).json())

    def delete_vm(self, name: str) -> None:
        self._call("DELETE", f"/v1/vms/{check_name(name)}")

    def reboot_vm(self, name: str) -> VmInfo:
        return info_from_dict(self._call("POST", f"/v1/vms/{check_name(name)}/reboot").json())

    def stop_vm(self, name: str) -> VmInfo:
        return info_from_dict(self._call("POST", f"/v1/vms/{check_name(name)}/stop").json())

    def get(self, name: str) -> VmInfo | None:
        try:
            return info_from_dict(self._call("GET", f"/v1/vms/{check_name(name)}").json())
        except VmNotFound:
            return None

    def list(self) -> list[VmInfo]:
        return [info_from_dict(d) for d in self._call("GET", "/v1/vms").json()]

    def spec(self, name: str) -> VmSpec | None:
        try:
            return spec_from_dict(self._call("GET", f"/v1/vms/{check_name(name)}/spec").json())
        except VmNotFound:
            return None


def serve(sock_path: Path, driver) -> web.ServerThread:  # type: ignore[no-untyped-def]
    """The helper's server on ``sock_path``: 0660, group of the controller's user."""
    from esc.privileges import service_ids

    sock = web.unix_socket(sock_path, mode=0o660)
    os.chown(sock_path, 0, service_ids()[1])
    return web.ServerThread("vim-helper", [(web.config(app(driver), request_timeout=10.0), sock)]).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="esc-vim-helper", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--root", required=True, type=Path)
    a = p.parse_args(argv)
    paths = NodePaths(a.root)
    try:
        cfg = load_config(paths)
    except ConfigError as e:
        print(f"esc-vim-helper: {e}")
        return 2
    listener = logs.setup(paths.log, "escvim.log", cfg.name)
    logs.capture_output()
    if cfg.vim is None:
        log.error("no VIM configured (escadm vim set): nothing to serve")
        return 2
    from esc.vim.local import LocalDriver

    srv = serve(paths.vim_sock, LocalDriver(Path(cfg.vim.state_dir), cfg.vim.ns_prefix))
    log.info("VIM helper serving %s (state %s)", paths.vim_sock, cfg.vim.state_dir)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    srv.shutdown()
    paths.vim_sock.unlink(missing_ok=True)
    listener.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
