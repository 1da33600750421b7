#!/usr/bin/env python3
"""Runs the real pymesos (0.3.15, PyPI) scheduler driver against drover's Mesos master.

    python3 tests/mesos/pymesos_check.py 127.0.0.1:5050 [--agents 2] [--timeout 60]
    python3 tests/mesos/pymesos_check.py zk://127.0.0.1:2181/drover/mesos
    python3 tests/mesos/pymesos_check.py 127.0.0.1:5050 --principal ops --secret s1

The framework ("drover-pymesos-check") subscribes through the v1 scheduler HTTP API, takes
offers from --agents distinct agents and launches command tasks from them:

  ok-<agent id>  `sleep 1; echo ok`   on each agent  -> TASK_RUNNING, then TASK_FINISHED
  fail           `sleep 1; exit 3`                   -> TASK_FAILED (TASK_RUNNING may come first)
  long           `sleep 1000`                        -> TASK_RUNNING, then killTask -> TASK_KILLED

Unused offers are declined with a short refuse_seconds. Status updates are acknowledged by
pymesos itself (implicit acknowledgements); duplicates (at-least-once delivery) are tolerated.
Each check prints one line, `ok: ...` or `FAIL: ...`, on stdout; pymesos' own log goes to
stderr. The driver is then stopped (which tears the framework down) and the exit code is 0
only when every check passed, 1 otherwise (also on --timeout, default 60 s).
Needs pymesos and its compiled http-parser: see .ci/install-wire-deps.
"""

import argparse
import getpass
import logging
import os
import socket
import sys
import threading
import time

try:
    from pymesos import MesosSchedulerDriver, Scheduler
except ImportError as e:  # pragma: no cover - depends on the machine
    print("FAIL: pymesos is not importable (%s); run .ci/install-wire-deps" % e)
    sys.exit(1)

FRAMEWORK_NAME = "drover-pymesos-check"
TASK_CPUS = 0.1
TASK_MEM = 32.0
# Task ids on the wire carry this run's suffix: like real frameworks, never reuse a task id
# (the same agents serve several runs of this script).
RUN = os.urandom(4).hex()


def wire_id(task_id):
    return "%s.%s" % (task_id, RUN)


def local_id(wire):
    suffix = "." + RUN
    return wire[:-len(suffix)] if wire and wire.endswith(suffix) else wire

NON_TERMINAL = {"TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"}
# Everything else (FINISHED, FAILED, KILLED, LOST, ERROR, DROPPED, GONE, ...) ends a task.


def scalar(resources, name):
    return sum(
        float(r.get("scalar", {}).get("value", 0))
        for r in resources
        if r.get("name") == name and r.get("type", "SCALAR") == "SCALAR"
    )


def take(resources, name, amount):
    """Carves `amount` of scalar resource `name` out of the offer's resources (in place),
    copying the offered resource's other fields (role, allocation_info, reservations...)
    so the task's resources are contained in the offer. Returns the task's resources,
    or None when the offer has not enough."""
    if scalar(resources, name) + 1e-9 < amount:
        return None
    taken = []
    need = amount
    for r in resources:
        if need <= 1e-9:
            break
        if r.get("name") != name or r.get("type", "SCALAR") != "SCALAR":
            continue
        have = float(r.get("scalar", {}).get("value", 0))
        if have <= 1e-9:
            continue
        got = min(have, need)
        piece = {k: v for k, v in r.items() if k != "scalar"}
        piece["type"] = "SCALAR"
        piece["scalar"] = {"value": round(got, 3)}
        taken.append(piece)
        r["scalar"] = {"value": round(have - got, 3)}
        need -= got
    return taken


class Check(object):
    """One line of output: printed once, when it is decided."""

    def __init__(self, name, describe):
        self.name = name
        self.describe = describe
        self.result = None  # None: undecided; True/False once printed

    def ok(self, detail=""):
        self._set(True, detail)

    def fail(self, detail):
        self._set(False, detail)

    def _set(self, passed, detail):
        if self.result is not None:
            return
        self.result = passed
        text = self.describe + (": " + detail if detail else "")
        print("%s: %s" % ("ok" if passed else "FAIL", text), flush=True)


class TaskTrack(object):
    def __init__(self, task_id, command, expect):
        self.task_id = task_id
        self.command = command
        self.expect = expect  # "finished" | "failed" | "killed"
        self.agent = None  # agent id value it was launched on
        self.launched = False
        self.states = []  # distinct states in order of arrival
        self.duplicates = 0
        self.kill_sent_at = None
        self.check = None


class CheckScheduler(Scheduler):
    def __init__(self, agents, refuse_seconds):
        self.lock = threading.RLock()
        self.done = threading.Event()
        self.want_agents = agents
        self.refuse_seconds = refuse_seconds
        self.framework_id = None
        self.agents_seen = []  # agent ids offered, in order
        self.agent_names = []  # "HOSTNAME at ADDRESS" of each, from its first offer
        self.tasks = {}  # task id -> TaskTrack
        self.ok_by_agent = {}  # agent id -> task id of its ok- task
        self.updates = 0
        self.updates_without_uuid = []
        self.fatal = None
        self.extra_failed = []  # checks that failed without a task of their own

        self.subscribed = Check("subscribed", "subscribed")
        self.offers_check = Check(
            "agents", "offers from %d distinct agents" % agents)
        self.tasks["fail"] = TaskTrack("fail", "sleep 1; exit 3", "failed")
        self.tasks["fail"].check = Check(
            "fail", "task fail (`sleep 1; exit 3`) ends TASK_FAILED")
        self.tasks["long"] = TaskTrack("long", "sleep 1000", "killed")
        self.tasks["long"].check = Check(
            "long", "task long (`sleep 1000`) TASK_RUNNING, killTask, TASK_KILLED")
        self.acks = Check(
            "acks", "every status update carried a uuid (acknowledged by pymesos)")

    # ---- helpers -------------------------------------------------------------------------

    def all_checks(self):
        checks = [self.subscribed, self.offers_check]
        for agent in self.agents_seen[:self.want_agents]:
            task_id = self.ok_by_agent.get(agent)
            if task_id:
                checks.append(self.tasks[task_id].check)
        checks += [self.tasks["fail"].check, self.tasks["long"].check, self.acks]
        return checks

    def task_checks_decided(self):
        ok_tasks = [t for t in self.tasks.values() if t.task_id.startswith("ok-")]
        if len(ok_tasks) < self.want_agents:
            return False
        return all(t.check.result is not None for t in self.tasks.values())

    def maybe_done(self):
        if self.task_checks_decided():
            self.done.set()

    def fail_fatal(self, message):
        with self.lock:
            if self.fatal is None:
                self.fatal = message
            self.done.set()

    def make_task(self, track, offer, resources):
        """A TaskInfo (pymesos passes dicts through as protobuf-JSON) for `track`, its
        resources carved out of what is left of `offer`; None when not enough is left."""
        if scalar(resources, "cpus") + 1e-9 < TASK_CPUS or \
                scalar(resources, "mem") + 1e-9 < TASK_MEM:
            return None
        return {
            "task_id": {"value": wire_id(track.task_id)},
            "agent_id": {"value": offer["agent_id"]["value"]},
            "name": "%s %s" % (FRAMEWORK_NAME, track.task_id),
            "resources": take(resources, "cpus", TASK_CPUS) + take(resources, "mem", TASK_MEM),
            "command": {"value": track.command, "shell": True},
        }

    # ---- pymesos callbacks ---------------------------------------------------------------

    def registered(self, driver, frameworkId, masterInfo):
        with self.lock:
            self.framework_id = frameworkId["value"]
            self.subscribed.ok("framework %s, master %s:%s (version %s)" % (
                self.framework_id, masterInfo.get("hostname"),
                masterInfo.get("port"), masterInfo.get("version", "unknown")))

    def reregistered(self, driver, masterInfo):
        print("info: re-subscribed to master %s:%s" % (
            masterInfo.get("hostname"), masterInfo.get("port")), flush=True)

    def disconnected(self, driver):
        logging.getLogger("pymesos_check").info("disconnected from the master")

    def resourceOffers(self, driver, offers):
        filters = {"refuse_seconds": self.refuse_seconds}
        for offer in offers:
            agent = offer["agent_id"]["value"]
            with self.lock:
                if agent not in self.agents_seen:
                    self.agents_seen.append(agent)
                    # Mesos' offer names the agent's host and where it is reached (url).
                    address = (offer.get("url") or {}).get("address") or {}
                    self.agent_names.append("%s at %s" % (
                        offer.get("hostname"), address.get("ip")))
                    if len(self.agents_seen) >= self.want_agents:
                        self.offers_check.ok(", ".join(
                            self.agent_names[:self.want_agents]))
                resources = [dict(r) for r in offer.get("resources", [])]
                to_launch = []
                # An ok- task on each of the first --agents agents that offer.
                if agent in self.agents_seen[:self.want_agents] and \
                        agent not in self.ok_by_agent:
                    task_id = "ok-%s" % agent
                    track = TaskTrack(task_id, "sleep 1; echo ok", "finished")
                    track.check = Check(
                        task_id, "task %s (`sleep 1; echo ok`) TASK_RUNNING then "
                        "TASK_FINISHED on agent %s" % (task_id, agent))
                    task = self.make_task(track, offer, resources)
                    if task is not None:
                        self.tasks[task_id] = track
                        self.ok_by_agent[agent] = task_id
                        to_launch.append((track, task))
                for name in ("fail", "long"):
                    track = self.tasks[name]
                    if track.launched:
                        continue
                    task = self.make_task(track, offer, resources)
                    if task is not None:
                        to_launch.append((track, task))
                for track, task in to_launch:
                    track.launched = True
                    track.agent = agent
            try:
                if to_launch:
                    print("info: launching %s on agent %s (offer %s)" % (
                        ", ".join(t.task_id for t, _ in to_launch), agent,
                        offer["id"]["value"]), flush=True)
                    driver.launchTasks(offer["id"], [task for _, task in to_launch],
                                       filters)
                else:
                    driver.declineOffer(offer["id"], filters)
            except Exception as e:  # a non-2xx answer kills pymesos' IO thread anyway
                self.fail_fatal("ACCEPT/DECLINE of offer %s failed: %s" % (
                    offer["id"].get("value"), e))
                raise

    def offerRescinded(self, driver, offerId):
        pass

    def statusUpdate(self, driver, status):
        task_id = local_id(status.get("task_id", {}).get("value"))
        state = status.get("state")
        kill = False
        with self.lock:
            self.updates += 1
            if "uuid" not in status:
                self.updates_without_uuid.append("%s %s" % (task_id, state))
            track = self.tasks.get(task_id)
            if track is None:
                print("info: update for unknown task %s: %s" % (task_id, state), flush=True)
                return
            if state in track.states:
                track.duplicates += 1
                return
            track.states.append(state)
            detail = " (%s)" % status.get("message") if status.get("message") else ""
            print("info: %s %s%s" % (task_id, state, detail), flush=True)
            update_agent = status.get("agent_id", {}).get("value")
            if update_agent and track.agent and update_agent != track.agent:
                track.check.fail("update %s came from agent %s, launched on %s" % (
                    state, update_agent, track.agent))
            elif state in NON_TERMINAL:
                if state == "TASK_RUNNING" and track.expect == "killed" and \
                        track.kill_sent_at is None:
                    track.kill_sent_at = time.time()
                    kill = True
            else:
                self.decide(track, state)
            self.maybe_done()
        if track.check.result is None and kill:
            print("info: killTask(%s)" % task_id, flush=True)
            try:
                driver.killTask({"value": wire_id(task_id)})
            except Exception as e:
                self.fail_fatal("KILL of %s failed: %s" % (task_id, e))
                raise

    def decide(self, track, state):
        seen = " -> ".join(track.states)
        if track.expect == "finished":
            if state == "TASK_FINISHED" and "TASK_RUNNING" in track.states:
                track.check.ok(seen)
            else:
                track.check.fail("got " + seen)
        elif track.expect == "failed":
            if state == "TASK_FAILED":
                track.check.ok(seen)
            else:
                track.check.fail("got " + seen)
        else:  # killed
            if state == "TASK_KILLED" and track.kill_sent_at is not None:
                track.check.ok(seen)
            else:
                track.check.fail("got " + seen + (
                    "" if track.kill_sent_at else " before any killTask"))

    def slaveLost(self, driver, slaveId):
        print("info: agent lost: %s" % slaveId.get("value"), flush=True)

    def executorLost(self, driver, executorId, slaveId, status):
        print("info: executor %s lost on agent %s (status %s)" % (
            executorId.get("value"), slaveId.get("value"), status), flush=True)

    def frameworkMessage(self, driver, executorId, slaveId, message):
        pass

    def error(self, driver, message):
        self.fail_fatal("ERROR event from the master: %s" % message)

    def processHeartBeat(self, driver):
        pass

    # ---- main-thread upkeep -----------------------------------------------------------------

    def resend_kill(self, driver, every=5.0):
        """Kill is best-effort in Mesos: repeat it while `long` is not yet killed."""
        track = self.tasks["long"]
        with self.lock:
            due = (track.kill_sent_at is not None and track.check.result is None
                   and time.time() - track.kill_sent_at >= every)
            if due:
                track.kill_sent_at = time.time()
        if due:
            print("info: killTask(long) again", flush=True)
            driver.killTask({"value": wire_id("long")})

    def finish(self, timed_out, timeout, master):
        """Decides every check still open; returns True when all passed."""
        with self.lock:
            if self.fatal:
                print("FAIL: %s" % self.fatal, flush=True)
            why = "timed out after %gs" % timeout if timed_out else "stopped early"
            if self.subscribed.result is None:
                self.subscribed.fail("%s without SUBSCRIBED from %s" % (why, master))
            if self.offers_check.result is None:
                self.offers_check.fail("%s: offers came from %d agent(s): %s" % (
                    why, len(self.agents_seen), ", ".join(self.agents_seen) or "none"))
            for n in range(len(self.ok_by_agent), self.want_agents):
                missing = Check("ok-%d" % n, "task ok-<agent> on distinct agent #%d" % (n + 1))
                missing.fail("%s: never launched (offers from %d agent(s))" % (
                    why, len(self.agents_seen)))
                self.extra_failed.append(missing)
            for track in self.tasks.values():
                if track.check.result is None:
                    track.check.fail("%s: %s" % (
                        why, " -> ".join(track.states) if track.states else
                        ("launched on agent %s, no update" % track.agent
                         if track.launched else "never launched")))
            if self.updates_without_uuid:
                self.acks.fail("updates without uuid (never acknowledged): %s" % ", ".join(
                    self.updates_without_uuid))
            elif self.updates == 0:
                self.acks.fail("no status update at all")
            else:
                dup = sum(t.duplicates for t in self.tasks.values())
                self.acks.ok("%d update(s), %d duplicate(s)" % (self.updates, dup))
            return self.fatal is None and not self.extra_failed and \
                all(c.result for c in self.all_checks())


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("master", help="HOST:PORT or zk://h1:p1,h2:p2/path")
    parser.add_argument("--agents", type=int, default=2,
                        help="distinct agents to run an ok- task on (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="overall seconds before giving up (default 60)")
    parser.add_argument("--refuse-seconds", type=float, default=1.0,
                        help="refuse_seconds of declines and accepts (default 1)")
    parser.add_argument("--failover-timeout", type=float, default=30.0,
                        help="FrameworkInfo.failover_timeout (default 30)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="pymesos' log at DEBUG instead of WARNING")
    parser.add_argument("--principal", default=None,
                        help="subscribe as this principal (HTTP Basic, with --secret)")
    parser.add_argument("--secret", default=None, help="the principal's secret")
    args = parser.parse_args(argv)
    if args.agents < 1:
        parser.error("--agents must be at least 1")

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s")
    # pymesos has its own stderr handler: don't print its records twice through the root one.
    pymesos_log = logging.getLogger("pymesos")
    pymesos_log.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    pymesos_log.propagate = False

    try:
        user = getpass.getuser()
    except Exception:
        user = "root"
    framework = {
        "user": user,
        "name": FRAMEWORK_NAME,
        "hostname": socket.gethostname(),
        "failover_timeout": args.failover_timeout,
    }
    if args.principal:
        framework["principal"] = args.principal
    sched = CheckScheduler(args.agents, args.refuse_seconds)
    driver = MesosSchedulerDriver(sched, framework, args.master, use_addict=False,
                                  implicit_acknowledgements=True,
                                  principal=args.principal, secret=args.secret)

    deadline = time.time() + args.timeout
    timed_out = False
    try:
        # With zk:// this connects to ZooKeeper first (kazoo gives up after 15 s).
        driver.start()
        while not sched.done.wait(0.5):
            if time.time() >= deadline:
                timed_out = True
                break
            if driver.aborted:
                sched.fail_fatal("pymesos' driver aborted (see its log on stderr)")
                break
            sched.resend_kill(driver)
    except KeyboardInterrupt:
        sched.fail_fatal("interrupted")
    except BaseException as e:  # pymesos re-raises its IO thread's error in the main thread
        sched.fail_fatal("pymesos failed: %s: %s" % (type(e).__name__, e))

    passed = sched.finish(timed_out, args.timeout, args.master)

    # stop() without failover sends TEARDOWN (when subscribed), which also kills `long`.
    try:
        driver.stop()
        joiner = threading.Thread(target=driver.join, name="join", daemon=True)
        joiner.start()
        # Its IO thread may sit in a reconnect back-off sleep (up to 15 s) it can't leave early.
        joiner.join(5)
        if joiner.is_alive():
            print("info: pymesos' driver did not stop within 5s", flush=True)
    except BaseException as e:
        print("info: stopping the driver: %s: %s" % (type(e).__name__, e), flush=True)

    if passed:
        print("pymesos check: all checks passed", flush=True)
        return 0
    print("pymesos check: FAILED", flush=True)
    return 1


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # pymesos' IO thread is a daemon; leave without waiting on kazoo's threads either.
    os._exit(code)
