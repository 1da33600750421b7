#!/usr/bin/env python3
"""Checks what a drover master started with `--credentials` and every `--authenticate-http-*`
switch turns away, as Mesos would: with the standard library (urllib, http.client) and the
real pymesos (0.3.15) driver.

    python3 tests/mesos/auth_check.py 127.0.0.1:5050 --principal ops --secret s1 \
        --other-principal dev --other-secret s2

  readonly    GET /master/state and /metrics/snapshot without credentials, or with a wrong
              secret: 401 with `WWW-Authenticate: Basic realm="mesos-master-readonly"`; with
              them: 200 and the state. /health and /version stay open.
  readwrite   POST /api/v1 GET_STATE: 401 (realm mesos-master-readwrite), then 200.
  scheduler   POST /api/v1/scheduler SUBSCRIBE without credentials: 401 (realm
              mesos-master-scheduler); as one principal naming another in FrameworkInfo: 403.
  ownership   a framework subscribed as --principal; a KILL for it sent as --other-principal,
              with its stream id: 403; the same KILL as its own principal: 202.
  pymesos     a driver without a principal, and one with a wrong secret, are aborted with
              HTTP 401 and never get `registered`; one with the right secret does.

Each check prints `ok: ...` or `FAIL: ...`; exit code 0 only when every check passed.
"""

import argparse
import base64
import http.client
import json
import sys
import threading
import time

FAILED = []


def check(name, passed, detail=""):
    print("%s: %s%s" % ("ok" if passed else "FAIL", name, " (%s)" % detail if detail else ""))
    sys.stdout.flush()
    if not passed:
        FAILED.append(name)


def basic(principal, secret):
    token = base64.b64encode(("%s:%s" % (principal, secret)).encode()).decode()
    return {"Authorization": "Basic " + token}


def request(master, method, path, body=None, headers=None, stream=False):
    host, port = master.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    all_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    all_headers.update(headers or {})
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers=all_headers)
    response = conn.getresponse()
    if stream:
        return conn, response
    text = response.read().decode(errors="replace")
    conn.close()
    return response.status, response.getheader("WWW-Authenticate"), text


def read_record(response):
    """One RecordIO record of a Mesos event stream."""
    length = b""
    while not length.endswith(b"\n"):
        byte = response.read(1)
        if not byte:
            raise EOFError("the stream ended")
        length += byte
    return json.loads(response.read(int(length)).decode())


def challenged(realm, status, header):
    return status == 401 and header == 'Basic realm="%s"' % realm


def subscribe_call(name, principal):
    info = {"user": "root", "name": name}
    if principal is not None:
        info["principal"] = principal
    return {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}


def pymesos_registers(master, principal, secret, seconds=8.0):
    from pymesos import MesosSchedulerDriver, Scheduler

    registered = threading.Event()

    class Waiter(Scheduler):
        def registered(self, driver, framework_id, master_info):
            registered.set()

        def resourceOffers(self, driver, offers):
            driver.declineOffer([o.id for o in offers])

    framework = {"user": "root", "name": "drover-auth-check"}
    if principal is not None:
        framework["principal"] = principal
    driver = MesosSchedulerDriver(Waiter(), framework, master, use_addict=True,
                                  principal=principal, secret=secret)
    driver.start()
    refused = None
    try:
        got = registered.wait(seconds)
    except RuntimeError as e:
        # pymesos aborts its driver on an HTTP error and raises it in the main thread.
        got, refused = registered.is_set(), str(e)
    try:
        driver.stop()
        driver.join()
    except Exception:  # pylint: disable=broad-except
        pass
    return got, refused


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("master")
    parser.add_argument("--principal", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--other-principal", required=True)
    parser.add_argument("--other-secret", required=True)
    args = parser.parse_args()
    me = basic(args.principal, args.secret)
    other = basic(args.other_principal, args.other_secret)
    wrong = basic(args.principal, args.secret + "x")

    for path in ["/master/state", "/metrics/snapshot"]:
        status, header, _ = request(args.master, "GET", path)
        check("GET %s without credentials is challenged" % path,
              challenged("mesos-master-readonly", status, header), "%s %s" % (status, header))
        status, header, _ = request(args.master, "GET", path, headers=wrong)
        check("GET %s with a wrong secret is challenged" % path,
              challenged("mesos-master-readonly", status, header), "%s %s" % (status, header))
        status, _, text = request(args.master, "GET", path, headers=me)
        check("GET %s with credentials answers" % path, status == 200 and text.startswith("{"),
              "%s %s" % (status, text[:80]))
    for path in ["/health", "/version"]:
        status, _, _ = request(args.master, "GET", path)
        check("GET %s stays open" % path, status == 200, str(status))

    state = {"type": "GET_STATE"}
    status, header, _ = request(args.master, "POST", "/api/v1", state)
    check("operator GET_STATE without credentials is challenged",
          challenged("mesos-master-readwrite", status, header), "%s %s" % (status, header))
    status, _, text = request(args.master, "POST", "/api/v1", state, headers=me)
    check("operator GET_STATE with credentials answers",
          status == 200 and "get_state" in text, "%s %s" % (status, text[:80]))

    status, header, _ = request(args.master, "POST", "/api/v1/scheduler",
                                subscribe_call("anonymous", None))
    check("SUBSCRIBE without credentials is challenged",
          challenged("mesos-master-scheduler", status, header), "%s %s" % (status, header))
    status, _, text = request(args.master, "POST", "/api/v1/scheduler",
                              subscribe_call("impostor", args.other_principal), headers=me)
    check("SUBSCRIBE naming another principal in FrameworkInfo is refused",
          status == 403 and args.other_principal in text, "%s %s" % (status, text))

    conn, response = request(args.master, "POST", "/api/v1/scheduler",
                             subscribe_call("owner", args.principal), headers=me, stream=True)
    try:
        stream_id = response.getheader("Mesos-Stream-Id")
        subscribed = read_record(response) if response.status == 200 else {}
        framework_id = subscribed.get("subscribed", {}).get("framework_id", {}).get("value")
        check("SUBSCRIBE as a principal streams", response.status == 200 and bool(framework_id),
              "%s %s" % (response.status, subscribed))
        kill = {"type": "KILL", "framework_id": {"value": framework_id},
                "kill": {"task_id": {"value": "not-yours"}}}
        headers = dict(other)
        headers["Mesos-Stream-Id"] = stream_id or ""
        status, _, text = request(args.master, "POST", "/api/v1/scheduler", kill, headers=headers)
        check("a KILL for another principal's framework is refused", status == 403,
              "%s %s" % (status, text))
        headers = dict(me)
        headers["Mesos-Stream-Id"] = stream_id or ""
        status, _, text = request(args.master, "POST", "/api/v1/scheduler", kill, headers=headers)
        check("the same KILL from the framework's own principal is taken", status == 202,
              "%s %s" % (status, text))
        teardown = {"type": "TEARDOWN", "framework_id": {"value": framework_id}}
        request(args.master, "POST", "/api/v1/scheduler", teardown, headers=headers)
    finally:
        conn.close()

    for name, principal, secret in [("without a principal", None, None),
                                    ("with a wrong secret", args.principal, args.secret + "x")]:
        got, refused = pymesos_registers(args.master, principal, secret)
        check("pymesos %s is refused (HTTP 401), never registered" % name,
              not got and refused is not None and "401" in refused, repr(refused))
    got, refused = pymesos_registers(args.master, args.principal, args.secret, seconds=30.0)
    check("pymesos with its principal and secret is registered", got and refused is None,
          repr(refused))

    if FAILED:
        print("%d check(s) failed" % len(FAILED))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
