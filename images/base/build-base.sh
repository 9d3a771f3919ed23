#!/bin/sh
# Build the local Debian base image `inference-bench/base:bookworm` with debootstrap and
# `docker import`, for machines that cannot pull `python:3.11-slim` from a registry.
# Needs root, debootstrap and a running Docker engine. Idempotent: skips if the image exists
# (FORCE=1 rebuilds).
#
# The Debian mirror: MIRROR if set, else the host's own apt sources (a mirror this host reaches,
# maybe a local mirror or a proxy), else deb.debian.org. Of the host's `deb` entries with
# component `main`, one naming $SUITE wins over one naming another Debian release; security and
# updates entries (no full release there) and non-Debian archives are skipped. Reads deb822 files
# (sources.list.d/*.sources) and one-line files (sources.list, sources.list.d/*.list); APT_SOURCES
# names other files. PRINT_MIRROR=1 prints the choice and exits.
set -eu
TAG="${BASE_TAG:-inference-bench/base:bookworm}"
SUITE="${SUITE:-bookworm}"
FALLBACK_MIRROR="http://deb.debian.org/debian"

# Prints "RANK URI FILE" for every usable entry: rank 0 names $SUITE, rank 1 another release.
# shellcheck disable=SC2016
SOURCES_AWK='
function release(s) {
    return s ~ /^(buster|bullseye|bookworm|trixie|forky|duke|sid|stable|testing|unstable|oldstable|oldoldstable)$/
}
function rank(suites,    n, i, best, w) {
    best = 9
    n = split(suites, w, /[ \t]+/)
    for (i = 1; i <= n; i++) {
        if (w[i] == suite) best = 0
        else if (best > 1 && release(w[i])) best = 1
    }
    return best
}
function has(list, word,    n, i, w) {
    n = split(list, w, /[ \t]+/)
    for (i = 1; i <= n; i++) if (w[i] == word) return 1
    return 0
}
function flush(    r, u) {
    if (has(types, "deb") && has(comps, "main") && enabled !~ /^no/ && uris != "") {
        r = rank(suites)
        split(uris, u, /[ \t]+/)
        if (r < 9) print r, u[1], file
    }
    types = ""; suites = ""; comps = ""; uris = ""; enabled = ""; last = ""
}
FNR == 1 { if (deb822) flush(); file = FILENAME; deb822 = FILENAME ~ /\.sources$/ }
deb822 && /^[ \t]*#/ { next }
deb822 && /^[ \t]*$/ { flush(); next }
deb822 && /^[ \t]/ {  # a continuation line
    if (last == "uris") uris = uris " " $0
    else if (last == "suites") suites = suites " " $0
    else if (last == "components") comps = comps " " $0
    next
}
deb822 {
    key = tolower($0); sub(/:.*/, "", key)
    val = $0; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
    last = key
    if (key == "types") types = val
    else if (key == "uris") uris = val
    else if (key == "suites") suites = val
    else if (key == "components") comps = val
    else if (key == "enabled") enabled = tolower(val)
    next
}
$1 == "deb" {  # deb [ options ] URI SUITE COMPONENT...
    i = 2
    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
    uri = $i; s = $(i + 1); main = 0
    for (j = i + 2; j <= NF; j++) if ($j == "main") main = 1
    if (!main) next
    if (s == suite) print 0, uri, file
    else if (release(s)) print 1, uri, file
}
END { if (deb822) flush() }
'

host_mirror() {
    files=""
    # Unquoted on purpose: the globs expand here.
    for f in ${APT_SOURCES:-/etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list}; do
        [ -f "$f" ] && [ -r "$f" ] && files="$files $f"
    done
    [ -n "$files" ] || return 0
    # shellcheck disable=SC2086
    awk -v suite="$SUITE" "$SOURCES_AWK" $files | grep -E '^[0-9] (https?|file):' | sort -s -k1,1n | head -n1
}

if [ -n "${MIRROR:-}" ]; then
    FROM_WHERE="from MIRROR"
else
    FOUND="$(host_mirror)"
    MIRROR="$(printf '%s' "$FOUND" | cut -d' ' -f2)"
    FROM_WHERE="from the host's $(printf '%s' "$FOUND" | cut -d' ' -f3-)"
    if [ -z "$MIRROR" ]; then
        MIRROR="$FALLBACK_MIRROR"
        FROM_WHERE="fallback: the host's apt sources name no Debian mirror for $SUITE"
    fi
fi
MIRROR="${MIRROR%/}"
if [ -n "${PRINT_MIRROR:-}" ]; then
    echo "$MIRROR ($FROM_WHERE)"
    exit 0
fi

if [ -z "${FORCE:-}" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists (FORCE=1 to rebuild)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap not found (hint: apt-get install -y debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root (hint: sudo make base-image)" >&2; exit 1; }
ROOTFS="$(mktemp -d /tmp/bench-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap $SUITE from $MIRROR ($FROM_WHERE)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$ROOTFS" "$MIRROR" >/dev/null
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$TAG" >/dev/null
echo "built $TAG"
