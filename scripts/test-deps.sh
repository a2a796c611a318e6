#!/usr/bin/env bash
# Installs what the tests run beside posthook: into DIR (default target/testenv) the official
# Standard Webhooks verifiers, which the signing tests run against every signed request —
# the Python package (PyPI `standardwebhooks`, in a virtualenv) and the JavaScript one (npm
# `standardwebhooks`), versions pinned — and, from Debian, PostgreSQL, whose binaries the
# store tests use to start a throwaway cluster (initdb in a temporary directory, a unix
# socket, as the `postgres` user when root). A second run finds them and does nothing.
set -euo pipefail
dir=${1:-target/testenv}
mkdir -p "$dir"
PY_VERSION=1.1.0
JS_VERSION=1.1.1

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if ! "$dir/py/bin/python" -c "import standardwebhooks" 2>/dev/null; then
  echo "installing the Python standardwebhooks $PY_VERSION verifier into $dir/py"
  command -v python3 >/dev/null || apt_install python3
  python3 -m venv "$dir/py" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$dir/py"; }
  "$dir/py/bin/pip" install -q --disable-pip-version-check "standardwebhooks==$PY_VERSION"
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  echo "installing PostgreSQL (Debian's postgresql package) for the store tests"
  apt_install postgresql
fi
if [ "$(id -u)" = 0 ] && ! command -v runuser >/dev/null; then
  apt_install util-linux
fi

if ! [ -f "$dir/js/node_modules/standardwebhooks/package.json" ]; then
  echo "installing the JavaScript standardwebhooks $JS_VERSION verifier into $dir/js"
  command -v npm >/dev/null || apt_install nodejs npm
  npm install --silent --no-audit --no-fund --prefix "$dir/js" "standardwebhooks@$JS_VERSION" >/dev/null
fi
