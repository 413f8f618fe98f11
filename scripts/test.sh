#!/bin/bash
# The project's test command (README, CI): installs prerequisites, builds everything,
# runs every test, then checks formatting and lints. Exits non-zero if anything failed.
#
# The shim suites (tests/tests/shim_*.rs) run twice:
#   - against our shim (release build), together with every other test of the workspace;
#   - against the Go containerd-shim-runc-v2 as a reference run: it proves the suites
#     themselves, so a failure only in the first run is a bug in our shim.
# LIMPET_SHIM_TARGETS (default "limpet go") selects these runs; LIMPET_CONTAINERD (a
# containerd 2.x bin dir) adds the containerd 2.x flavor of each case (skipped otherwise).
set -uo pipefail

cd "$(dirname "$0")/.."
targets=${LIMPET_SHIM_TARGETS:-limpet go}
go_shim=${LIMPET_GO_SHIM:-/usr/bin/containerd-shim-runc-v2}
failed=()

step() { printf '\n=== %s\n' "$*" >&2; }
run() {
    local name=$1
    shift
    "$@" || failed+=("$name")
}

step setup
bash scripts/setup.sh || exit 1

target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
our_shim=$target_dir/release/containerd-shim-limpet-v2

step "cargo fmt --check (files needing cargo fmt)"
run fmt cargo fmt --all -- --check -l

# limpetd's crash points (the `fail` crate) are compiled in for the tests only: the restart
# suite arms them through FAILPOINTS to kill limpetd at named steps.
features=(--features limpetd/failpoints)

step "build"
cargo build --workspace --all-targets "${features[@]}" || exit 1
cargo build --release -p containerd-shim-limpet-v2 || exit 1

skip_log=$(mktemp)
trap 'rm -f "$skip_log"' EXIT
export LIMPET_SKIP_LOG=$skip_log

if cargo nextest --version >/dev/null 2>&1; then
    have_nextest=1
else
    have_nextest=
fi

# Runs the whole workspace's tests with the shim suites against shim $1.
workspace_tests() {
    if [ -n "$have_nextest" ]; then
        LIMPET_SHIM=$1 cargo nextest run --workspace --no-fail-fast "${features[@]}"
    else
        LIMPET_SHIM=$1 cargo test --workspace --no-fail-fast "${features[@]}"
    fi
}

# Runs the shim suites' cases of flavor $2 (containerd_1 / containerd_2) against shim $1.
shim_suites() {
    if [ -n "$have_nextest" ]; then
        LIMPET_SHIM=$1 cargo nextest run -p limpet-tests --no-fail-fast "${features[@]}" \
            -E "binary(/^shim_/) & test(/^$2::/)"
    else
        local suites=()
        for f in tests/tests/shim_*.rs; do suites+=(--test "$(basename "$f" .rs)"); done
        LIMPET_SHIM=$1 cargo test -p limpet-tests --no-fail-fast "${features[@]}" "${suites[@]}" -- "$2::"
    fi
}

if [[ " $targets " == *" limpet "* ]]; then
    step "all tests; shim suites against $our_shim"
    run "tests (limpet shim)" workspace_tests "$our_shim"
else
    step "all tests; shim suites against $go_shim (LIMPET_SHIM_TARGETS=$targets)"
    run "tests (go shim)" workspace_tests "$go_shim"
fi

if [[ " $targets " == *" limpet "* && " $targets " == *" go "* ]]; then
    step "reference: shim suites against $go_shim"
    run "shim suites (go shim)" shim_suites "$go_shim" containerd_1
    # containerd 2.x speaks a newer start protocol: its own Go shim is the reference there.
    ref2=${LIMPET_CONTAINERD:-}/containerd-shim-runc-v2
    if [ -n "${LIMPET_CONTAINERD:-}" ] && [ -x "$ref2" ]; then
        step "reference: containerd 2.x shim suites against $ref2"
        run "shim suites (containerd 2.x go shim)" shim_suites "$ref2" containerd_2
    fi
fi

step "cargo clippy"
run clippy cargo clippy --workspace --all-targets "${features[@]}" -- -D warnings

if [ -s "$skip_log" ]; then
    step "skipped (reasons)"
    sed -E 's/^SKIP: [a-z0-9_]+ \(/SKIP: (/' "$skip_log" | sort | uniq -c | sort -rn >&2
fi

if [ ${#failed[@]} -gt 0 ]; then
    step "FAILED: ${failed[*]}"
    exit 1
fi
step "all passed"
