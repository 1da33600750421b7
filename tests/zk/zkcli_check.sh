#!/usr/bin/env bash
# Wire check with ZooKeeper's own Java CLI (Debian's zkCli.sh): create a node with data, read it
# back, update it, list it, delete it, against one server.
#
#   tests/zk/zkcli_check.sh 127.0.0.1:PORT
#
# Prints one line per check and `N passed, M failed`; exit 0 only when all passed, 3 when zkCli.sh
# or java is missing. ZKCLI=/path/to/zkCli.sh overrides where it is looked for.
set -uo pipefail

server="${1:?usage: zkcli_check.sh 127.0.0.1:PORT}"

find_zkcli() {
    local c
    for c in "${ZKCLI:-}" /usr/share/zookeeper/bin/zkCli.sh /usr/bin/zkCli.sh; do
        [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
    done
    if command -v dpkg >/dev/null 2>&1; then
        c="$(dpkg -L zookeeper 2>/dev/null | grep -m1 '/zkCli\.sh$' || true)"
        [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
    fi
    return 1
}

zkcli="$(find_zkcli)" || { echo "zkCli.sh not found (apt-get install zookeeper)" >&2; exit 3; }
command -v java >/dev/null 2>&1 || { echo "java not found (apt-get install default-jre-headless)" >&2; exit 3; }

node="/zkcli-check-$$-$RANDOM"
data="drover wire check $$"
data2="updated-$RANDOM"
passed=0
failed=0
out=""

# Run one zkCli command (never longer than 60 s); its stdout+stderr land in $out, its status in $rc.
cli() {
    out="$(timeout 60 "$zkcli" -server "$server" "$@" 2>&1)"
    rc=$?
}

check() { # name, then a condition already evaluated into $ok
    local name="$1"
    if [ "$ok" = 1 ]; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name: ${why:-}"
        printf '%s\n' "$out" | grep -v '^SLF4J' | sed 's/^/     | /'
    fi
}

has_line() { printf '%s\n' "$out" | grep -qxF -- "$1"; }

cli create "$node" "$data"
ok=0; why="exit $rc, no 'Created $node'"
[ "$rc" = 0 ] && has_line "Created $node" && ok=1
check "create $node with data"

cli get "$node"
ok=0; why="exit $rc, data line '$data' not in the output"
[ "$rc" = 0 ] && has_line "$data" && ok=1
check "get returns the data"

cli get -s "$node"
ok=0; why="stat lines (dataLength = ${#data}, dataVersion = 0, numChildren = 0) missing"
[ "$rc" = 0 ] && has_line "$data" && has_line "dataLength = ${#data}" \
    && has_line "dataVersion = 0" && has_line "numChildren = 0" && has_line "ephemeralOwner = 0x0" \
    && ok=1
check "get -s shows the stat"

cli set "$node" "$data2"
ok=0; why="exit $rc"
[ "$rc" = 0 ] && ok=1
check "set new data"

cli get -s "$node"
ok=0; why="expected '$data2' and dataVersion = 1"
[ "$rc" = 0 ] && has_line "$data2" && has_line "dataVersion = 1" && ok=1
check "get after set"

cli ls /
ok=0; why="ls / does not list ${node#/}"
[ "$rc" = 0 ] && printf '%s\n' "$out" | grep -q -- "${node#/}" && ok=1
check "ls / lists the node"

cli create "$node" "again"
ok=0; why="expected 'Node already exists: $node'"
printf '%s\n' "$out" | grep -qF -- "Node already exists: $node" && ok=1
check "create twice says the node exists"

cli delete "$node"
ok=0; why="exit $rc"
[ "$rc" = 0 ] && ok=1
check "delete"

cli get "$node"
ok=0; why="expected 'Node does not exist: $node'"
printf '%s\n' "$out" | grep -qF -- "Node does not exist: $node" && ok=1
check "get after delete says the node does not exist"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
