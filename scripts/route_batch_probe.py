"""Where the R3 publish cost goes, by where the client sits: a 3-node jetraft cluster, a fresh R3
stream per round, the load (cli/benchlib/jsload, 16 B, `--window` in flight; 1: one at a time
with latency percentiles) connected on purpose to the stream leader's node ("leader") or to a
follower's node ("follower"), and each node's CPU per message from /proc (leader, the client's
node, the other node; for "leader" `other_us` is both followers). `jetraft bench js-pub --r3`
always connects to node 1, wherever the stream leader is, so its runs mix both cases.

    python scripts/route_batch_probe.py --msgs 20000 --window 256 --rounds 3
    python scripts/route_batch_probe.py --cases follower --spy client     # py-spy of that node
    python scripts/route_batch_probe.py --cases follower --spy leader --strace   # syscall counts
    python scripts/route_batch_probe.py --window 1 --msgs 300 --rounds 1 --cases follower --hops
        # one at a time, per-hop times from `strace -ttt` of the client's node and the leader
        # (strace slows every syscall: compare the hops with each other, not with a plain run)
    RB_TREE=/path/to/other/checkout python scripts/route_batch_probe.py   # servers from there

Measurement tool (not a test); servers are stopped by PID at the end.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

TREE = os.environ.get("RB_TREE", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, TREE)
from cli.benchlib.jsload import RawConn, process_cpu_s, reset_stream, wait_publishable, publish_windowed, publish_one_at_a_time
from cli.benchlib.launcher import ServerKind, ServerProcess, free_port
from cli.bench_js import _node_args

STREAM = "BENCHJS"


def switches_and_sys(pid):
    """(voluntary context switches of the event-loop thread, of all threads; system CPU s)."""
    def vol(path):
        with open(path) as f:
            return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
    main = vol(f"/proc/{pid}/status")
    total = sum(vol(f"/proc/{pid}/task/{t}/status") for t in os.listdir(f"/proc/{pid}/task"))
    with open(f"/proc/{pid}/stat") as f:
        stime = int(f.read().rsplit(")", 1)[1].split()[12])
    return main, total, stime / os.sysconf("SC_CLK_TCK")


def leader_of(conn):
    info = conn.api(f"$JS.API.STREAM.INFO.{STREAM}")
    return info["cluster"]["leader"]


def print_hops(client_trace, leader_trace, inbox):
    """Median time of each hop of a one-at-a-time publish through a follower's node, from the
    `strace -ttt` lines naming the request's inbox: client PUB read on the client's node ->
    forwarded RMSG written -> read on the leader -> PubAck RMSG written -> read back -> MSG
    written to the client."""
    import re
    marks = {}
    kinds = [("client", "read", "PUB "), ("client", "write", "RMSG $G benchjs"),
             ("leader", "read", "RMSG $G benchjs"), ("leader", "write", "RMSG $G _INBOX"),
             ("client", "read", "RMSG $G _INBOX"), ("client", "write", "MSG _INBOX")]
    pat = re.compile(r"^(?:\d+\s+)?(\d+\.\d+) (read|write)\(\d+, \"(.*)")
    for tag, path in (("client", client_trace), ("leader", leader_trace)):
        with open(path, errors="replace") as f:
            for line in f:
                m = pat.match(line)
                if not m:
                    continue
                ts, call, data = float(m.group(1)), m.group(2), m.group(3)
                n = re.search(re.escape(inbox) + r"\.(\d+)", data)
                if not n:
                    continue
                for k, (kt, kc, kp) in enumerate(kinds):
                    if kt == tag and kc == call and data.startswith(kp):
                        marks.setdefault(int(n.group(1)), {}).setdefault(k, ts)
    client_state(client_trace, leader_trace)
    names = ["client->route write", "route wire+leader wake", "leader commit", "route wire+client node wake",
             "client node: ack to client"]
    rows = [m for m in marks.values() if len(m) == len(kinds)]
    print(f"hops: {len(rows)} complete messages")
    for k, name in enumerate(names):
        d = sorted((r[k + 1] - r[k]) * 1e6 for r in rows)
        if d:
            print(f"  {name:32s} p50 {d[len(d) // 2]:8.1f} us  p90 {d[int(len(d) * 0.9)]:8.1f} us")


def client_state(client_trace, leader_trace):
    """What the client's node was doing when the leader wrote each PubAck (`epoll_wait`:
    asleep, so the ack costs a wake; `fdatasync`: its own log append, the ack waits for it;
    else busy running Python), and how many of its `epoll_wait` calls found nothing ready
    per message (slept: the next syscall came later than 50 us; strace inflates all times)."""
    def calls(path):
        with open(path, errors="replace") as f:
            rows = [line.split(None, 2) for line in f if "resumed>" not in line]
        return [(float(r[1]), r[2]) for r in rows if len(r) == 3 and r[1][:1].isdigit()]
    node = calls(client_trace)
    spans = {"epoll_wait": [], "fdatasync": []}
    slept = 0
    for (t, call), (t_next, _) in zip(node, node[1:]):
        for name, iv in spans.items():
            if call.startswith(name + "("):
                iv.append((t, t_next))
        if call.startswith("epoll_wait(") and not call.rstrip().endswith(", 0) = 0") and t_next - t > 50e-6:
            slept += 1
    acks = [t for t, call in calls(leader_trace) if call.startswith("write(") and '"RMSG $G _INBOX' in call]
    if not acks:
        return
    counts = {name: sum(any(a <= t <= b for a, b in iv) for t in acks) for name, iv in spans.items()}
    busy = len(acks) - sum(counts.values())
    print(f"client's node when the leader wrote a PubAck ({len(acks)}): in epoll_wait {counts['epoll_wait']}, "
          f"in fdatasync {counts['fdatasync']}, running {busy}; epoll_wait that slept: {slept / len(acks):.2f}/msg")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--msgs", type=int, default=20000)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="follower,leader")
    ap.add_argument("--spy", default="")
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--hops", action="store_true")
    ap.add_argument("--spy-out", default=os.path.join(tempfile.gettempdir(), "route_batch_spy"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="rb-probe-")
    procs = []
    try:
        route_ports = [free_port() for _ in range(3)]
        for i in range(3):
            d = f"{tmp}/n{i}"
            os.makedirs(d)
            p = ServerProcess(kind=ServerKind.JETRAFT, port=free_port(),
                              extra_args=_node_args(f"n{i}", route_ports, i, d), cwd=__import__("pathlib").Path(TREE))
            procs.append(p)
            p.start(ready_timeout_s=30)
        names = [f"n{i}" for i in range(3)]
        results = {c: [] for c in args.cases.split(",")}
        for rnd in range(args.rounds):
            for case in args.cases.split(","):
                with RawConn(procs[0].url) as c0:
                    reset_stream(c0, STREAM, ["benchjs.>"], replicas=3)
                    wait_publishable(c0, b"benchjs.x", b"x" * 16)
                    deadline = time.monotonic() + 30
                    while True:
                        try:
                            leader = leader_of(c0)
                            break
                        except Exception:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.1)  # polling interval while the stream leader is elected
                li = names.index(leader)
                ci = li if case == "leader" else (li + 1) % 3
                oi = 3 - li - ci if case != "leader" else (li + 1) % 3
                with RawConn(procs[ci].url) as conn:
                    wait_publishable(conn, b"benchjs.x", b"x" * 16)
                    pids = [p.proc.pid for p in procs]
                    before = {}
                    spy = None

                    sw_before = {}

                    def on_start():
                        before.update({pid: process_cpu_s(pid) for pid in pids})
                        sw_before.update({pid: switches_and_sys(pid) for pid in pids})
                    if args.spy and rnd == 0:
                        target = {"leader": li, "client": ci, "other": oi}[args.spy]
                        if args.strace:
                            spy = subprocess.Popen(["strace", "-c", "-f", "--seccomp-bpf", "-e", "trace=write,read,sendto,recvfrom,epoll_wait,epoll_ctl,pwrite64,fdatasync,fsync,futex", "-p", str(pids[target]), "-o",
                                                    f"{args.spy_out}-{case}-{args.spy}.strace"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        else:
                            spy = subprocess.Popen(["py-spy", "record", "-p", str(pids[target]), "-r", "1000",
                                                "-f", "raw", "-o", f"{args.spy_out}-{case}-{args.spy}.txt",
                                                "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(1.0)  # let the profiler attach before the clock starts
                    hops = []
                    if args.hops and rnd == 0 and case == "follower":
                        for tag, idx in (("client", ci), ("leader", li)):
                            out = f"{args.spy_out}-hops-{tag}.strace"
                            hops.append((tag, out, subprocess.Popen(
                                ["strace", "-f", "--seccomp-bpf", "-ttt", "-s", "100", "-e", "trace=read,write,epoll_wait,fdatasync,fsync,pwrite64", "-p",
                                 str(pids[idx]), "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
                        time.sleep(1.0)  # let strace attach before the clock starts
                    if args.window == 1:
                        r = publish_one_at_a_time(conn, "benchjs.x", args.msgs, 16, on_start=on_start)
                        print("  latency", {k: round(v, 1) for k, v in r.items() if k.endswith("_us")})
                    else:
                        r = publish_windowed(conn, "benchjs.x", args.msgs, 16, args.window, on_start=on_start)
                    after = {pid: process_cpu_s(pid) for pid in pids}
                    sw = {pid: [(b - a) / args.msgs for a, b in zip(sw_before[pid], switches_and_sys(pid))]
                          for pid in pids}
                    for tag, idx in (("leader", li), ("client", ci), ("other", oi)):
                        if case == "leader" and tag == "client":
                            continue
                        m, t, sys_s = sw[pids[idx]]
                        print(f"  {tag}: loop-thread switches/msg {m:.2f}, all threads {t:.2f}, "
                              f"sys us/msg {sys_s * 1e6:.0f}")
                    if spy is not None:
                        spy.send_signal(2)
                        spy.wait(timeout=30)
                    for _, _, tracer in hops:
                        tracer.send_signal(2)
                        tracer.wait(timeout=30)
                    if hops:
                        print_hops(hops[0][1], hops[1][1], conn.inbox.decode())
                    assert r["ok"], {k: v for k, v in r.items() if k != "seqs"}
                    us = {pid: (after[pid] - before[pid]) * 1e6 / args.msgs for pid in pids}
                    row = {"rate": r["msgs_per_s"], "leader_us": us[pids[li]], "client_node_us": us[pids[ci]],
                           "other_us": us[pids[oi]] if case != "leader" else sum(us.values()) - us[pids[li]],
                           "total_us": sum(us.values())}
                    results[case].append(row)
                    print(case, rnd, {k: round(v, 1) for k, v in row.items()}, flush=True)
        for case, rows in results.items():
            med = {k: sorted(r[k] for r in rows)[len(rows) // 2] for k in rows[0]}
            print("MEDIAN", case, {k: round(v, 1) for k, v in med.items()}, flush=True)
        print("load", os.getloadavg()[0])
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
