#!/usr/bin/env python3
"""One ACL script for kazoo (PyPI 2.x) against any ZooKeeper-protocol ensemble; it prints what
each step got, one line each, so that runs against drover coord and real ZooKeeper 3.8 can be
compared line for line.

    python3 tests/zk/acl_check.py --hosts 127.0.0.1:2181 --root /acl-check-1234

Three clients: `alice` (auth_data digest alice:pw), `bob` (digest bob:pw), `anon` (no auth).
Steps: a node only alice may touch (make_digest_acl), read / exists / getACL / set / create below
by each client; a node anyone reads and bob writes; setACL with a wrong and a right aversion;
the `auth` scheme (expanded to the creator's digest; refused without one); invalid ACLs; an `ip`
ACL for 127.0.0.1; add_auth on a running client; a transaction bob may not finish; an auth with an
unknown scheme. Each line is `<step>: <outcome>` where the outcome is `ok ...` or the kazoo
exception's class name. The last line is `done`.
"""

import argparse
import sys

from kazoo.client import KazooClient
from kazoo.security import make_acl, make_digest_acl


def acls_text(acls):
    return ",".join(sorted("%d:%s:%s" % (a.perms, a.id.scheme, a.id.id) for a in acls))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    root = args.root

    def client(auth=None):
        c = KazooClient(hosts=args.hosts, auth_data=auth, timeout=15)
        c.start(timeout=30)
        return c

    def step(name, call, show=lambda r: ""):
        try:
            result = call()
            text = show(result)
            print("%s: ok%s" % (name, (" " + text) if text else ""))
        except Exception as e:  # pylint: disable=broad-except
            print("%s: %s" % (name, type(e).__name__))
        sys.stdout.flush()

    alice = client([("digest", "alice:pw")])
    bob = client([("digest", "bob:pw")])
    anon = client()
    secret, shared, mine = root + "/secret", root + "/shared", root + "/mine"
    local, later = root + "/local", root + "/later"
    try:
        step("alice creates the root", lambda: alice.create(root, b"r"))
        step("alice creates a node only she may use",
             lambda: alice.create(secret, b"s", acl=[make_digest_acl("alice", "pw", all=True)]))
        for who, c in [("anon", anon), ("bob", bob), ("alice", alice)]:
            step("%s reads it" % who, lambda c=c: c.get(secret), lambda r: repr(r[0]))
            step("%s asks whether it exists" % who, lambda c=c: c.exists(secret) is not None,
                 repr)
            step("%s reads its ACL" % who, lambda c=c: c.get_acls(secret),
                 lambda r: "%s aversion=%d" % (acls_text(r[0]), r[1].aversion))
            step("%s writes it" % who, lambda c=c: c.set(secret, b"w"),
                 lambda r: "version=%d" % r.version)
            step("%s creates below it" % who, lambda c=c: c.create(secret + "/c-" + who),
                 lambda r: repr(r.replace(root, "<root>")))
            # The parent's ACL decides before the child's existence does.
            step("%s deletes a child below it that does not exist" % who,
                 lambda c=c: c.delete(secret + "/none"))
        step("alice creates a node anyone reads and bob writes", lambda: alice.create(
            shared, b"x", acl=[make_acl("world", "anyone", read=True),
                               make_digest_acl("bob", "pw", write=True)]))
        step("anon reads it", lambda: anon.get(shared), lambda r: repr(r[0]))
        step("anon writes it", lambda: anon.set(shared, b"a"))
        step("bob writes it", lambda: bob.set(shared, b"b"), lambda r: "version=%d" % r.version)
        step("bob creates below it", lambda: bob.create(shared + "/c"))
        step("bob deletes it (the root lets anyone delete)", lambda: bob.delete(shared))
        step("alice sets the ACL with a wrong aversion", lambda: alice.set_acls(
            secret, [make_acl("world", "anyone", all=True)], version=7))
        step("bob sets the ACL", lambda: bob.set_acls(
            secret, [make_acl("world", "anyone", all=True)], version=0))
        step("alice sets the ACL with its aversion", lambda: alice.set_acls(
            secret, [make_acl("world", "anyone", all=True)], version=0),
             lambda r: "aversion=%d" % r.aversion)
        step("anon reads it now", lambda: anon.get(secret), lambda r: repr(r[0]))
        step("alice creates with the auth scheme",
             lambda: alice.create(mine, b"m", acl=[make_acl("auth", "", all=True)]))
        step("its ACL is alice's digest", lambda: alice.get_acls(mine),
             lambda r: acls_text(r[0]))
        step("anon creates with the auth scheme",
             lambda: anon.create(root + "/anon-auth", acl=[make_acl("auth", "", all=True)]))
        step("a world ACL for someone", lambda: alice.create(
            root + "/bad1", acl=[make_acl("world", "someone", all=True)]))
        step("an ip ACL that is no address", lambda: alice.create(
            root + "/bad2", acl=[make_acl("ip", "300.1.1.1", all=True)]))
        step("a digest ACL without a hash", lambda: alice.create(
            root + "/bad3", acl=[make_acl("digest", "alice", all=True)]))
        step("an unknown scheme", lambda: alice.create(
            root + "/bad4", acl=[make_acl("kerberos", "alice", all=True)]))
        step("an ip ACL for 127.0.0.1", lambda: alice.create(
            local, b"l", acl=[make_acl("ip", "127.0.0.1", all=True)]))
        step("anon on 127.0.0.1 reads it", lambda: anon.get(local), lambda r: repr(r[0]))
        step("an ip ACL for another network", lambda: alice.create(
            later, b"n", acl=[make_acl("ip", "10.0.0.0/8", all=True)]))
        step("anon reads that", lambda: anon.get(later))
        step("anon reads alice's auth node", lambda: anon.get(mine))
        step("anon adds alice's digest", lambda: anon.add_auth("digest", "alice:pw"))
        step("anon reads alice's auth node now", lambda: anon.get(mine), lambda r: repr(r[0]))

        def transaction():
            t = bob.transaction()
            t.create(root + "/t1", b"t")
            t.set_data(mine, b"z")
            return t.commit()

        step("bob's transaction touching alice's node", transaction,
             lambda r: ",".join(type(x).__name__ if isinstance(x, Exception) else "ok"
                                for x in r))
        step("its create was rolled back", lambda: alice.exists(root + "/t1") is None, repr)
        # The server's superDigest is super:test's: that digest passes every ACL.
        root_user, impostor = client([("digest", "super:test")]), client([("digest", "super:x")])
        step("super reads alice's node", lambda: root_user.get(mine), lambda r: repr(r[0]))
        step("super reads its ACL", lambda: root_user.get_acls(mine),
             lambda r: acls_text(r[0]))
        step("super writes it", lambda: root_user.set(mine, b"s"),
             lambda r: "version=%d" % r.version)
        step("a wrong super password reads alice's node", lambda: impostor.get(mine),
             lambda r: repr(r[0]))
        for c in (root_user, impostor):
            c.stop()
            c.close()
        stranger = client()
        step("a client authenticates with an unknown scheme",
             lambda: stranger.add_auth("kerberos", "alice"))
        try:
            stranger.stop()
            stranger.close()
        except Exception:  # pylint: disable=broad-except
            pass
    finally:
        for path in [secret + "/c-alice", secret, mine, local, later, root]:
            try:
                alice.delete(path)
            except Exception:  # pylint: disable=broad-except
                pass
        for c in (alice, bob, anon):
            try:
                c.stop()
                c.close()
            except Exception:  # pylint: disable=broad-except
                pass
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
