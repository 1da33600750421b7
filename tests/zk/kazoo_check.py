#!/usr/bin/env python3
"""Wire-compatibility checks of a ZooKeeper server with a real client (kazoo).

    python3 tests/zk/kazoo_check.py --hosts 127.0.0.1:2181[,127.0.0.1:2182,...] [--root /kazoo-check-X]

Every check works under --root (created if missing, removed at the end). Prints one line per check
(`ok   name` or `FAIL name: why`), then the request types kazoo sent, then `N passed, M failed`.
Exit 0 only when every check passed. Proven against real ZooKeeper 3.8.0; the assertions pin what
ZooKeeper really does, so a compatible server must do the same.
"""

import argparse
import collections
import logging
import os
import re
import sys
import threading
import time
import traceback
import uuid

try:
    from kazoo.client import KazooClient
    from kazoo.exceptions import (
        BadVersionError,
        LockTimeout,
        NoChildrenForEphemeralsError,
        NodeExistsError,
        NoNodeError,
        NotEmptyError,
        RolledBackError,
        RuntimeInconsistency,
    )
    from kazoo.protocol.states import EventType, KazooState
    from kazoo.security import OPEN_ACL_UNSAFE
except ImportError as e:  # the Rust test treats exit 3 as "tool missing"
    print(f"kazoo is not importable ({e}): pip install kazoo==2.10.0", file=sys.stderr)
    sys.exit(3)

WAIT = 5.0  # seconds to wait for something that must happen (a watch, a lock)
QUIET = 0.5  # seconds to wait to be sure something does not happen
SEQ = re.compile(r"^(.*?)(\d{10})$")


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise CheckFailed(f"{what}: expected {expected!r}, got {actual!r}")


def raises(exc, fn, *args, **kwargs):
    try:
        r = fn(*args, **kwargs)
    except exc:
        return
    except Exception as e:  # noqa: BLE001 - report the wrong exception
        raise CheckFailed(f"{fn.__name__}{args}: expected {exc.__name__}, got {type(e).__name__}: {e}")
    raise CheckFailed(f"{fn.__name__}{args}: expected {exc.__name__}, returned {r!r}")


def wait_until(zk, sync_path, cond, what):
    """Poll (sync + read) until cond() holds, at most WAIT seconds: less than the session timeout
    (10 s), so a server that only cleans up on session expiry still fails."""
    deadline = time.monotonic() + WAIT
    while True:
        zk.sync(sync_path)
        if cond():
            return
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what} (waited {WAIT}s)")
        time.sleep(0.02)


def seq_number(name):
    m = SEQ.match(name)
    expect(m is not None, f"{name!r} does not end in a 10-digit sequence number")
    return m.group(1), int(m.group(2))


class RequestCounter(logging.Handler):
    """Counts the request types kazoo sends (from its DEBUG 'Sending request' log lines)."""

    def __init__(self):
        super().__init__(level=1)
        self.counts = collections.Counter()

    def emit(self, record):
        if record.msg.startswith("Sending request") and len(record.args) == 2:
            self.counts[type(record.args[1]).__name__] += 1


class Rig:
    def __init__(self, hosts, root):
        self.hosts = hosts
        self.root = root.rstrip("/")
        self.clients = []
        self.counter = RequestCounter()
        lg = logging.getLogger("kazoo.client")
        lg.setLevel(logging.DEBUG)
        lg.addHandler(self.counter)
        lg.propagate = False

    def client(self):
        c = KazooClient(hosts=self.hosts, timeout=10.0, connection_retry={"max_tries": 3},
                        command_retry={"max_tries": 0})
        c.start(timeout=15)
        self.clients.append(c)
        return c

    def close(self, c):
        c.stop()
        c.close()
        if c in self.clients:
            self.clients.remove(c)

    def path(self, *parts):
        return "/".join([self.root, *parts])


# ---------------------------------------------------------------------------------------------- checks
# Each takes the rig and the main client `zk` and raises CheckFailed (or anything) on failure.


def check_session(rig, zk):
    eq(zk.state, KazooState.CONNECTED, "state")
    sid, passwd = zk.client_id
    expect(sid != 0, "session id is 0")
    eq(len(passwd), 16, "session password length")
    other = rig.client()
    expect(other.client_id[0] != sid, "two sessions got the same id")
    rig.close(other)


def check_create_get_stat(rig, zk):
    p = rig.path("plain")
    eq(zk.create(p, b"hello"), p, "create returns the path")
    data, st = zk.get(p)
    eq(data, b"hello", "data")
    eq(st.version, 0, "version of a new node")
    eq(st.cversion, 0, "cversion of a new node")
    eq(st.aversion, 0, "aversion of a new node")
    eq(st.dataLength, 5, "dataLength")
    eq(st.numChildren, 0, "numChildren")
    eq(st.ephemeralOwner, 0, "ephemeralOwner of a persistent node")
    eq(st.czxid, st.mzxid, "czxid == mzxid of a new node")
    eq(st.pzxid, st.czxid, "pzxid == czxid of a new node")
    expect(st.ctime > 1_000_000_000_000, f"ctime is not unix ms: {st.ctime}")
    eq(st.mtime, st.ctime, "mtime == ctime of a new node")
    st2 = zk.exists(p)
    eq(st2, st, "exists() stat == get() stat")
    eq(zk.exists(rig.path("absent")), None, "exists() of a missing node")
    # empty data and a 512 KiB value round-trip (ZooKeeper's default jute.maxbuffer is ~1 MiB)
    e = rig.path("empty")
    zk.create(e)
    data, st = zk.get(e)
    eq((data, st.dataLength), (b"", 0), "empty node data, dataLength")
    big = bytes(range(256)) * 2048  # 512 KiB
    zk.set(e, big)
    data, st = zk.get(e)
    expect(data == big, "512 KiB value did not round-trip")
    eq(st.dataLength, len(big), "dataLength of a 512 KiB value")


def check_create2_include_data(rig, zk):
    p = rig.path("create2")
    r = zk.create(p, b"abc", include_data=True)  # Create2 (opcode 15) returns path + stat
    expect(isinstance(r, tuple) and len(r) == 2, f"create(include_data) returned {r!r}")
    path, st = r
    eq(path, p, "Create2 path")
    eq((st.version, st.dataLength, st.numChildren), (0, 3, 0), "Create2 stat version/len/children")
    eq(st, zk.exists(p), "Create2 stat == exists() stat")


def check_set_versions(rig, zk):
    p = rig.path("versions")
    zk.create(p, b"v0")
    _, st0 = zk.get(p)
    st1 = zk.set(p, b"v1")
    eq(st1.version, 1, "version after one set")
    expect(st1.mzxid > st1.czxid, f"mzxid {st1.mzxid} must exceed czxid {st1.czxid} after a set")
    eq(st1.czxid, st0.czxid, "czxid unchanged by set")
    expect(st1.mtime >= st0.mtime, "mtime went backwards")
    eq(st1.dataLength, 2, "dataLength after set")
    st2 = zk.set(p, b"v2-longer", version=1)
    eq(st2.version, 2, "version after a conditional set")
    eq(st2.dataLength, 9, "dataLength after set")
    raises(BadVersionError, zk.set, p, b"nope", version=1)
    raises(BadVersionError, zk.set, p, b"nope", version=7)
    data, st = zk.get(p)
    eq((data, st.version), (b"v2-longer", 2), "data/version unchanged by a failed set")
    st3 = zk.set(p, b"v3", version=-1)  # -1 = any version
    eq(st3.version, 3, "version after set with version=-1")
    # zxids grow across writes
    expect(st3.mzxid > st2.mzxid > st1.mzxid, "mzxid must increase with every write")


def check_delete_versions(rig, zk):
    p = rig.path("del")
    zk.create(p, b"x")
    zk.set(p, b"y")
    raises(BadVersionError, zk.delete, p, version=0)
    expect(zk.exists(p) is not None, "node deleted by a delete with the wrong version")
    eq(zk.delete(p, version=1), True, "delete returns True")
    eq(zk.exists(p), None, "exists() after delete")
    raises(NoNodeError, zk.get, p)
    raises(NoNodeError, zk.delete, p)
    zk.create(p, b"again")  # a re-created node starts over at version 0
    eq(zk.get(p)[1].version, 0, "version of a re-created node")
    zk.delete(p, version=-1)


def check_errors(rig, zk):
    p = rig.path("errs")
    zk.create(p, b"")
    raises(NodeExistsError, zk.create, p, b"")
    raises(NoNodeError, zk.get, rig.path("errs", "missing"))
    raises(NoNodeError, zk.set, rig.path("errs", "missing"), b"")
    raises(NoNodeError, zk.get_children, rig.path("errs", "missing"))
    raises(NoNodeError, zk.create, rig.path("errs", "no", "parent"), b"")  # makepath=False
    zk.create(rig.path("errs", "child"), b"")
    raises(NotEmptyError, zk.delete, p)
    expect(zk.exists(p) is not None, "NotEmpty delete removed the node")
    zk.create(rig.path("errs", "a", "b", "c"), b"deep", makepath=True)
    eq(zk.get(rig.path("errs", "a", "b", "c"))[0], b"deep", "makepath create")


def check_children_and_stat(rig, zk):
    p = rig.path("kids")
    zk.create(p, b"parent")
    for name in ["c", "a", "b"]:
        zk.create(f"{p}/{name}", name.encode())
    eq(sorted(zk.get_children(p)), ["a", "b", "c"], "get_children")
    st = zk.exists(p)
    eq(st.numChildren, 3, "numChildren")
    eq(st.cversion, 3, "cversion counts child creations")
    eq(st.version, 0, "a child create does not change the parent's version")
    kids, st2 = zk.get_children(p, include_data=True)  # GetChildren2 (opcode 12)
    eq(sorted(kids), ["a", "b", "c"], "get_children(include_data)")
    eq(st2, st, "GetChildren2 stat == exists() stat")
    _, cst = zk.get(f"{p}/b")
    eq(st.pzxid, max(zk.exists(f"{p}/{n}").czxid for n in "abc"), "pzxid = last child change")
    zk.delete(f"{p}/b")
    st3 = zk.exists(p)
    eq((st3.numChildren, st3.cversion), (2, 4), "numChildren/cversion after a child delete")
    expect(st3.pzxid > cst.czxid, "pzxid moves on a child delete")
    eq(zk.get_children(p + "/a"), [], "children of a leaf")


def check_acl_default(rig, zk):
    p = rig.path("acl")
    zk.create(p, b"")
    acls, st = zk.get_acls(p)
    eq(list(acls), list(OPEN_ACL_UNSAFE), "default ACL is world:anyone with all perms")
    eq(acls[0].perms, 31, "ALL perms bits")


def check_ephemeral(rig, zk):
    p = rig.path("eph")
    zk.create(p, b"")
    owner = rig.client()
    sid = owner.client_id[0]
    e = owner.create(f"{p}/node", b"mine", ephemeral=True)
    eq(e, f"{p}/node", "ephemeral create path")
    zk.sync(p)  # another session may be on another server of an ensemble
    st = zk.exists(e)
    expect(st is not None, "ephemeral not visible to another session")
    eq(st.ephemeralOwner, sid, "ephemeralOwner == owner's session id")
    raises(NoChildrenForEphemeralsError, owner.create, f"{e}/child", b"")
    eq(zk.exists(p).numChildren, 1, "parent numChildren with an ephemeral child")
    gone, kids = Events(), Events()
    zk.exists(e, watch=gone)
    zk.get_children(p, watch=kids)
    # kazoo's stop() sends closeSession and closes the socket without waiting for the reply: the
    # server must still process that last request (not drop it on EOF) and remove the ephemerals.
    rig.close(owner)
    wait_until(zk, p, lambda: zk.exists(e) is None, "ephemeral still there after its session closed")
    eq(zk.get_children(p), [], "children after the owner's session closed")
    got = gone.wait(1)
    expect(got and got[0].type == EventType.DELETED, f"exists watch on the ephemeral: {got}")
    got = kids.wait(1)
    expect(got and got[0].type == EventType.CHILD, f"child watch on the ephemeral's parent: {got}")


def check_session_resume(rig, zk):
    # A dropped TCP connection is not a lost session: kazoo reconnects with the same session id
    # and password (ConnectRequest with sessionId != 0) and its ephemerals survive.
    p = rig.path("resume")
    c = rig.client()
    sid = c.client_id[0]
    e = c.create(p, b"", ephemeral=True)
    states = []
    reconnected = threading.Event()

    def listener(state):
        states.append(state)
        if state == KazooState.CONNECTED and KazooState.SUSPENDED in states:
            reconnected.set()

    c.add_listener(listener)
    c._connection._socket.shutdown(2)  # kazoo has no public "drop the connection"
    expect(reconnected.wait(WAIT), f"no reconnect after a dropped connection (states {states})")
    eq(c.client_id[0], sid, "session id after reconnecting")
    eq(c.exists(e).ephemeralOwner, sid, "ephemeral after reconnecting")
    zk.sync(p)
    expect(zk.exists(e) is not None, "ephemeral removed when its connection (not session) dropped")
    rig.close(c)


def check_sequential(rig, zk):
    p = rig.path("seq")
    zk.create(p, b"")
    names = [zk.create(f"{p}/item-", str(i).encode(), sequence=True) for i in range(3)]
    nums = []
    for i, n in enumerate(names):
        prefix, num = seq_number(n)
        eq(prefix, f"{p}/item-", "sequential prefix")
        nums.append(num)
    eq(nums, [0, 1, 2], "sequence numbers in a fresh parent")
    eq(os.path.basename(names[0]), "item-0000000000", "10-digit zero-padded suffix")
    # ZooKeeper keeps a per-parent count of child *creates*; the suffix is that count before the
    # create. Deletes do not consume numbers. The cversion clients see is a different number:
    # creates + deletes (DataNode.copyStat reports 2 * creates - numChildren).
    zk.delete(names[1])
    eq(zk.exists(p).cversion, 4, "visible cversion after 3 creates and 1 delete")
    n4 = zk.create(f"{p}/other-", b"", sequence=True)
    eq(seq_number(n4)[1], 3, "sequence after a child delete (deletes do not consume numbers)")
    zk.create(f"{p}/plain", b"")  # a non-sequential create consumes a number
    # A sequential create whose name is only the number (path ends in '/').
    n5 = zk.create(f"{p}/", b"", sequence=True)
    eq(n5, f"{p}/0000000005", "sequential node with an empty name prefix")
    st = zk.exists(p)
    eq((st.numChildren, st.cversion), (5, 7), "numChildren/cversion after 6 creates, 1 delete")
    eq(sorted(zk.get_children(p)),
       sorted(["item-0000000000", "item-0000000002", "other-0000000003", "plain", "0000000005"]),
       "children after sequential creates")


def check_ephemeral_sequential(rig, zk):
    p = rig.path("ephseq")
    zk.create(p, b"")
    owner = rig.client()
    sid = owner.client_id[0]
    a = owner.create(f"{p}/n-", b"", ephemeral=True, sequence=True)
    b = owner.create(f"{p}/n-", b"", ephemeral=True, sequence=True)
    eq([seq_number(a)[1], seq_number(b)[1]], [0, 1], "ephemeral-sequential numbers")
    zk.sync(p)
    eq(zk.exists(a).ephemeralOwner, sid, "ephemeral-sequential ephemeralOwner")
    rig.close(owner)
    wait_until(zk, p, lambda: zk.get_children(p) == [],
               "ephemeral-sequential nodes still there after the session closed")
    eq(zk.exists(p).cversion, 4, "visible cversion after 2 creates and 2 deletes")
    # Deletions do not consume sequence numbers: the next one is 2.
    c = zk.create(f"{p}/n-", b"", sequence=True)
    eq(seq_number(c)[1], 2, "sequence after two ephemeral deletions")


class Events:
    def __init__(self):
        self.events = []
        self.cond = threading.Condition()

    def __call__(self, event):
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait(self, n=1, timeout=WAIT):
        with self.cond:
            self.cond.wait_for(lambda: len(self.events) >= n, timeout)
            return list(self.events)


def check_data_watch(rig, zk):
    p = rig.path("dw")
    zk.create(p, b"0")
    ev = Events()
    zk.get(p, watch=ev)
    writer = rig.client()
    writer.set(p, b"1")
    got = ev.wait(1)
    expect(got, "data watch did not fire on set")
    eq((got[0].type, got[0].path), (EventType.CHANGED, p), "data watch event type/path")
    eq(got[0].state, "CONNECTED", "watch event state")
    writer.set(p, b"2")  # a watch is one-shot
    time.sleep(QUIET)
    eq(len(ev.events), 1, "data watch fired more than once")
    # A watch set by get() fires DELETED on delete.
    ev2 = Events()
    zk.get(p, watch=ev2)
    writer.delete(p)
    got = ev2.wait(1)
    expect(got, "data watch did not fire on delete")
    eq(got[0].type, EventType.DELETED, "data watch event on delete")
    rig.close(writer)


def check_exists_watch(rig, zk):
    p = rig.path("ew")
    ev = Events()
    eq(zk.exists(p, watch=ev), None, "exists() of a node about to be created")
    writer = rig.client()
    writer.create(p, b"")
    got = ev.wait(1)
    expect(got, "exists watch did not fire on create")
    eq((got[0].type, got[0].path), (EventType.CREATED, p), "exists watch event type/path")
    # An exists() watch on a present node fires CHANGED on set.
    ev2 = Events()
    expect(zk.exists(p, watch=ev2) is not None, "exists() after create")
    writer.set(p, b"x")
    got = ev2.wait(1)
    expect(got, "exists watch did not fire on set")
    eq(got[0].type, EventType.CHANGED, "exists watch event on set")
    time.sleep(QUIET)
    eq(len(ev.events), 1, "exists watch fired more than once")
    rig.close(writer)


def check_child_watch(rig, zk):
    p = rig.path("cw")
    zk.create(p, b"")
    ev = Events()
    eq(zk.get_children(p, watch=ev), [], "children before")
    writer = rig.client()
    writer.create(f"{p}/kid", b"")
    got = ev.wait(1)
    expect(got, "child watch did not fire on child create")
    eq((got[0].type, got[0].path), (EventType.CHILD, p), "child watch event type/path")
    writer.create(f"{p}/kid2", b"")
    time.sleep(QUIET)
    eq(len(ev.events), 1, "child watch fired more than once")
    # Setting the parent's data does not fire a child watch.
    ev2 = Events()
    zk.get_children(p, watch=ev2)
    writer.set(p, b"data")
    time.sleep(QUIET)
    eq(ev2.events, [], "child watch fired on a data change")
    writer.delete(f"{p}/kid")
    got = ev2.wait(1)
    expect(got and got[0].type == EventType.CHILD, f"child watch on child delete: {got}")
    # A child watch fires DELETED when the watched node itself goes.
    ev3 = Events()
    zk.get_children(p, watch=ev3)
    writer.delete(f"{p}/kid2")
    ev3.wait(1)
    ev4 = Events()
    zk.get_children(p, watch=ev4)
    writer.delete(p)
    got = ev4.wait(1)
    expect(got, "child watch did not fire when its node was deleted")
    eq(got[0].type, EventType.DELETED, "child watch event when its node is deleted")
    rig.close(writer)


def check_transaction_commit(rig, zk):
    p = rig.path("txn")
    zk.create(p, b"")
    zk.create(f"{p}/existing", b"old")
    t = zk.transaction()
    t.create(f"{p}/a", b"A")
    t.create(f"{p}/s-", b"", sequence=True)
    t.set_data(f"{p}/existing", b"new", version=0)
    t.check(f"{p}/existing", version=1)  # sees the set_data earlier in the same transaction
    t.delete(f"{p}/a")
    results = t.commit()
    eq(len(results), 5, "number of results")
    eq(results[0], f"{p}/a", "create result")
    eq(results[1], f"{p}/s-0000000002", "sequential create result inside a transaction")
    expect(hasattr(results[2], "version") and results[2].version == 1, f"set_data result {results[2]!r}")
    eq(results[3], True, "check result")
    eq(results[4], True, "delete result")
    eq(zk.get(f"{p}/existing")[0], b"new", "data after commit")
    eq(zk.exists(f"{p}/a"), None, "created-then-deleted node")
    # All ops of one transaction share one zxid.
    st = zk.exists(f"{p}/s-0000000002")
    eq(st.czxid, results[2].mzxid, "one zxid for the whole transaction")


def check_transaction_abort(rig, zk):
    p = rig.path("txnfail")
    zk.create(p, b"")
    zk.create(f"{p}/x", b"keep")
    before = zk.exists(p)
    t = zk.transaction()
    t.create(f"{p}/new", b"")
    t.set_data(f"{p}/x", b"changed")
    t.check(f"{p}/x", version=42)  # fails
    t.create(f"{p}/after", b"")
    results = t.commit()
    eq(len(results), 4, "number of results of a failed transaction")
    eq([type(r) for r in results],
       [RolledBackError, RolledBackError, BadVersionError, RuntimeInconsistency],
       "per-op results: 0 (ok, rolled back) before the failure, its code, then -2 after")
    eq(zk.exists(f"{p}/new"), None, "create applied by a failed transaction")
    eq(zk.exists(f"{p}/after"), None, "create applied by a failed transaction")
    data, st = zk.get(f"{p}/x")
    eq((data, st.version), (b"keep", 0), "set_data applied by a failed transaction")
    eq(zk.exists(p), before, "parent stat changed by a failed transaction")
    # A failing create (NodeExists) in the middle.
    t = zk.transaction()
    t.create(f"{p}/y", b"")
    t.create(f"{p}/x", b"")
    results = t.commit()
    eq([type(r) for r in results], [RolledBackError, NodeExistsError], "NodeExists in a transaction")
    eq(zk.exists(f"{p}/y"), None, "first op of a failed transaction applied")


def run_thread(target, name):
    errors = []

    def body():
        try:
            target()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=body, name=name, daemon=True)
    t.start()
    return t, errors


def check_lock(rig, zk):
    p = rig.path("lock")
    a, b = rig.client(), rig.client()
    lock_a = a.Lock(p, "client-a")
    lock_b = b.Lock(p, "client-b")
    expect(lock_a.acquire(timeout=WAIT), "first client did not get the free lock")
    expect(not lock_b.acquire(blocking=False), "second client got a held lock")
    raises(LockTimeout, lock_b.acquire, timeout=QUIET)
    released = threading.Event()
    got_b = threading.Event()
    order = []

    def take_b():
        lock_b.acquire(timeout=3 * WAIT)
        order.append("b-acquired" if released.is_set() else "b-acquired-while-a-held")
        got_b.set()

    t, errors = run_thread(take_b, "lock-b")
    time.sleep(QUIET)
    expect(not got_b.is_set(), "second client got the lock while the first held it")
    a.sync(p)  # b's contender node may have been written through another server
    eq(lock_a.contenders(), ["client-a", "client-b"], "lock contenders in order")
    released.set()
    lock_a.release()
    expect(got_b.wait(WAIT), f"second client did not get the lock after release {errors}")
    t.join(WAIT)
    eq(order, ["b-acquired"], "lock order")
    eq(lock_b.contenders(), ["client-b"], "contenders after the first released")
    lock_b.release()
    # Closing the holder's session releases the lock too.
    expect(lock_a.acquire(timeout=WAIT), "first client re-acquire")
    c = rig.client()
    lock_c = c.Lock(p, "client-c")
    got_c = threading.Event()
    t, errors = run_thread(lambda: (lock_c.acquire(timeout=3 * WAIT), got_c.set()), "lock-c")
    time.sleep(QUIET)
    expect(not got_c.is_set(), "third client got a held lock")
    rig.close(a)
    expect(got_c.wait(WAIT), f"lock not freed when its holder's session closed {errors}")
    t.join(WAIT)
    lock_c.release()
    rig.close(b)
    rig.close(c)


def check_election(rig, zk):
    p = rig.path("election")
    a, b = rig.client(), rig.client()
    el_a = a.Election(p, "leader-a")
    el_b = b.Election(p, "leader-b")
    a_leads, a_may_go, b_leads = threading.Event(), threading.Event(), threading.Event()
    log = []

    def lead_a():
        log.append("a")
        a_leads.set()
        a_may_go.wait(3 * WAIT)

    def lead_b():
        log.append("b")
        b_leads.set()

    ta, ea = run_thread(lambda: el_a.run(lead_a), "election-a")
    expect(a_leads.wait(WAIT), f"first contender was not elected {ea}")
    tb, eb = run_thread(lambda: el_b.run(lead_b), "election-b")
    deadline = time.monotonic() + WAIT
    while len(el_a.contenders()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    eq(el_a.contenders(), ["leader-a", "leader-b"], "election contenders")
    expect(not b_leads.is_set(), "second contender elected while the first leads")
    a_may_go.set()
    expect(b_leads.wait(WAIT), f"second contender not elected after the first stepped down {eb}")
    ta.join(WAIT)
    tb.join(WAIT)
    eq(log, ["a", "b"], "leadership order")
    rig.close(a)
    rig.close(b)


def check_sync_and_multi_host(rig, zk):
    # Every listed host serves the same tree (one host in standalone; all of an ensemble).
    p = rig.path("hosts")
    zk.create(p, b"seen")
    for host in rig.hosts.split(","):
        c = KazooClient(hosts=host, timeout=10.0, connection_retry={"max_tries": 3})
        c.start(timeout=15)
        try:
            c.sync(p)
            eq(c.get(p)[0], b"seen", f"data read through {host}")
        finally:
            c.stop()
            c.close()


CHECKS = [
    check_session,
    check_create_get_stat,
    check_create2_include_data,
    check_set_versions,
    check_delete_versions,
    check_errors,
    check_children_and_stat,
    check_acl_default,
    check_ephemeral,
    check_session_resume,
    check_sequential,
    check_ephemeral_sequential,
    check_data_watch,
    check_exists_watch,
    check_child_watch,
    check_transaction_commit,
    check_transaction_abort,
    check_lock,
    check_election,
    check_sync_and_multi_host,
]


def main():
    ap = argparse.ArgumentParser(description="ZooKeeper wire checks with kazoo")
    ap.add_argument("--hosts", required=True, help="127.0.0.1:PORT[,127.0.0.1:PORT2,...]")
    ap.add_argument("--root", default=f"/kazoo-check-{uuid.uuid4().hex[:12]}",
                    help="unique prefix; created if missing and removed at the end")
    ap.add_argument("--only", help="comma-separated check names to run (without check_)")
    ap.add_argument("--deadline", type=float, default=120.0, help="abort after this many seconds")
    args = ap.parse_args()
    expect_root = args.root.startswith("/") and args.root != "/"
    if not expect_root:
        print("--root must be an absolute path other than /", file=sys.stderr)
        return 2

    # Never hang: whatever happens, give up after --deadline.
    def watchdog():
        print(f"FAIL deadline: the checks did not finish within {args.deadline}s", flush=True)
        os._exit(1)

    timer = threading.Timer(args.deadline, watchdog)
    timer.daemon = True
    timer.start()

    checks = CHECKS
    if args.only:
        wanted = {f"check_{n}" for n in args.only.split(",")}
        checks = [c for c in CHECKS if c.__name__ in wanted]
    rig = Rig(args.hosts, args.root)
    passed = failed = 0
    started = time.monotonic()
    try:
        zk = rig.client()
    except Exception as e:  # noqa: BLE001
        print(f"FAIL connect: {type(e).__name__}: {e}")
        print("0 passed, 1 failed")
        return 1
    try:
        if zk.exists(rig.root):
            zk.delete(rig.root, recursive=True)
        zk.ensure_path(rig.root)
        for check in checks:
            name = check.__name__[len("check_"):]
            t0 = time.monotonic()
            try:
                check(rig, zk)
            except CheckFailed as e:
                failed += 1
                print(f"FAIL {name}: {e}", flush=True)
            except Exception as e:  # noqa: BLE001
                failed += 1
                tb = traceback.extract_tb(e.__traceback__)
                where = next((f"line {f.lineno}" for f in reversed(tb) if f.filename == __file__), "?")
                print(f"FAIL {name}: {type(e).__name__} at {where}: {e}", flush=True)
            else:
                passed += 1
                print(f"ok   {name} ({time.monotonic() - t0:.2f}s)", flush=True)
    finally:
        for c in list(rig.clients):
            if c is not zk:
                try:
                    rig.close(c)
                except Exception:  # noqa: BLE001
                    pass
        try:
            zk.delete(rig.root, recursive=True)
        except Exception as e:  # noqa: BLE001
            print(f"note: could not remove {rig.root}: {e}")
        rig.close(zk)
    ops = ", ".join(f"{k}={v}" for k, v in sorted(rig.counter.counts.items()))
    print(f"requests sent: {ops}")
    print(f"elapsed: {time.monotonic() - started:.1f}s")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
