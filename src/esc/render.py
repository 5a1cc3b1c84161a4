"""Render every generated file of a node from its config (install, ha set, reload)."""

from __future__ import annotations

from esc.config import NodeConfig, NodePaths
from esc.ha import keepalived, postgres


def render_all(paths: NodePaths, cfg: NodeConfig) -> list[str]:
    """Write generated configs; returns what was written. keepalived's file is
    checked with ``keepalived -t`` before it replaces the old one."""
    written = []
    paths.etc.mkdir(parents=True, exist_ok=True)
    if cfg.ha:
        new = paths.keepalived_conf.with_suffix(".conf.new")
        new.write_text(keepalived.render(cfg, paths))
        err = keepalived.check_config(new)
        if err:
            new.unlink()
            from esc.config import ConfigError

            raise ConfigError(f"the generated keepalived config is refused by keepalived: {err}")
        new.replace(paths.keepalived_conf)
        written.append(str(paths.keepalived_conf))
    else:
        paths.keepalived_conf.unlink(missing_ok=True)
    pgdata = paths.pgdata(cfg)
    if postgres.has_data(pgdata):
        postgres.write_managed_files(paths, cfg)
        written.append(str(pgdata / "pg_hba.conf"))
    return written
