# Shared by the benchmark scripts: boot lab guests with `xsched-lab up` (release build) and stop
# them. Source it from a script that has `set -euo pipefail` and runs from the repository root.

lab_out=$(mktemp -d)
lab_pid=""
trap '[ -n "$lab_pid" ] && kill "$lab_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$lab_out"' EXIT

# lab_up ARGS...: starts `xsched-lab up ARGS...` and waits until the guests are up; their details
# (ram:, qmp:, workload lines) are then in "$lab_out/lab".
lab_up() {
    target/release/xsched-lab up "$@" >"$lab_out/lab" 2>&1 &
    lab_pid=$!
    until grep -q '^up;' "$lab_out/lab"; do
        kill -0 "$lab_pid" 2>/dev/null || { cat "$lab_out/lab" >&2; exit 1; }
        sleep 0.5
    done
}

# lab_field NAME: the value of the first "NAME: VALUE" line of the guests' details.
lab_field() {
    awk -v name="$1:" '$1 == name { print $2; exit }' "$lab_out/lab"
}

# lab_down: stops the guests.
lab_down() {
    kill -TERM "$lab_pid"
    wait "$lab_pid" 2>/dev/null || true
    lab_pid=""
}
