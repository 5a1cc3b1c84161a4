#!/usr/bin/env bash
# Install what is missing on a fresh Debian 12 machine, then the virtualenv.
# Safe to run again: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bootstrap: run as root (namespaces, keepalived and PostgreSQL need it)" >&2
  exit 1
fi

need=()
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v ps >/dev/null 2>&1 || need+=(procps)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v bird >/dev/null 2>&1 || need+=(bird2)
command -v dot >/dev/null 2>&1 || need+=(graphviz)  # make rules-docs draws docs/rules.svg
command -v snmptrapd >/dev/null 2>&1 || need+=(snmptrapd)  # the trap receiver of the SNMP tests
command -v snmpget >/dev/null 2>&1 || need+=(snmp)  # the SNMP tests' GETs
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)  # checks the agent's unit (not run as init)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)  # the etcd witness (lab --witness etcd, its tests)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
[ -x /usr/bin/chromium ] || need+=(chromium)  # the portal's browser tests (Playwright drives it)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
id postgres >/dev/null 2>&1 || need+=(postgresql-15)
# Debian's interpreter: the controller and ExaBGP run as unprivileged users, who must be
# able to run the virtualenv's Python (one under /root, e.g. pyenv's, they cannot).
[ -x /usr/bin/python3.11 ] || need+=(python3)
/usr/bin/python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need[*]}"
  # No cluster of the package's own, and no service started by the install.
  mkdir -p /etc/postgresql-common
  [ -f /etc/postgresql-common/createcluster.conf ] || \
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
# the lab and the tests run their own etcd members: not the package's at boot
if [ -e /etc/systemd/system/multi-user.target.wants/etcd.service ]; then
  systemctl disable etcd.service >/dev/null 2>&1 || rm -f /etc/systemd/system/multi-user.target.wants/etcd.service
fi

PY=/usr/bin/python3.11
if [ -x .venv/bin/python ] && ! grep -qx "home = /usr/bin" .venv/pyvenv.cfg; then
  echo "bootstrap: .venv is built on another Python than $PY: making it again"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e '.[dev]' 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import esc, psycopg, starlette, uvicorn, click, hypothesis, exabgp, spake2, yaml, multipart, prometheus_client, pysnmp, playwright, asyncssh, lxml, ncclient, pyang"
  touch .venv/.installed
fi
