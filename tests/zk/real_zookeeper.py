#!/usr/bin/env python3
"""Start and stop a real ZooKeeper 3.8 (Debian's `zookeeper` package) on loopback, for wire tests.

Python standard library only. Nothing is written outside the state folder given with --dir: no
system service, no /etc, no /var. Every node listens on 127.0.0.1 only.

    real_zookeeper.py check                       # are java and the jars here? exit 0 yes, 2 no
    real_zookeeper.py start --dir D [--port P]    # standalone; waits until it serves; prints hosts=
    real_zookeeper.py start --dir D --ensemble 3 [--ports P1,P2,P3]
    real_zookeeper.py stop --dir D                # stops every node started in D (idempotent)

`start` returns once every node answers `srvr` as a serving standalone/leader/follower (or fails
after --timeout seconds, stopping what it started and printing the logs' tails). Its last line on
stdout is `hosts=127.0.0.1:P1[,127.0.0.1:P2,...]`, also written to D/hosts. Each node runs as its
own process group (leader = the java process, whose pid is in D/nodeN/pid), so a caller can also
kill it with `kill -KILL -- -PID`. Logs: D/nodeN/zookeeper.log. Unused ports are picked by binding
127.0.0.1:0 when not given (client ports) and always for the quorum and election ports.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

JAVA_DIR = "/usr/share/java"
ZK_JAR = os.path.join(JAVA_DIR, "zookeeper.jar")  # its manifest's Class-Path names its dependencies
# Without an SLF4J binding ZooKeeper logs nothing; slf4j-simple (libslf4j-java) writes to stderr.
SLF4J_SIMPLE = os.path.join(JAVA_DIR, "slf4j-simple.jar")
MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"  # standalone when the cfg has no server.N


def java_bin():
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]:
        p = os.path.join(d, "java")
        if os.access(p, os.X_OK):
            return p
    return None


def missing_tools():
    missing = []
    if java_bin() is None:
        missing.append("java (apt-get install default-jre-headless)")
    if not os.path.isfile(ZK_JAR):
        missing.append(f"{ZK_JAR} (apt-get install zookeeper)")
    return missing


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def four_letter(port, cmd, timeout=2.0):
    """Send a four-letter word; return the reply ('' when the server is not there yet)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(cmd.encode())
            chunks = []
            while True:
                b = s.recv(4096)
                if not b:
                    break
                chunks.append(b)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


def serving_mode(port):
    """'standalone' / 'leader' / 'follower' once the node serves clients, else None."""
    reply = four_letter(port, "srvr")
    for line in reply.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


def node_dirs(state):
    if not os.path.isdir(state):
        return []
    return sorted(
        os.path.join(state, n) for n in os.listdir(state)
        if n.startswith("node") and os.path.isdir(os.path.join(state, n))
    )


def write_cfg(node, n, client_port, quorum, tick_ms):
    data = os.path.join(node, "data")
    os.makedirs(data, exist_ok=True)
    lines = [
        f"tickTime={tick_ms}",
        "initLimit=10",
        "syncLimit=5",
        f"dataDir={data}",
        f"clientPort={client_port}",
        "clientPortAddress=127.0.0.1",
        "admin.enableServer=false",
        "4lw.commands.whitelist=*",
        "maxClientCnxns=0",
        "autopurge.purgeInterval=0",
    ]
    if quorum:
        with open(os.path.join(data, "myid"), "w") as f:
            f.write(f"{n}\n")
        for i, (peer, election) in enumerate(quorum, start=1):
            lines.append(f"server.{i}=127.0.0.1:{peer}:{election}")
    cfg = os.path.join(node, "zoo.cfg")
    with open(cfg, "w") as f:
        f.write("\n".join(lines) + "\n")
    return cfg


def spawn(node, cfg, heap_mb, super_digest=None):
    cp = ZK_JAR + (os.pathsep + SLF4J_SIMPLE if os.path.isfile(SLF4J_SIMPLE) else "")
    cmd = [
        java_bin(),
        f"-Xmx{heap_mb}m",
        "-XX:+UseSerialGC",
        "-Djava.net.preferIPv4Stack=true",
        "-Dzookeeper.admin.enableServer=false",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
        "-Dorg.slf4j.simpleLogger.showDateTime=true",
    ] + ([f"-Dzookeeper.DigestAuthenticationProvider.superDigest={super_digest}"]
         if super_digest else []) + [
        "-cp", cp, MAIN, cfg,
    ]
    with open(os.path.join(node, "cmdline"), "w") as f:
        f.write(" ".join(cmd) + "\n")
    log = open(os.path.join(node, "zookeeper.log"), "ab")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        cwd=node, start_new_session=True,  # own process group: pid == pgid
    )
    log.close()
    with open(os.path.join(node, "pid"), "w") as f:
        f.write(f"{proc.pid}\n")
    return proc


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def stop(state, grace=10.0):
    pids = []
    for node in node_dirs(state):
        try:
            with open(os.path.join(node, "pid")) as f:
                pids.append(int(f.read().strip()))
        except (OSError, ValueError):
            pass
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for node in node_dirs(state):
        try:
            os.remove(os.path.join(node, "pid"))
        except OSError:
            pass


def log_tails(state, lines=30):
    out = []
    for node in node_dirs(state):
        try:
            with open(os.path.join(node, "zookeeper.log"), errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
        except OSError:
            tail = ["(no log)"]
        out.append(f"--- {node}/zookeeper.log (last {lines} lines)")
        out.extend(tail)
    return "\n".join(out)


def start(args):
    missing = missing_tools()
    if missing:
        print("missing: " + "; ".join(missing), file=sys.stderr)
        return 2
    n = args.ensemble
    if n < 1:
        print("--ensemble must be >= 1", file=sys.stderr)
        return 2
    if args.ports:
        ports = [int(p) for p in args.ports.split(",")]
    elif args.port:
        ports = [args.port]
    else:
        ports = [free_port() for _ in range(n)]
    if len(ports) != n:
        print(f"{n} node(s) need {n} client port(s), got {ports}", file=sys.stderr)
        return 2
    state = os.path.abspath(args.dir)
    if node_dirs(state):
        print(f"{state} already holds nodes: stop them and use a fresh --dir", file=sys.stderr)
        return 2
    os.makedirs(state, exist_ok=True)
    quorum = [(free_port(), free_port()) for _ in range(n)] if n > 1 else None
    procs = []
    for i, port in enumerate(ports, start=1):
        node = os.path.join(state, f"node{i}")
        os.makedirs(node, exist_ok=True)
        cfg = write_cfg(node, i, port, quorum, args.tick_ms)
        procs.append(spawn(node, cfg, args.heap_mb, args.super_digest))

    deadline = time.monotonic() + args.timeout
    modes = [None] * n
    while time.monotonic() < deadline:
        for i, p in enumerate(procs):
            if p.poll() is not None:
                print(f"node{i + 1} exited with {p.returncode} while starting\n{log_tails(state)}",
                      file=sys.stderr)
                stop(state)
                return 1
        modes = [serving_mode(port) for port in ports]
        if all(m in ("standalone", "leader", "follower") for m in modes):
            break
        time.sleep(0.2)
    else:
        print(f"ZooKeeper did not serve within {args.timeout}s (modes {modes})\n{log_tails(state)}",
              file=sys.stderr)
        stop(state)
        return 1
    if n > 1 and modes.count("leader") != 1:
        print(f"ensemble has no single leader: {modes}", file=sys.stderr)
        stop(state)
        return 1
    hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
    with open(os.path.join(state, "hosts"), "w") as f:
        f.write(hosts + "\n")
    for i, (port, mode) in enumerate(zip(ports, modes), start=1):
        print(f"node{i}: 127.0.0.1:{port} {mode} pid={procs[i - 1].pid}")
    print(f"hosts={hosts}", flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="exit 0 when java and the ZooKeeper jars are installed, else 2")
    s = sub.add_parser("start", help="start standalone or an ensemble and wait until it serves")
    s.add_argument("--dir", required=True, help="fresh state folder (configs, data, logs, pids)")
    s.add_argument("--port", type=int, help="client port (standalone)")
    s.add_argument("--ports", help="client ports, comma-separated, one per node")
    s.add_argument("--ensemble", type=int, default=1, help="number of nodes (1 = standalone)")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for serving")
    s.add_argument("--tick-ms", type=int, default=2000)
    s.add_argument("--heap-mb", type=int, default=256)
    s.add_argument("--super-digest", help="the superDigest id, super:BASE64(SHA1(super:PASSWORD))")
    t = sub.add_parser("stop", help="stop every node started in --dir")
    t.add_argument("--dir", required=True)
    args = ap.parse_args()
    if args.cmd == "check":
        missing = missing_tools()
        if missing:
            print("missing: " + "; ".join(missing))
            return 2
        print(f"ok: {java_bin()} {ZK_JAR}")
        return 0
    if args.cmd == "start":
        return start(args)
    stop(os.path.abspath(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
