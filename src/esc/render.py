"""Render every generated file of a node from its config (install, ha set, reload)."""

from __future__ import annotations

from esc.config import ConfigError, NodeConfig, NodePaths, load_secrets, write_atomic
from esc.ha import bgp, keepalived, postgres


def render_all(paths: NodePaths, cfg: NodeConfig, md5: str | None = None) -> list[str]:
    """Write generated configs; returns what was written. keepalived's and ExaBGP's
    files are checked by the daemon itself before they replace the old ones. ``md5``:
    a new BGP MD5 key not yet in secrets.json (``escadm bgp set``)."""
    written = []
    paths.etc.mkdir(parents=True, exist_ok=True)
    if cfg.bgp:
        key = md5 if md5 is not None else (load_secrets(paths).get("bgp_md5") if cfg.bgp.md5 else None)
        if cfg.bgp.md5 and not key:
            raise ConfigError("BGP MD5 is configured but its key is missing from secrets.json: "
                              "run `escadm bgp set ... --md5 KEY` again")
        bgp.write_api_script(paths)  # the program exabgp.conf names: ExaBGP checks it is there
        new = paths.exabgp_conf.with_suffix(".conf.new")
        write_atomic(new, bgp.render(cfg, paths, key).encode(), mode=0o600)  # holds the MD5 key
        err = bgp.check_config(new)
        if err:
            new.unlink()
            raise ConfigError(f"the generated ExaBGP config is refused by ExaBGP: {err}")
        new.replace(paths.exabgp_conf)
        written.append(str(paths.exabgp_conf))
    else:
        paths.exabgp_conf.unlink(missing_ok=True)
    if cfg.ha:
        new = paths.keepalived_conf.with_suffix(".conf.new")
        new.write_text(keepalived.render(cfg, paths))
        err = keepalived.check_config(new)
        if err:
            new.unlink()
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
