#!/usr/bin/env bash
# Build the Debian packages, from the repository root:
#
#     bash packaging/deb/build.sh [--collector] [--out DIR] [--constraints FILE|none]
#
# leakcheck_<version>_<arch>.deb: the agent and CLI in a virtual environment
# under /opt/leakcheck, /usr/bin/leakcheck, the systemd units and the
# documented default /etc/leakcheck/leakcheck.toml (a conffile).
# With --collector also leakcheck-collector_<version>_<arch>.deb: the
# collector in its own environment under /opt/leakcheck-collector and
# leakcheck-collector.service.
#
# Why a vendored environment and not Debian's python3-* packages: see
# packaging/README.md. The environment is made by Debian's own interpreter
# (/usr/bin/python3.11, the one that runs it on the target) directly in a
# staging tree, then made position-correct for /opt/... (shebangs, pyvenv.cfg,
# byte code compiled for its final path). Needs: python3.11, python3-venv,
# python3-dev and build-essential (for a dependency without a wheel for this machine), dpkg-dev
# tools (dpkg-deb), and PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

PYTHON=/usr/bin/python3.11
OUT=$ROOT/dist
WORK=$ROOT/build/packaging
WITH_COLLECTOR=0
# Default: pin every dependency to what the development/test environment
# (.venv, made by packaging/dev-setup.sh) holds, so the package ships the
# versions the test suite ran with.
CONSTRAINTS=auto
REVISION=${LEAKCHECK_DEB_REVISION:-1}
# xz as Debian does; the tests use "gzip" (and level 1): xz costs ~25 s here.
COMPRESS=${LEAKCHECK_DEB_COMPRESS:-xz}
COMPRESS_LEVEL=${LEAKCHECK_DEB_COMPRESS_LEVEL:-}

usage() {
    sed -n '2,12p' "$0" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --collector) WITH_COLLECTOR=1 ;;
        --out) OUT=$(realpath -m "$2"); shift ;;
        --constraints) CONSTRAINTS=$2; shift ;;
        -h|--help) usage ;;
        *) echo "build.sh: unknown argument $1" >&2; usage ;;
    esac
    shift
done

log() { echo "build.sh: $*" >&2; }

check_tools() {
    local missing=()
    [ -x "$PYTHON" ] || missing+=(python3.11)
    "$PYTHON" -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    command -v dpkg-deb >/dev/null || missing+=(dpkg)
    if [ ${#missing[@]} -gt 0 ]; then
        log "missing Debian packages: ${missing[*]} (sudo bash packaging/dev-setup.sh installs them)"
        exit 2
    fi
}

project_version() {
    "$PYTHON" -c 'import re,sys; print(re.search(r"__version__ = \"([^\"]+)\"", open("leakcheck/__init__.py").read()).group(1))'
}

# The constraints file for pip: the dev environment's versions, or none.
make_constraints() {
    local file=$WORK/constraints.txt
    : >"$file"
    case "$CONSTRAINTS" in
        none) ;;
        auto)
            if [ -x .venv/bin/python ]; then
                # Drop the project itself and anything installed from a path or URL.
                .venv/bin/python -m pip freeze --exclude-editable 2>/dev/null \
                    | grep -v -i -E '^(vpn-leakcheck|leakcheck)[= @]| @ ' >"$file" || true
                log "pinning to the versions in .venv ($(wc -l <"$file") packages)"
            else
                log "no .venv: dependencies resolve to PyPI's newest matching versions"
            fi
            ;;
        *) cp "$CONSTRAINTS" "$file" ;;
    esac
    echo "$file"
}

build_wheel() {
    local venv=$1
    rm -rf "$WORK/wheel"
    "$venv/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$WORK/wheel" "$ROOT" >&2
    ls "$WORK"/wheel/vpn_leakcheck-*.whl
}

# make_venv STAGE PREFIX REQUIREMENT CONSTRAINTS: a virtual environment for
# PREFIX (e.g. /opt/leakcheck/venv) built in STAGE/PREFIX.
make_venv() {
    local stage=$1 prefix=$2 requirement=$3 constraints=$4
    local venv=$stage$prefix
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile \
        --constraint "$constraints" "$requirement" >&2
    # pip and setuptools are not needed at run time, and a dpkg-owned tree
    # must not be changed by hand.
    "$venv/bin/python" -m pip uninstall -q -y pip setuptools wheel >&2 2>/dev/null || true
    rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1
    find "$venv" -name direct_url.json -delete
    relocate_venv "$venv" "$prefix"
    compile_venv "$venv" "$prefix"
}

# The venv was made at STAGE/PREFIX; everything that names that path is
# rewritten to PREFIX. python itself is a symlink to /usr/bin/python3.11
# (not a copy), so Debian's security updates of the interpreter apply.
relocate_venv() {
    local venv=$1 prefix=$2 file
    for file in "$venv"/bin/*; do
        [ -L "$file" ] && continue
        if head -c 2 "$file" | grep -q '#!'; then
            sed -i "1s|^#!$venv/bin/|#!$prefix/bin/|" "$file"
        fi
    done
    sed -i "s|$venv|$prefix|g" "$venv/pyvenv.cfg"
    if grep -rIl --exclude='*.pyc' -F "$venv" "$venv" >/dev/null; then
        log "the staging path is still named in:"
        grep -rIl --exclude='*.pyc' -F "$venv" "$venv" >&2
        exit 1
    fi
}

# Byte code for the final path, marked valid without checking the source
# (dpkg owns the sources, nothing changes them): the service never writes
# into /opt and tracebacks name the installed files.
compile_venv() {
    local venv=$1 prefix=$2
    "$venv/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        -s "$venv" -p "$prefix" "$venv/lib" >/dev/null || log "note: some modules did not compile"
}

install_units() {
    local stage=$1; shift
    install -d "$stage/lib/systemd/system"
    for unit in "$@"; do
        install -m 0644 "packaging/systemd/$unit" "$stage/lib/systemd/system/$unit"
    done
}

install_docs() {
    local stage=$1 package=$2
    local doc=$stage/usr/share/doc/$package
    install -d "$doc"
    install -m 0644 README.md "$doc/README.md"
    install -m 0644 packaging/README.md "$doc/README.packaging.md"
    printf 'leakcheck\n\nLicense: Apache-2.0\nOn Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n' \
        >"$doc/copyright"
}

# write_control STAGE PACKAGE VERSION: DEBIAN/ from packaging/deb/PACKAGE/.
write_control() {
    local stage=$1 package=$2 version=$3
    local src=packaging/deb/$package size
    install -d -m 0755 "$stage/DEBIAN"
    for script in postinst prerm postrm; do
        install -m 0755 "$src/$script" "$stage/DEBIAN/$script"
    done
    (cd "$stage" && find etc -type f 2>/dev/null | sed 's|^|/|' | sort) >"$stage/DEBIAN/conffiles"
    [ -s "$stage/DEBIAN/conffiles" ] || rm -f "$stage/DEBIAN/conffiles"
    (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z \
        | xargs -0 md5sum | sed 's|  \./|  |') >"$stage/DEBIAN/md5sums"
    size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
    sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$(dpkg --print-architecture)|" \
        -e "s|@INSTALLED_SIZE@|$size|" "$src/control" >"$stage/DEBIAN/control"
}

build_deb() {
    local stage=$1 package=$2 version=$3
    local deb=$OUT/${package}_${version}_$(dpkg --print-architecture).deb
    write_control "$stage" "$package" "$version"
    install -d "$OUT"
    local level=()
    [ -z "$COMPRESS_LEVEL" ] || level=("-z$COMPRESS_LEVEL")
    # Files owned by root whoever builds.
    dpkg-deb --root-owner-group "-Z$COMPRESS" "${level[@]}" --build "$stage" "$deb" >/dev/null
    log "built $deb"
    echo "$deb"
}

build_agent() {
    local version=$1 wheel=$2 constraints=$3
    local stage=$WORK/leakcheck
    rm -rf "$stage"
    make_venv "$stage" /opt/leakcheck/venv "$wheel" "$constraints"
    install -d "$stage/usr/bin" "$stage/etc/leakcheck"
    ln -s /opt/leakcheck/venv/bin/leakcheck "$stage/usr/bin/leakcheck"
    # The conffile is generated from the configuration schema of the very
    # code being packaged.
    "$stage/opt/leakcheck/venv/bin/python" -m leakcheck config default >"$stage/etc/leakcheck/leakcheck.toml"
    chmod 0644 "$stage/etc/leakcheck/leakcheck.toml"
    install_units "$stage" leakcheck-agent.service leakcheck-run.service leakcheck-run.timer
    install_docs "$stage" leakcheck
    build_deb "$stage" leakcheck "$version"
}

build_collector() {
    local version=$1 wheel=$2 constraints=$3
    local stage=$WORK/leakcheck-collector
    rm -rf "$stage"
    make_venv "$stage" /opt/leakcheck-collector/venv "${wheel}[collector]" "$constraints"
    install -d "$stage/usr/sbin" "$stage/etc/default"
    install -m 0755 packaging/deb/leakcheck-collector/leakcheck-collector "$stage/usr/sbin/leakcheck-collector"
    install -m 0644 packaging/deb/leakcheck-collector/default "$stage/etc/default/leakcheck-collector"
    install_units "$stage" leakcheck-collector.service
    install_docs "$stage" leakcheck-collector
    build_deb "$stage" leakcheck-collector "$version"
}

main() {
    check_tools
    mkdir -p "$WORK"
    local version constraints wheel tools
    version=$(project_version)-$REVISION
    constraints=$(make_constraints)
    # A throw-away environment of the target interpreter builds the wheel.
    tools=$WORK/tools
    [ -x "$tools/bin/python" ] || "$PYTHON" -m venv "$tools"
    wheel=$(build_wheel "$tools")
    build_agent "$version" "$wheel" "$constraints"
    if [ "$WITH_COLLECTOR" = 1 ]; then
        build_collector "$version" "$wheel" "$constraints"
    fi
}

main
