#!/usr/bin/env bash
# Installs and starts what the cloud path needs on a Debian machine, as root (DESIGN §11):
# Docker engine, a Python base image built by debootstrap, a local registry and an S3 server,
# Chromium for the dashboard's browser tests, and HAProxy for the multi-node test
# (tests/topology; it runs its own HAProxy, never the system service).
# `services.sh install CMD:PACKAGE...` installs only those packages (a test's prerequisite).
# Idempotent and quick when all is there (`make test` runs it every time): each step is
# skipped when its result is already there. Writes the variables that point Papayya at these
# services to .papayya/services.env. Not root: it installs and starts nothing, says what is
# missing, and succeeds (the tests that need what is missing fail and say so).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
STATE=${PAPAYYA_SERVICES_DIR:-/var/lib/papayya}
CACHE=${PAPAYYA_CACHE_DIR:-/var/cache/papayya}
LOGS=$STATE/log
REGISTRY_ADDR=127.0.0.1:5000
S3_PORT=5001
S3_BUCKET=papayya-bundles
[[ -r /etc/os-release ]] && . /etc/os-release
SUITE=${PAPAYYA_BASE_SUITE:-${VERSION_CODENAME:-bookworm}}
BASE_IMAGE=papayya/python-base:$SUITE
BASE_TAR=$CACHE/python-base-$SUITE.tar

say() { printf '[services] %s\n' "$*"; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            say "timed out waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

install_packages() { # install_packages [CMD:PACKAGE...] (default: every one below)
    local missing=()
    # chromium: the dashboard's browser tests (tests/browser) drive Debian's build with
    # Playwright; Playwright never downloads a browser of its own.
    local wanted=("$@")
    ((${#wanted[@]})) || wanted=(curl:curl dockerd:docker.io docker-registry:docker-registry
        debootstrap:debootstrap chromium:chromium haproxy:haproxy)
    for cmd_pkg in "${wanted[@]}"; do
        command -v "${cmd_pkg%%:*}" >/dev/null || missing+=("${cmd_pkg#*:}")
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]}"
    apt-get update -q
    # policy-rc.d 101: the packages must not start their own daemons; we start them below.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" ca-certificates
    rm -f /usr/sbin/policy-rc.d
}

start_dockerd() {
    docker_ok() { docker version; }
    docker_ok 2>/dev/null >&2 && return 0
    say "starting dockerd"
    mkdir -p "$LOGS"
    setsid nohup dockerd --iptables=false --bridge=none --storage-driver=overlay2 \
        >"$LOGS/dockerd.log" 2>&1 </dev/null &
    wait_for 60 dockerd docker_ok || { tail -20 "$LOGS/dockerd.log"; exit 1; }
}

build_base_image() {
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
    if [[ ! -s $BASE_TAR ]]; then
        say "building the base image rootfs with debootstrap ($SUITE; a few minutes)"
        local root
        root=$(mktemp -d /var/tmp/papayya-rootfs.XXXXXX)
        debootstrap --variant=minbase --include=python3,python3-venv \
            "$SUITE" "$root" ${DEBIAN_MIRROR:-} >"$LOGS/debootstrap.log" 2>&1 ||
            { tail -20 "$LOGS/debootstrap.log"; exit 1; }
        chroot "$root" apt-get clean
        rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
            "$root"/usr/share/locale/* "$root"/var/cache/debconf/*-old
        mkdir -p "$CACHE"
        tar -C "$root" --numeric-owner -cf "$BASE_TAR.part" .
        mv "$BASE_TAR.part" "$BASE_TAR"
        rm -rf "$root"
    fi
    say "importing $BASE_IMAGE"
    docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' \
        "$BASE_TAR" "$BASE_IMAGE" >/dev/null
}

start_registry() {
    registry_ok() { curl -fsS "http://$REGISTRY_ADDR/v2/"; }
    registry_ok >/dev/null 2>&1 && return 0
    say "starting the registry on $REGISTRY_ADDR"
    mkdir -p "$STATE/registry"
    # Debian's default config turns on htpasswd auth; ours listens on loopback only, without it.
    cat >"$STATE/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
EOF
    setsid nohup docker-registry serve "$STATE/registry.yml" \
        >"$LOGS/registry.log" 2>&1 </dev/null &
    wait_for 30 registry registry_ok || { tail -20 "$LOGS/registry.log"; exit 1; }
}

s3_ok() { curl -fsS -o /dev/null "http://127.0.0.1:$S3_PORT/moto-api/"; }
bucket_ok() { curl -fsS -o /dev/null -I "http://127.0.0.1:$S3_PORT/$S3_BUCKET"; }

start_s3() {
    if ! s3_ok 2>/dev/null; then
        say "starting the S3 server (moto) on 127.0.0.1:$S3_PORT"
        setsid nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" \
            >"$LOGS/moto.log" 2>&1 </dev/null &
        wait_for 60 "S3 server" s3_ok || { tail -20 "$LOGS/moto.log"; exit 1; }
    fi
    bucket_ok 2>/dev/null && return 0
    "$VENV/bin/python" - "http://127.0.0.1:$S3_PORT" "$S3_BUCKET" <<'EOF'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="papayya", aws_secret_access_key="papayya")
if sys.argv[2] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
    s3.create_bucket(Bucket=sys.argv[2])
EOF
}

write_env() {
    mkdir -p .papayya
    cat >.papayya/services.env <<EOF
PAPAYYA_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
PAPAYYA_S3_BUCKET=$S3_BUCKET
PAPAYYA_REGISTRY=$REGISTRY_ADDR
PAPAYYA_BASE_IMAGE=$BASE_IMAGE
AWS_ACCESS_KEY_ID=papayya
AWS_SECRET_ACCESS_KEY=papayya
AWS_DEFAULT_REGION=us-east-1
EOF
    say "wrote .papayya/services.env"
}

if [[ ${1:-} == install ]]; then
    shift
    install_packages "$@"
    exit 0
fi

missing() { # what the tests need and is not there, one item a line
    command -v chromium >/dev/null || echo "chromium (the browser tests)"
    command -v haproxy >/dev/null || echo "haproxy (the multi-node test)"
    docker version >/dev/null 2>&1 || echo "the Docker engine"
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || echo "the base image $BASE_IMAGE"
    curl -fsS -o /dev/null "http://$REGISTRY_ADDR/v2/" 2>/dev/null ||
        echo "a registry on $REGISTRY_ADDR"
    bucket_ok 2>/dev/null || echo "S3 (moto) on 127.0.0.1:$S3_PORT with bucket $S3_BUCKET"
}

if ((EUID != 0)); then
    gaps=$(missing)
    if [[ -n $gaps ]]; then
        say "not root, so nothing is installed or started. Missing:"
        while IFS= read -r gap; do say "  - $gap"; done <<<"$gaps"
        say "run \`sudo make services\` once; until then the Docker and browser tests fail"
        exit 0
    fi
    write_env
    exit 0
fi

mkdir -p "$LOGS"
install_packages
start_dockerd
start_registry
start_s3
build_base_image
write_env
