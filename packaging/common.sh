# Shared by the packaging scripts (sourced, not run): messages, logged steps and the
# Debian build dependencies. The sourcing script sets TOOL (its name in messages) first;
# ensure_build_deps also reads BUILD_DEPS and CACHE_ROOT.

note() { echo "$TOOL: $*" >&2; }
die() { echo "$TOOL: ERROR: $*" >&2; exit 1; }

# Run a step with its output in a log file; on failure show the log's tail.
run_logged() {
    local log=$1; shift
    if ! "$@" >"$log" 2>&1; then
        echo "$TOOL: command failed: $* (log: $log)" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

# ensure_build_deps LOG: install the packages of BUILD_DEPS that are missing (as root),
# apt's output in LOG and LOG.2.
ensure_build_deps() {
    local log=$1 missing=() pkg
    for pkg in "${BUILD_DEPS[@]}"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing Debian packages (need root to install): ${missing[*]}"
    note "installing Debian packages: ${missing[*]}"
    mkdir -p "$(dirname "$log")"
    run_logged "$log" apt-get update
    run_logged "$log.2" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}
