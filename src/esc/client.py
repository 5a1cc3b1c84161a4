"""Talking to a node's agent over its unix socket (escadm, the lab, tests)."""

from __future__ import annotations

import httpx

from esc.config import NodePaths


class AgentDown(RuntimeError):
    pass


class AgentClient:
    def __init__(self, paths: NodePaths) -> None:
        self.paths = paths

    def _client(self, timeout: float) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.paths.agent_sock))
        return httpx.Client(transport=transport, base_url="http://agent", timeout=timeout)

    def _call(self, method: str, path: str, timeout: float, json: dict | None = None
              ) -> tuple[int, dict]:
        if not self.paths.agent_sock.exists():
            raise AgentDown(f"the agent is not running ({self.paths.agent_sock} missing)")
        try:
            with self._client(timeout) as c:
                r = c.request(method, path, json=json)
                return r.status_code, r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise AgentDown(f"the agent does not answer: {e}") from None

    def status(self, timeout: float = 5.0) -> dict:
        return self._call("GET", "/v1/status", timeout)[1]

    def command(self, name: str, body: dict | None = None, timeout: float = 10.0) -> tuple[int, dict]:
        return self._call("POST", f"/v1/command/{name}", timeout, json=body or {})
