# Installs what Redwire's scripts need on a Debian/Ubuntu machine that has only the
# Rust toolchain. Sourced by scripts/run and scripts/test; each function is a no-op
# when its tool is already there.

# Runs a command as root (directly, or through sudo when we are not root).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_redis_server() {
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "==> installing redis-server from the OS packages"
    apt_install redis-server
  fi
}

# nginx, for the test that long-lived streams survive a proxy's read timeout.
ensure_nginx() {
  if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "==> installing nginx from the OS packages"
    apt_install nginx-light 2>/dev/null || apt_install nginx
  fi
}

# openssl makes the throwaway certificates of scripts/dev-certs.
ensure_openssl() {
  if ! command -v openssl >/dev/null 2>&1; then
    echo "==> installing openssl from the OS packages"
    apt_install openssl
  fi
}

# Prometheus, for the test that a real Prometheus scrapes /metrics. Debian's
# package starts a system service where systemd runs; the test starts its own.
ensure_prometheus() {
  if ! command -v prometheus >/dev/null 2>&1; then
    echo "==> installing prometheus from the OS packages"
    apt_install prometheus
  fi
}

# Chromium, for the console's browser test:
# Playwright drives this system browser; it downloads none of its own.
ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1; then
    echo "==> installing chromium from the OS packages"
    apt_install chromium
  fi
}

ensure_rust_components() {
  for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
      echo "==> adding rust component $component"
      rustup component add "$component"
    fi
  done
}

# A virtualenv in target/ with the Python test client's packages.
PY_VENV="target/python-venv"
ensure_python_env() {
  if ! command -v python3 >/dev/null 2>&1; then
    echo "==> installing python3"
    apt_install python3 python3-venv
  fi
  if [ ! -x "$PY_VENV/bin/python" ]; then
    echo "==> creating $PY_VENV"
    if ! python3 -m venv "$PY_VENV" 2>/dev/null; then
      rm -rf "$PY_VENV"
      apt_install python3-venv
      python3 -m venv "$PY_VENV"
    fi
  fi
  local requirements=tests/python/requirements.txt
  local stamp="$PY_VENV/.requirements"
  if ! cmp -s "$requirements" "$stamp"; then
    echo "==> installing Python test packages"
    "$PY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
  fi
}

# tests/node's packages (buf, @grpc/grpc-js, @grpc/proto-loader), exactly as
# tests/node/package-lock.json pins them.
NODE_DIR="tests/node"
BUF="$NODE_DIR/node_modules/.bin/buf"
ensure_node_env() {
  if ! command -v npm >/dev/null 2>&1; then
    echo "==> installing nodejs and npm"
    apt_install nodejs npm
  fi
  local lock="$NODE_DIR/package-lock.json"
  local stamp="$NODE_DIR/node_modules/.package-lock.stamp"
  if ! cmp -s "$lock" "$stamp"; then
    echo "==> installing Node test packages (npm ci)"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$lock" "$stamp"
  fi
}
