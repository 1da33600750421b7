#!/usr/bin/env bash
# A live launch on loopback: one coord server, one master, AGENTS agents (CONTAINERIZER: `mesos`,
# real processes, by default; `sim` runs no process, a control-plane measure like Nomad C1M's mock
# driver) and one scheduler on free 127.0.0.1 ports; then one app of INSTANCES instances (cpus 0.01,
# mem 1, `sleep 1000`) is POSTed to /v2/apps and timed until all are RUNNING (tasks/s, and the
# ratio to Marathon 0.15's 500 instances on 189 agents in 14.18 s), then DELETEd and timed until
# the master has no task left. Every daemon and every task process is killed on exit.
#
#   bench/launch-1000.sh [INSTANCES] [AGENTS] [CONTAINERIZER]
#   bench/launch-1000.sh 10000 3 sim
#   LAUNCH_TOKENS=20000 bench/launch-1000.sh 10000 3 sim
#
# DROVER=path measures that binary instead of building this checkout's.
# LAUNCH_TOKENS (default: the scheduler's, 1000 per second) is Marathon's launch throttle: at most
# that many launches per second; raise it to measure what the control plane itself can do.
set -euo pipefail
cd "$(dirname "$0")/.."
instances=${1:-1000}
agents=${2:-3}
containerizer=${3:-mesos}

# DROVER names another binary to measure (an older build, for a comparison in the same session).
if [ -z "${DROVER:-}" ]; then cargo build --release --quiet; fi
drover=${DROVER:-${CARGO_TARGET_DIR:-target}/release/drover}
work=$(mktemp -d /tmp/drover-launch-XXXXXX)
work=$(cd "$work" && pwd -P)
pids=()

# Kills every process whose working directory is under $work, with its process group: the tasks
# (`sh -c` in its own group, cwd its sandbox) and whatever they started. Repeats until none is left.
sweep() {
    python3 - "$work" <<'PY'
import os, sys, time
work = sys.argv[1]
own_group = os.getpgid(0)
killed = set()
for _ in range(25):
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if cwd == work or cwd.startswith(work + "/"):
            found.append(int(name))
    if not found:
        break
    for pid in found:
        killed.add(pid)
        try:
            group = os.getpgid(pid)
            if group != own_group:
                os.killpg(group, 9)
            os.kill(pid, 9)
        except OSError:
            pass
    time.sleep(0.1)
if killed:
    print(f"cleanup: killed {len(killed)} leftover process(es) working under {work}")
PY
}

cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    sweep || true
    if [ "$status" != 0 ]; then
        for log in "$work"/*.log; do
            [ -f "$log" ] || continue
            echo "== last lines of $(basename "$log")" >&2
            tail -n 15 "$log" >&2 || true
        done
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Daemons write their scratch files (the scheduler's go to $TMPDIR) under $work.
start() { # name, command...
    local name=$1
    shift
    TMPDIR=$work "$@" >"$work/$name.log" 2>&1 &
    pids+=("$!")
    disown "$!"
}

coord_port=$(free_port)
master_port=$(free_port)
scheduler_port=$(free_port)
zk=zk://127.0.0.1:$coord_port

start coord "$drover" coord --client-port "$coord_port" --work-dir "$work/coord"
start master "$drover" master --ip 127.0.0.1 --port "$master_port" --zk "$zk/mesos" \
    --work-dir "$work/master"
# Each agent gets its own range of host ports (below Linux' ephemeral range), enough for two
# tasks per CPU-share it could be given.
per_agent=$(( (2 * instances + agents - 1) / agents + 100 ))
# Room for every instance (cpus 0.01, mem 1) on each agent, at least cpus 8 and mem 4096.
cpus=$(( instances / (100 * agents) + 1 )); cpus=$(( cpus > 8 ? cpus : 8 ))
mem=$(( instances / agents + 100 )); mem=$(( mem > 4096 ? mem : 4096 ))
for i in $(seq 0 $((agents - 1))); do
    first=$((10000 + i * per_agent))
    start "agent-$i" "$drover" agent --ip 127.0.0.1 --port "$(free_port)" --hostname "agent-$i" \
        --master "$zk/mesos" --containerizers "$containerizer" --work-dir "$work/agent-$i" \
        --resources "cpus:$cpus;mem:$mem;disk:10000;ports:[$first-$((first + per_agent - 1))]"
done
start scheduler "$drover" scheduler --ip 127.0.0.1 --http-port "$scheduler_port" \
    --master "$zk/mesos" --zk "$zk/marathon" ${LAUNCH_TOKENS:+--launch-tokens "$LAUNCH_TOKENS"}

echo "== launch of $instances instances on $agents agents, containerizer $containerizer, launch tokens ${LAUNCH_TOKENS:-default} (coord :$coord_port, master :$master_port, scheduler :$scheduler_port)"
"$drover" bench launch --scheduler "127.0.0.1:$scheduler_port" --master "127.0.0.1:$master_port" \
    --instances "$instances" --agents "$agents" --timeout 120
