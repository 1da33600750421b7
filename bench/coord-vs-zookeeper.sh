#!/usr/bin/env bash
# drover coord against real ZooKeeper 3.8, both as 3-server ensembles on loopback, in one run:
# throughput and p50/p99 latency of 1 KB operations (CLIENTS clients; READS percent getData, the
# rest setData + create), then the time from killing the leader to the first successful write.
# CLIENTS and READS may be comma-separated lists: every pair is measured. Needs what
# .ci/install-wire-deps installs.
#
#   bench/coord-vs-zookeeper.sh [CLIENTS] [SECONDS] [READS]
#   bench/coord-vs-zookeeper.sh 16,128 10 0,90      # the README's table
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-16}
seconds=${2:-10}
reads=${3:-0}

cargo build --release --quiet
drover=${CARGO_TARGET_DIR:-target}/release/drover
work=$(mktemp -d /tmp/drover-bench-XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    python3 tests/zk/real_zookeeper.py stop --dir "$work/zookeeper" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_drover() {
    local peers="" hosts="" client_ports=() i
    for i in 1 2 3; do
        client_ports+=("$(free_port)")
        peers+="${peers:+,}$i=127.0.0.1:$(free_port)"
    done
    # No limit on connections per address, as the ZooKeeper it is compared with
    # (tests/zk/real_zookeeper.py writes maxClientCnxns=0): every client comes from 127.0.0.1.
    for i in 1 2 3; do
        mkdir -p "$work/drover-$i"
        "$drover" coord --id "$i" --peers "$peers" --client-port "${client_ports[$((i-1))]}" \
            --work-dir "$work/drover-$i" --max-client-cnxns 0 >"$work/drover-$i/log" 2>&1 &
        pids+=("$!")
        disown "$!"
        hosts+="${hosts:+,}127.0.0.1:${client_ports[$((i-1))]}"
    done
    drover_hosts=$hosts
    drover_pids=$(IFS=,; echo "${pids[*]}")
}

wait_for_leader() { # name hosts [log files...]
    local name=$1 hosts=$2 host mode
    shift 2
    # Up to ~2 minutes: a loaded CI machine (2 cores, a JVM starting next door) can be slow.
    for _ in $(seq 1 300); do
        for host in ${hosts//,/ }; do
            mode=$(python3 - "$host" <<'PY'
import socket, sys
h, p = sys.argv[1].rsplit(":", 1)
try:
    s = socket.create_connection((h, int(p)), 2); s.sendall(b"srvr"); s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk: break
        data += chunk
    print(next((l.split(":", 1)[1].strip() for l in data.decode().splitlines() if l.startswith("Mode:")), ""))
except OSError:
    print("")
PY
)
            [ "$mode" = leader ] && return 0
        done
        sleep 0.2
    done
    echo "$name: no leader among $hosts" >&2
    for log in "$@"; do
        echo "--- $log" >&2
        tail -n 20 "$log" >&2 || true
    done
    return 1
}

start_drover
python3 tests/zk/real_zookeeper.py start --dir "$work/zookeeper" --ensemble 3 >"$work/zookeeper.out"
zookeeper_hosts=$(sed -n 's/^hosts=//p' "$work/zookeeper.out")
zookeeper_pids=$(cat "$work"/zookeeper/node*/pid | paste -sd, -)
wait_for_leader drover "$drover_hosts" "$work"/drover-*/log
wait_for_leader zookeeper "$zookeeper_hosts" "$work/zookeeper.out"

for n in ${clients//,/ }; do
    for r in ${reads//,/ }; do
        echo "== throughput and latency: $n clients, $r% reads, $seconds s each"
        "$drover" bench coord --clients "$n" --seconds "$seconds" --reads "$r" \
            --target "drover=$drover_hosts" --target "zookeeper=$zookeeper_hosts" 2>/dev/null
    done
done

echo "== leader failover (kill -9 of the leader, then the first successful write)"
"$drover" bench failover --name drover --hosts "$drover_hosts" --pids "$drover_pids" 2>/dev/null
"$drover" bench failover --name zookeeper --hosts "$zookeeper_hosts" --pids "$zookeeper_pids" 2>/dev/null
