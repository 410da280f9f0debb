#!/usr/bin/env bash
# Install what ubdsim needs on a fresh Debian bookworm machine (run as root), then the
# project venv. Idempotent: a second run installs nothing and takes about a second.
#   Debian: e2fsprogs uml-utilities user-mode-linux qemu-utils busybox-static fdisk strace,
#           python3-libnbd (libnbd, a real NBD client for tests/nbd; run by /usr/bin/python3),
#           qemu-system-x86 (without recommends: ~84 MB instead of ~438 MB),
#           chromium (headless, for tests/show: the lesson page rendered as a teacher
#           projects it; ~81 MB download, ~290 MB installed, 23 packages without recommends),
#           python3 + python3-venv when no Python 3.11 with venv is on the machine,
#           gcc + libc6-dev when no C compiler with the C library headers is there,
#           xfsprogs (mkfs.xfs: a loop-mounted XFS with reflinks, where moo's copy_file_range
#           shares extents: tests/ops/test_merge_reflink.py, scripts/bench_moo.py)
#   build/uml_xstate_fix.so: the XSAVE fix that lets linux.uml boot on AMX hosts
#           (kernel_ref/native/uml_xstate_fix.c; kernel_ref/xstate.py decides when to use it)
#   build/uml_sync_log.so: logs host fsync/fdatasync/sync/... calls of linux.uml and of
#           `ubdsim run` alike (kernel_ref/native/uml_sync_log.c; kernel_ref/sync_log.py)
#   build/uml_fault.so: fails chosen host reads/writes of linux.uml (kernel_ref/fault_preload.py)
#   The qemu guest kernel (.deb) is fetched on first use by guest_images/qemu/build_image.py.
#   venv:   .venv with ubdsim in editable mode, numpy, matplotlib (ubdsim show's pictures),
#           pytest, hypothesis, python-ptrace; reinstalled when pyproject.toml is newer than
#           the stamp or a dependency does not import
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for spec in e2fsprogs:mkfs.ext4 uml-utilities:uml_mkcow user-mode-linux:linux.uml \
            qemu-utils:qemu-img busybox-static:busybox fdisk:sfdisk \
            qemu-system-x86:qemu-system-x86_64 strace:strace python3-libnbd:nbdsh \
            chromium:chromium xfsprogs:mkfs.xfs; do
    pkg=${spec%%:*}; bin=${spec##*:}
    command -v "$bin" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if ! command -v cc >/dev/null 2>&1 || [ ! -e /usr/include/elf.h ]; then
    need_pkgs+=(gcc libc6-dev)
fi
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    need_pkgs+=(python3 python3-venv)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need_pkgs[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "setup: these packages are missing and installing them needs root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

fix_src=kernel_ref/native/uml_xstate_fix.c
fix_lib=build/uml_xstate_fix.so
if [ ! -f "$fix_lib" ] || [ "$fix_src" -nt "$fix_lib" ]; then
    echo "setup: building $fix_lib (lets linux.uml boot where the XSAVE area exceeds 2696 bytes)"
    mkdir -p build
    cc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$fix_lib.tmp" "$fix_src"
    mv "$fix_lib.tmp" "$fix_lib"
fi
sync_src=kernel_ref/native/uml_sync_log.c
sync_lib=build/uml_sync_log.so
if [ ! -f "$sync_lib" ] || [ "$sync_src" -nt "$sync_lib" ]; then
    echo "setup: building $sync_lib (logs host sync calls: kernel_ref/sync_log.py)"
    mkdir -p build
    cc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$sync_lib.tmp" "$sync_src"
    mv "$sync_lib.tmp" "$sync_lib"
fi
fault_src=kernel_ref/native/uml_fault.c
fault_lib=build/uml_fault.so
if [ ! -f "$fault_lib" ] || [ "$fault_src" -nt "$fault_lib" ]; then
    echo "setup: building $fault_lib (fails chosen host reads/writes of linux.uml: kernel_ref/fault_preload.py)"
    mkdir -p build
    cc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$fault_lib.tmp" "$fault_src" -ldl
    mv "$fault_lib.tmp" "$fault_lib"
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.ubdsim-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
        || ! .venv/bin/python -c 'import numpy, matplotlib, ptrace, pytest, hypothesis' 2>/dev/null; then
    echo "setup: installing Python dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
