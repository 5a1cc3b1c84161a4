"""A fake NFVO for the ETSI tests: a notification receiver (GET answers 204, POSTs are
recorded), an OAuth 2.0 token endpoint, and the Granting API (``POST /grant/v1/grants``).
A real HTTP server (uvicorn through esc.web), in a thread of the test or, in the lab, as
its own process in the client namespace::

    python tests/etsi_fakes.py --listen ADDR:PORT --record FILE [--refuse-grants]

(the process writes every request it got as one JSON line to FILE).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from esc import web  # noqa: E402

USER, PASSWORD = "nfvo", "nfvo-secret"
CLIENT_ID, CLIENT_SECRET = "vnfm-client", "vnfm-client-secret"


class FakeNfvo:
    def __init__(self, record: Path | None = None) -> None:
        self.lock = threading.Condition()
        self.notifications: list[tuple[dict[str, str], Any]] = []
        self.tests: list[dict[str, str]] = []
        self.grants: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self.answers: list[int] = []  # codes for the next notification POSTs (then 204)
        self.refuse_grants = False
        self.packages: dict[str, tuple[str, bytes]] = {}  # vnfPkgId -> (vnfdId, CSAR)
        self.record = record
        self.server: web.ServerThread | None = None
        self.app = Starlette(routes=[
            Route("/notify", self.notify, methods=["GET", "POST"]),
            Route("/token", self.token, methods=["POST"]),
            Route("/grant/v1/grants", self.grant, methods=["POST"]),
            Route("/vnfpkgm/v1/vnf_packages", self.list_packages, methods=["GET"]),
            Route("/vnfpkgm/v1/vnf_packages/{pkg}/package_content", self.package_content, methods=["GET"]),
        ])

    # --- endpoints
    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            return header[7:] in self.tokens
        if header.startswith("Basic "):
            return base64.b64decode(header[6:]).decode() == f"{USER}:{PASSWORD}"
        return False

    def _write(self, kind: str, headers: dict[str, str], body: Any) -> None:
        if self.record is not None:
            with self.record.open("a") as f:
                line = {"kind": kind, "at": time.time(), "headers": headers, "body": body}
                f.write(json.dumps(line) + "\n")

    async def notify(self, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        auth_wanted = request.query_params.get("auth")
        if auth_wanted and not self._authorized(request):
            return Response(status_code=401)
        if request.method == "GET":
            with self.lock:
                self.tests.append(headers)
            self._write("test", headers, None)
            return Response(status_code=204)
        body = await request.json()
        with self.lock:
            code = self.answers.pop(0) if self.answers else 204
            if code < 300:
                self.notifications.append((headers, body))
                self.lock.notify_all()
        if code < 300:
            self._write("notification", headers, body)
        return Response(status_code=code)

    async def token(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        ok = header.startswith("Basic ") and \
            base64.b64decode(header[6:]).decode() == f"{CLIENT_ID}:{CLIENT_SECRET}"
        form = await request.form()
        if not ok or form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "invalid_client"}, 401)
        token = uuid.uuid4().hex
        with self.lock:
            self.tokens.add(token)
        return JSONResponse({"access_token": token, "token_type": "bearer", "expires_in": 600})

    async def grant(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            self.grants.append(body)
            refuse = self.refuse_grants
        self._write("grant", {k.lower(): v for k, v in request.headers.items()}, body)
        if refuse:
            return JSONResponse({"status": 403, "detail": "no resources for this VNF"}, 403,
                                media_type="application/problem+json")
        grant_id = str(uuid.uuid4())
        return JSONResponse({"id": grant_id, "vnfInstanceId": body["vnfInstanceId"],
                             "vnfLcmOpOccId": body["vnfLcmOpOccId"]}, 201,
                            headers={"Location": f"{request.base_url}grant/v1/grants/{grant_id}"})

    async def list_packages(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        want = request.query_params.get("filter", "")
        out = [{"id": pkg, "vnfdId": vnfd, "onboardingState": "ONBOARDED", "operationalState": "ENABLED",
                "usageState": "NOT_IN_USE"}
               for pkg, (vnfd, _) in self.packages.items() if f"(eq,vnfdId,{vnfd})" == want or not want]
        return JSONResponse(out)

    async def package_content(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(status_code=401)
        found = self.packages.get(request.path_params["pkg"])
        if found is None:
            return JSONResponse({"status": 404, "detail": "no such package"}, 404)
        return Response(found[1], media_type="application/zip")

    # --- helpers for tests
    def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeNfvo:
        sock = web.tcp_socket(host, port)
        self.server = web.ServerThread("fake-nfvo", [(web.config(self.app), sock)]).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def base(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> list[tuple[dict[str, str], Any]]:
        """The notifications once ``predicate(notifications)`` holds."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate(self.notifications):
                left = deadline - time.monotonic()
                states = [b.get("operationState") for _, b in self.notifications]
                assert left > 0, f"notifications so far: {states}"
                self.lock.wait(left)
            return list(self.notifications)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--record", required=True, type=Path)
    parser.add_argument("--refuse-grants", action="store_true")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    fake = FakeNfvo(args.record)
    fake.refuse_grants = args.refuse_grants
    fake.start(host.strip("[]"), int(port))
    print("listening", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
