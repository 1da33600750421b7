#!/usr/bin/env python3
"""Drives a drover scheduler started with `--http-credentials` (Marathon's `--http_credentials`)
with the real `marathon` client (PyPI, 0.13.0), with and without `username`/`password`.

    python3 tests/marathon/auth_check.py http://LEADER:PORT http://FOLLOWER:PORT \
        --username ops --password s1 [--realm Mesosphere] [--timeout 120]

  without     get_info, list_apps and create_app raise MarathonHttpError 401 (the answer
              carries `WWW-Authenticate: Basic realm="<realm>"`); a wrong password too; ping() answers
              (`/ping` stays open, as in Marathon)
  with        ping, get_info (names the leader), list_apps, create_app /auth-check/sleeper (1
              instance) -> its task TASK_RUNNING (the scheduler, itself authenticated to the
              master, launched it), list_tasks, get_app through the follower (which forwards the
              caller's credentials to the leader), and through the follower without them: 401;
              delete_app -> no app left

Each step prints `ok: ...` or `FAIL: ...`; exit code 0 only when every step passed.
"""

import argparse
import sys
import time

import requests
from marathon import MarathonApp, MarathonClient
from marathon.exceptions import MarathonHttpError

APP = "/auth-check/sleeper"
FAILED = []


def check(name, passed, detail=""):
    print("%s: %s%s" % ("ok" if passed else "FAIL", name, " (%s)" % detail if detail else ""))
    sys.stdout.flush()
    if not passed:
        FAILED.append(name)


def refused(call):
    """(whether `call` raised MarathonHttpError 401, detail)."""
    try:
        result = call()
    except MarathonHttpError as e:
        return e.status_code == 401, "%s %s" % (e.status_code, e.error_message)
    return False, "answered: %r" % (result,)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("leader")
    parser.add_argument("follower")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--realm", default="Mesosphere")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    anonymous = MarathonClient(args.leader)
    wrong = MarathonClient(args.leader, username=args.username, password=args.password + "x")
    client = MarathonClient(args.leader, username=args.username, password=args.password)
    via_follower = MarathonClient(args.follower, username=args.username, password=args.password)
    follower_anonymous = MarathonClient(args.follower)
    app = MarathonApp(cmd="sleep 1000", cpus=0.1, mem=32, instances=1)

    for name, call in [("get_info", anonymous.get_info), ("list_apps", anonymous.list_apps),
                       ("create_app", lambda: anonymous.create_app(APP, app))]:
        passed, detail = refused(call)
        check("%s without credentials gets 401" % name, passed, detail)
    passed, detail = refused(wrong.get_info)
    check("get_info with a wrong password gets 401", passed, detail)
    # The client keeps no headers of an error: the challenge is read with requests.
    answer = requests.get(args.leader + "/v2/apps", timeout=10)
    challenge = answer.headers.get("WWW-Authenticate")
    check("the 401 names the realm", answer.status_code == 401
          and challenge == 'Basic realm="%s"' % args.realm, "%s %s" % (answer.status_code, challenge))
    try:
        pong = anonymous.ping()
        check("ping without credentials answers", "pong" in str(pong), repr(pong))
    except Exception as e:  # pylint: disable=broad-except
        check("ping without credentials answers", False, repr(e))

    try:
        check("ping with credentials answers", "pong" in str(client.ping()))
        info = client.get_info()
        check("get_info with credentials names the leader", bool(info.leader), repr(info.leader))
        check("list_apps with credentials", isinstance(client.list_apps(), list))
        client.create_app(APP, app)
        deadline = time.time() + args.timeout
        running = []
        while time.time() < deadline:
            running = [t for t in client.list_tasks(app_id=APP)
                       if t.state == "TASK_RUNNING"]
            if running:
                break
            time.sleep(1)
        check("the app's task runs (launched through the authenticated framework)",
              bool(running), "%d running" % len(running))
        got = via_follower.get_app(APP)
        check("get_app through the follower with the caller's credentials",
              got.id == APP and got.instances == 1, repr(got.id))
        passed, detail = refused(lambda: follower_anonymous.get_app(APP))
        check("get_app through the follower without credentials gets 401", passed, detail)
        events = requests.get(args.leader + "/v2/events", stream=True, timeout=10,
                              headers={"Accept": "text/event-stream"})
        check("the event stream without credentials gets 401", events.status_code == 401,
              str(events.status_code))
        events.close()
    finally:
        try:
            client.delete_app(APP, force=True)
        except Exception:  # pylint: disable=broad-except
            pass
    deadline = time.time() + 60
    left = True
    while time.time() < deadline:
        left = any(a.id == APP for a in client.list_apps())
        if not left:
            break
        time.sleep(1)
    check("delete_app with credentials removes the app", not left)

    if FAILED:
        print("%d check(s) failed" % len(FAILED))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
