#!/usr/bin/env bash
# Set up an inspectops benchmark worker on a Jetson (JetPack 6.x: Ubuntu 22.04, TensorRT 10,
# trtexec in /usr/src/tensorrt/bin). Run it from a checkout in /opt/inspectops:
#
#   sudo git clone <inspectops repository> /opt/inspectops
#   sudo bash /opt/inspectops/infra/jetson/install.sh jetson-orin-nano
#
# It creates the `inspectops` system user, a Python 3.11 virtual environment with the
# project (uv; JetPack's own Python is 3.10), /etc/inspectops/worker.env from the example,
# and enables inspectops-worker@<pool>. Re-running it updates the environment.
set -euo pipefail

pool="${1:?usage: install.sh WORK_POOL   (e.g. jetson-orin-nano)}"
prefix=/opt/inspectops
uv_version="${UV_VERSION:-0.13.8}"
trtexec=/usr/src/tensorrt/bin/trtexec

if [ "$(id -u)" -ne 0 ]; then
  echo "run as root (sudo)" >&2
  exit 1
fi
if [ ! -f "$prefix/pyproject.toml" ]; then
  echo "expected the inspectops checkout in $prefix" >&2
  exit 1
fi
if [ ! -x "$trtexec" ]; then
  echo "warning: $trtexec not found; TensorRT comes with JetPack (sudo apt install nvidia-jetpack)" >&2
fi

id inspectops >/dev/null 2>&1 \
  || useradd --system --create-home --home-dir /var/lib/inspectops --shell /usr/sbin/nologin inspectops
usermod -a -G video,render inspectops 2>/dev/null || usermod -a -G video inspectops

python3 -m pip install --quiet "uv==${uv_version}"
export UV_PYTHON_INSTALL_DIR="$prefix/.python"
uv venv --allow-existing --python 3.11 "$prefix/.venv"
VIRTUAL_ENV="$prefix/.venv" uv pip install --python "$prefix/.venv/bin/python" -e "$prefix" "dvc-s3==3.3.0"
chown -R inspectops:inspectops "$prefix"

install -d -m 700 -o inspectops -g inspectops /var/lib/inspectops/prefect
install -d -m 755 /etc/inspectops
if [ ! -f /etc/inspectops/worker.env ]; then
  install -m 600 -o root -g root "$prefix/infra/jetson/worker.env.example" /etc/inspectops/worker.env
  echo "edit /etc/inspectops/worker.env (API URLs, AWS_SECRET_ACCESS_KEY), then restart the worker"
fi

install -m 644 "$prefix/infra/jetson/inspectops-worker@.service" /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now "inspectops-worker@${pool}"
systemctl --no-pager status "inspectops-worker@${pool}" || true
