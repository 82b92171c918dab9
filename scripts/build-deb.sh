#!/usr/bin/env bash
# Build the Debian package from the checkout: dist/pam-twofa_VERSION_all.deb
# (VERSION is pam_twofa.__version__). Debian's own tooling (debhelper,
# dh-python/pybuild), in a copy of the checkout so that it stays clean.
# Needs the build dependencies of debian/control; as root it installs
# them (with --no-deps it only checks). Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DEPS="dpkg-dev debhelper dh-python python3-all python3-setuptools pybuild-plugin-pyproject"
missing=$(for p in $BUILD_DEPS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"; done)
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ] || [ "${1:-}" = --no-deps ]; then
        echo "build-deb.sh: missing build dependencies: $missing (apt-get install $missing)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' pam_twofa/__init__.py)
[ -n "$version" ] || { echo "build-deb.sh: no __version__ in pam_twofa/__init__.py" >&2; exit 1; }

# The changelog's date: the last commit's when there is one (the same
# checkout builds the same package), else now.
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH=$epoch

work=$(mktemp -d /var/tmp/pam-twofa-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/pam-twofa-$version
mkdir "$src"
cp -r pam_twofa config debian docs setup.cfg pyproject.toml README.md "$src"/
find "$src" -name __pycache__ -prune -exec rm -rf {} +
# The package's version is the program's: the changelog is written here, not kept in git.
cat > "$src/debian/changelog" <<CL
pam-twofa ($version) unstable; urgency=medium

  * Built from the pam-twofa checkout (see CHANGELOG.md upstream).

 -- pam-twofa developers <pam-twofa@example.org>  $(date -R -u -d "@$epoch")
CL

log=$work/build.log
# Debian's interpreters only (pybuild runs "python3.X" from PATH; a pyenv or
# /usr/local python first on PATH would build with the wrong one). -d: the
# build dependencies were checked above; dpkg's own check would also want
# build-essential (a C compiler), which an Architecture: all package never uses.
if ! (cd "$src" && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b -d) >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "build-deb.sh: dpkg-buildpackage failed" >&2
    exit 1
fi
mkdir -p dist
deb=dist/pam-twofa_${version}_all.deb
cp "$work/pam-twofa_${version}_all.deb" "$deb"
echo "$deb"
