"""Where the R3 publish cost goes, by where the client sits: a 3-node jetraft cluster, a fresh R3
stream per round, the load (cli/benchlib/jsload, 16 B, `--window` in flight; 1: one at a time
with latency percentiles) connected on purpose to the stream leader's node ("leader") or to a
follower's node ("follower"), and each node's CPU per message from /proc (leader, the client's
node, the other node; for "leader" `other_us` is both followers). `jetraft bench js-pub --r3`
always connects to node 1, wherever the stream leader is, so its runs mix both cases.

    python scripts/route_batch_probe.py --msgs 20000 --window 256 --rounds 3
    python scripts/route_batch_probe.py --cases follower --spy client     # py-spy of that node
    python scripts/route_batch_probe.py --cases follower --spy leader --strace   # syscall counts
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


def leader_of(conn):
    info = conn.api(f"$JS.API.STREAM.INFO.{STREAM}")
    return info["cluster"]["leader"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--msgs", type=int, default=20000)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="follower,leader")
    ap.add_argument("--spy", default="")
    ap.add_argument("--strace", action="store_true")
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

                    def on_start():
                        before.update({pid: process_cpu_s(pid) for pid in pids})
                    if args.spy and rnd == 0:
                        target = {"leader": li, "client": ci, "other": oi}[args.spy]
                        if args.strace:
                            spy = subprocess.Popen(["strace", "-c", "-f", "--seccomp-bpf", "-e", "trace=write,read,sendto,recvfrom,epoll_wait,pwrite64", "-p", str(pids[target]), "-o",
                                                    f"{args.spy_out}-{case}-{args.spy}.strace"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        else:
                            spy = subprocess.Popen(["py-spy", "record", "-p", str(pids[target]), "-r", "1000",
                                                "-f", "raw", "-o", f"{args.spy_out}-{case}-{args.spy}.txt",
                                                "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(1.0)  # let the profiler attach before the clock starts
                    if args.window == 1:
                        r = publish_one_at_a_time(conn, "benchjs.x", args.msgs, 16, on_start=on_start)
                        print("  latency", {k: round(v, 1) for k, v in r.items() if k.endswith("_us")})
                    else:
                        r = publish_windowed(conn, "benchjs.x", args.msgs, 16, args.window, on_start=on_start)
                    after = {pid: process_cpu_s(pid) for pid in pids}
                    if spy is not None:
                        spy.send_signal(2)
                        spy.wait(timeout=30)
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
