#!/usr/bin/env bash
# Install the pinned LiteLLM proxy, the benchmark's peer, into bench/.venv-litellm.
#
# Some LiteLLM releases on PyPI were compromised with credential stealers (1.82.7, 1.82.8 and
# every 1.107.x); this script refuses them. Those payloads ran from a `.pth` file, which Python
# executes at every interpreter start, so the venv is made free of `.pth` files (setuptools'
# own distutils-precedence.pth is removed by uninstalling setuptools) and the script stops,
# deleting nothing, if any `.pth` file not on the allow-list turns up after the install.
#
#   bash bench/install_litellm.sh                 # pinned version
#   LITELLM_VERSION=1.106.2 bash bench/install_litellm.sh
#   LITELLM_ALLOWED_PTH="name.pth other.pth" ...  # allow-list (empty by default)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${LITELLM_VENV:-$HERE/.venv-litellm}"
VERSION="${LITELLM_VERSION:-1.106.2}"
PRISMA_VERSION="${PRISMA_VERSION:-0.15.0}"
ALLOWED_PTH="${LITELLM_ALLOWED_PTH:-}"
PYTHON="${PYTHON:-python3}"

case "$VERSION" in
  1.82.7|1.82.8|1.107|1.107.*)
    echo "refusing litellm $VERSION: that release was compromised on PyPI (credential stealer)" >&2
    exit 2 ;;
esac
if ! [[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "refusing litellm version '$VERSION': pin an exact X.Y.Z release" >&2
  exit 2
fi

# Lists every .pth file under the venv that is not on the allow-list; returns 1 if any.
check_pth() {
  local found=0 path name allowed
  while IFS= read -r -d '' path; do
    name="$(basename "$path")"
    allowed=0
    for ok in $ALLOWED_PTH; do [[ "$name" == "$ok" ]] && allowed=1; done
    if [[ $allowed -eq 0 ]]; then
      echo "unexpected .pth file: $path" >&2
      sed 's/^/    | /' "$path" | head -20 >&2
      found=1
    fi
  done < <(find "$VENV" -name '*.pth' -print0)
  return $found
}

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# setuptools ships distutils-precedence.pth; litellm's proxy does not need setuptools at run time.
"$VENV/bin/python" -m pip uninstall -y -q setuptools >/dev/null 2>&1 || true
if ! check_pth; then
  echo "refusing to go on: the venv holds .pth files before installing anything (nothing deleted)" >&2
  exit 3
fi

echo "installing litellm[proxy]==$VERSION and prisma==$PRISMA_VERSION into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "litellm[proxy]==$VERSION" "prisma==$PRISMA_VERSION"

if ! check_pth; then
  echo "refusing to go on: the install left .pth files that are not on the allow-list (nothing deleted;" >&2
  echo "inspect them, then remove $VENV by hand)" >&2
  exit 4
fi
installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
if [[ "$installed" != "$VERSION" ]]; then
  echo "refusing to go on: litellm $installed is installed, expected $VERSION" >&2
  exit 5
fi
echo "litellm $installed installed in $VENV (no unexpected .pth files)"
