"""The unprivileged user the network-facing controller (escmanager) runs as.

escmanager parses HTTP, JSON and XML from the northbound and posts callbacks: if it
were ever made to run code, that code should not be root. It runs as ``esc``, a system
user made at install (and by the agent, for a node installed before), with what it
needs handed to it: its own copies of the HTTPS certificate and key, and the one key
derived from the pair key it uses (esc.agent prepares them in ``run/esc/manager``).
What needs root stays in root processes: the agent, and the VIM helper
(esc.vim.service) that makes VMs' namespaces and links.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from esc.config import NodeConfig, NodePaths

log = logging.getLogger("esc.privileges")

SERVICE_USER = "esc"
BGP_USER = "escbgp"  # ExaBGP and its API helper: apart from the controller


def ensure_service_user(name: str = SERVICE_USER) -> None:
    """Make the system user (and its group) unless it exists; a clear error if it cannot."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    nologin = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(p)), "/bin/false")
    res = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                          "--home-dir", "/nonexistent", "--shell", nologin,
                          "--comment", "ESC controller", name],
                         capture_output=True, text=True, timeout=30)
    if res.returncode != 0 and res.returncode != 9:  # 9: made meanwhile by another install
        raise RuntimeError(f"could not add the system user {name}: {res.stderr.strip()}")


def service_ids(name: str = SERVICE_USER) -> tuple[int, int]:
    return pwd.getpwnam(name).pw_uid, grp.getgrnam(name).gr_gid


def give(path: Path, mode: int, user: str = SERVICE_USER) -> None:
    """``path`` owned by ``user``, with ``mode``."""
    uid, gid = service_ids(user)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def write_private(path: Path, data: bytes, user: str = SERVICE_USER) -> None:
    """A file only ``user`` (and root) can read, written whole (temp + rename)."""
    uid, gid = service_ids(user)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chown(tmp, uid, gid)
    os.replace(tmp, path)


def can_run_python(user: str = SERVICE_USER) -> str | None:
    """None if ``user`` can run this installation's Python as root does (the same
    interpreter and standard library, the package importable, and a child process of
    it too); else what went wrong. A virtualenv whose interpreter lives where the user
    cannot enter (e.g. under /root) fails here."""
    import sys

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return "setpriv is missing (util-linux)"
    check = ("import os, subprocess, sys, esc.config; "
             f"assert sys.base_prefix == {sys.base_prefix!r}, 'standard library ' + sys.base_prefix; "
             "subprocess.run([sys.executable, '-c', '0'], check=True)")
    res = subprocess.run([setpriv, f"--reuid={user}", f"--regid={user}", "--init-groups",
                          sys.executable, "-c", check], capture_output=True, text=True, timeout=30, cwd="/")
    if res.returncode != 0:
        return (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1][:300]
    return None


def prepare_manager_files(paths: NodePaths) -> None:
    """What the controller reads, as its own (``run/esc/manager``, 0700): copies of the
    HTTPS certificate and key, the REST auth-cache key (derived from the pair key, the
    only one of its derivations the controller needs) and what the ETSI service checks
    credentials with (esc.etsi.auth); and their log files."""
    from esc.pairing.material import pair_key
    from esc.secrets import derive

    d = paths.manager_dir
    d.mkdir(parents=True, exist_ok=True)
    give(d, 0o700)
    for src, dst in ((paths.tls_cert, paths.manager_tls_cert), (paths.tls_key, paths.manager_tls_key)):
        if src.exists():
            write_private(dst, src.read_bytes())
        else:
            dst.unlink(missing_ok=True)
    key = pair_key(paths)
    if key:
        write_private(paths.manager_auth_key, derive(key, "rest-auth-cache").encode())
    else:
        paths.manager_auth_key.unlink(missing_ok=True)
    from esc.etsi.auth import auth_data, auth_file, make_auth

    write_private(auth_file(paths), auth_data(make_auth(paths)))
    for name in ("escmanager.log", "escetsi.log"):
        give_log(paths, name)


def prepare_confd_files(paths: NodePaths, cfg: NodeConfig) -> None:
    """What the NETCONF service reads, as its own (in ``run/esc/manager``, beside the
    controller's): the confd user's password hash and the pair's SSH host key
    (esc.netconf.credentials); and its log."""
    from esc.netconf import credentials

    d = paths.manager_dir
    d.mkdir(parents=True, exist_ok=True)
    give(d, 0o700)
    auth = credentials.make(paths, cfg)
    if auth is None:
        credentials.auth_file(paths).unlink(missing_ok=True)
    else:
        write_private(credentials.auth_file(paths), auth.to_json())
    give_log(paths, "escconfd.log")


def give_log(paths: NodePaths, name: str) -> None:
    """A log file an unprivileged service appends to."""
    log_file = paths.log / name
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    give(log_file, 0o640)


def metrics_dir(paths: NodePaths, service: str) -> Path:
    """Where ``service`` keeps its Prometheus values (multiprocess mode), read by the agent."""
    return paths.manager_dir / "metrics" / service


def prepare_metrics_dir(paths: NodePaths, service: str) -> Path:
    """Emptied before each start (prometheus-client's rule: a new process, a clean
    directory), and the service's own."""
    d = metrics_dir(paths, service)
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("*.db"):
        f.unlink(missing_ok=True)
    give(d.parent, 0o700)
    give(d, 0o700)
    return d


def bgp_conf(paths: NodePaths) -> Path:
    """ExaBGP's copy of exabgp.conf (it holds the MD5 key): its own, 0600."""
    return paths.bgp_dir / "exabgp.conf"


def prepare_bgp_files(paths: NodePaths) -> None:
    """ExaBGP runs as BGP_USER: its directory (the agent's wish and the helper's report
    live there too; root writes the wish), and its copy of the configuration."""
    ensure_service_user(BGP_USER)
    d = paths.bgp_dir
    d.mkdir(parents=True, exist_ok=True)
    give(d, 0o755, BGP_USER)
    write_private(bgp_conf(paths), paths.exabgp_conf.read_bytes(), BGP_USER)
