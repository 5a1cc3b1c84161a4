"""escetsi: the ETSI NFV SOL003 VNF lifecycle service, on the active node only.

Run by the agent like escmanager, *parked* until "serve" on stdin (the protocol of
esc.services.manager.run_parked), as the unprivileged service user::

    python -m esc.etsi.service --root ROOT [--serve]

It listens on ``etsi.http_port`` (8250) and, with the pair's HTTPS certificate,
``etsi.https_port`` (8251). Its log is ``var/log/esc/escetsi.log``.
"""

from __future__ import annotations

import logging
import os

from esc.services.manager import BACKGROUND_AFTER_S, db_conninfo, run_parked, service_start

log = logging.getLogger("esc.etsi")


def main(argv: list[str] | None = None) -> int:
    started = service_start("escetsi", __doc__.splitlines()[0], argv)
    if isinstance(started, int):
        return started
    args, paths, cfg = started

    from esc.etsi import auth
    from esc.etsi.app import create_app
    from esc.etsi.grant import Granter

    granter = Granter(cfg.etsi.grant, cfg) if cfg.etsi.grant else None
    vim = None
    if cfg.vim is not None:
        from esc.vim.service import RemoteDriver

        vim = RemoteDriver(paths.vim_sock)
    packages = None
    if cfg.etsi.packages is not None:
        from esc.etsi.nfvo_packages import PackageSource

        packages = PackageSource(cfg.etsi.packages)
    app = create_app(cfg, db_conninfo(cfg, paths), auth.load_auth(paths), grant=granter,
                     background_after=BACKGROUND_AFTER_S, vim=vim, packages=packages)
    log.info("ETSI server address %s", cfg.etsi_server_address)
    return run_parked(app, cfg, paths, serve_now=args.serve, name="escetsi",
                      http_port=cfg.etsi.http_port, https_port=cfg.etsi.https_port, problem_json=True)


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    os._exit(code)
