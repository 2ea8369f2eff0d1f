#!/bin/sh
# spark-uboot-sim: RAUC custom bootloader backend over a simulated U-Boot environment.
# Written by spark-testbed into each testbed's temporary directory (the @...@ fields are filled in).
#
# The environment is a fw_printenv-style file (one KEY=value a line). The commands change
# BOOT_ORDER and BOOT_<x>_LEFT exactly as RAUC's own `uboot` backend does with fw_setenv, so the
# real `rauc service` sees the same slot states here as on a BeagleBone:
#   get-primary              first bootname in BOOT_ORDER whose LEFT > 0 (error if none)
#   get-state <b>            good if <b> is in BOOT_ORDER and its LEFT > 0, else bad
#   set-primary <b>          <b> first in BOOT_ORDER, LEFT reset to the attempt count (so also good)
#   set-state <b> good|bad   good: LEFT reset; bad: <b> leaves BOOT_ORDER and LEFT=0
#   get-current              the slot the testbed last booted (newer RAUC asks for it)
# Any error exits non-zero with a message on stderr, which RAUC reports.
set -eu

ENV_FILE=@ENV_FILE@
ATTEMPTS=@ATTEMPTS@
BOOTNAMES=@BOOTNAMES@
BOOTED_FILE=@BOOTED_FILE@
LOG_FILE=@LOG_FILE@

fail() {
    echo "spark-uboot-sim: $*" >&2
    exit 1
}

# Every call is logged so tests can see what RAUC asked for (appends of one line are atomic).
printf '%s\n' "$*" >>"$LOG_FILE"

# The test process edits the same file through `Bootloader`; flock keeps writers apart.
exec 9>>"$ENV_FILE.lock"
flock -w 10 9 || fail "cannot lock $ENV_FILE"

env_get() {
    [ -f "$ENV_FILE" ] || return 0
    sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}

# Write to a temporary file and rename, so a reader never sees half a file.
env_set() {
    tmp="$ENV_FILE.tmp.$$"
    if [ -f "$ENV_FILE" ]; then
        grep -v "^$1=" "$ENV_FILE" >"$tmp" || true
    else
        : >"$tmp"
    fi
    printf '%s=%s\n' "$1" "$2" >>"$tmp"
    mv "$tmp" "$ENV_FILE"
}

# Attempts left for a bootname; anything that is not a plain number counts as none, like a
# U-Boot `test -gt` on garbage would never pick the slot.
left_of() {
    v=$(env_get "BOOT_$1_LEFT")
    case "$v" in
    '' | *[!0-9]*) echo 0 ;;
    *) echo "$v" ;;
    esac
}

known() {
    for b in $BOOTNAMES; do
        [ "$b" = "$1" ] && return 0
    done
    return 1
}

in_order() {
    for b in $(env_get BOOT_ORDER); do
        [ "$b" = "$1" ] && return 0
    done
    return 1
}

order_without() {
    out=
    for b in $(env_get BOOT_ORDER); do
        [ "$b" = "$1" ] && continue
        out="${out:+$out }$b"
    done
    printf '%s' "$out"
}

need_bootname() {
    [ -n "${1:-}" ] || fail "missing bootname"
    known "$1" || fail "unknown bootname '$1' (known: $BOOTNAMES)"
}

cmd="${1:-}"
case "$cmd" in
get-primary)
    [ $# -eq 1 ] || fail "usage: get-primary"
    for b in $(env_get BOOT_ORDER); do
        if known "$b" && [ "$(left_of "$b")" -gt 0 ]; then
            echo "$b"
            exit 0
        fi
    done
    fail "unable to find primary boot slot (BOOT_ORDER='$(env_get BOOT_ORDER)')"
    ;;
get-state)
    [ $# -eq 2 ] || fail "usage: get-state <bootname>"
    need_bootname "$2"
    if in_order "$2" && [ "$(left_of "$2")" -gt 0 ]; then
        echo good
    else
        echo bad
    fi
    ;;
set-primary)
    [ $# -eq 2 ] || fail "usage: set-primary <bootname>"
    need_bootname "$2"
    rest=$(order_without "$2")
    env_set "BOOT_$2_LEFT" "$ATTEMPTS"
    env_set BOOT_ORDER "$2${rest:+ $rest}"
    ;;
set-state)
    [ $# -eq 3 ] || fail "usage: set-state <bootname> good|bad"
    need_bootname "$2"
    case "$3" in
    good) env_set "BOOT_$2_LEFT" "$ATTEMPTS" ;;
    bad)
        env_set BOOT_ORDER "$(order_without "$2")"
        env_set "BOOT_$2_LEFT" 0
        ;;
    *) fail "state must be good or bad, not '$3'" ;;
    esac
    ;;
get-current)
    [ -s "$BOOTED_FILE" ] || fail "no booted slot recorded"
    cat "$BOOTED_FILE"
    ;;
*)
    fail "unknown command '$cmd'"
    ;;
esac
