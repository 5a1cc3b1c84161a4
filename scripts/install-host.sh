#!/usr/bin/env bash
# Put the controller on a Debian 12 host, from this source tree: the packages it runs
# (keepalived, PostgreSQL 15, Python), a virtualenv under PREFIX (default /opt/esc) that
# the unprivileged service users can run, and escadm, bootvm.py and health.sh in
# /usr/local/bin. Then install the node with the original's arguments, e.g.
#   bootvm.py esc-ha-1 --ipaddr ... --ha_node_list ... --kad_vip ... --kad_vif ... --user_pass ...
#   escadm start
# (the install writes and enables the agent's systemd unit: the node starts at boot).
# With ESC_WITH_ETCD=1 it also installs etcd-client (etcdctl, to look at an etcd witness);
# the members themselves (etcd-server) belong on the hosts that run the etcd cluster.
# Safe to run again: each step checks first.
set -euo pipefail
PREFIX=${1:-/opt/esc}
SRC="$(cd "$(dirname "$0")/.." && pwd)"

if [ "$(id -u)" != 0 ]; then
  echo "install-host: run as root" >&2
  exit 1
fi

need=()
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
[ -x /usr/bin/python3.11 ] || need+=(python3)
/usr/bin/python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
if [ "${ESC_WITH_ETCD:-0}" = 1 ]; then
  command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "install-host: installing ${need[*]}"
  # no cluster of the package's own: the node's database is made by escadm install
  mkdir -p /etc/postgresql-common
  [ -f /etc/postgresql-common/createcluster.conf ] || \
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# the agent starts keepalived and PostgreSQL itself (escadm install disables them too)
for unit in keepalived.service postgresql.service; do
  systemctl disable --now "$unit" >/dev/null 2>&1 || true
done

mkdir -p "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || /usr/bin/python3.11 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
"$PREFIX/venv/bin/pip" install -q "$SRC"
chmod -R a+rX "$PREFIX"  # the service users (esc, escbgp) run this Python
for cmd in escadm bootvm.py health.sh; do
  ln -sf "$PREFIX/venv/bin/$cmd" "/usr/local/bin/$cmd"
done
echo "install-host: escadm $("$PREFIX/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("esc-ha"))' 2>/dev/null || echo installed) in $PREFIX"
