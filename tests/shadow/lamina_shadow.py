#!/usr/bin/env python3
"""Lamina under Shadow: generate a network, run it, summarise it (spec §16).

Called by tests/shadow/run.sh; stdlib only. For each scenario it writes
OUT/net.gml (regions, inter-region latency, per-host bandwidth, optional
loss) and OUT/shadow.yaml (relays, clients, transfer servers, measuring
fetchers, directory probes), runs Shadow in OUT, parses what the programs
printed, writes OUT/summary.json (and --json FILE), and prints one last line
of key=value figures.

Scenarios:
  bulk-wan    one pinned 3-hop circuit across three regions (one-way 10, 40,
              80 ms), every host at 100 Mbit/s, one 50 MB transfer; a 50 KiB
              fetch on another circuit through the same relays meanwhile.
  fair-share  two pinned circuits sharing one 100 Mbit/s middle relay (every
              other host 1 Gbit/s), both bulk for the same time.
  network     N relays and M clients over five regions, onionperf-like
              transfers (50 KiB, 1 MiB, 5 MiB) on fresh circuits for T minutes.

Figures are simulated time. Shadow's CPU is infinitely fast: they measure
the network model and the protocol, not CPU cost.
"""

import argparse
import glob
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

RELAY_PORT = 9001
SERVER_PORT = 8080
SOCKS = "127.0.0.1:9050"
POW_BITS = 8
KIB = 1024
MIB = 1024 * 1024

# Five regions; one-way latencies in ms between them (rough public-internet
# figures between US east, US west, Europe, East Asia, South America).
REGIONS = ["us-east", "us-west", "europe", "asia", "south-america"]
REGION_LATENCY = {
    ("us-east", "us-west"): 35,
    ("us-east", "europe"): 45,
    ("us-west", "europe"): 75,
    ("us-east", "asia"): 100,
    ("us-west", "asia"): 60,
    ("europe", "asia"): 120,
    ("us-east", "south-america"): 60,
    ("us-west", "south-america"): 90,
    ("europe", "south-america"): 100,
    ("asia", "south-america"): 160,
}
# Relay bandwidth tiers (Mbit/s) and their share of relays.
RELAY_TIERS = [(10, 0.3), (50, 0.3), (100, 0.3), (1000, 0.1)]


def die(msg):
    sys.stderr.write(f"lamina_shadow: {msg}\n")
    sys.exit(2)


# ---------------------------------------------------------------- topology


class Net:
    """Regions (GML nodes) and hosts (shadow.yaml hosts)."""

    def __init__(self):
        self.nodes = []  # (label, bandwidth Mbit)
        self.edges = []  # (a, b, latency ms, loss)
        self.hosts = {}
        self.next_block = 1

    def node(self, label, mbit=1000):
        self.nodes.append((label, mbit))
        return len(self.nodes) - 1

    def edge(self, a, b, ms, loss=0.0):
        self.edges.append((a, b, ms, loss))

    def address(self):
        """A fresh IPv4 address in its own /16 (11.B.0.1, then 12.B.0.1 ...)."""
        n = self.next_block
        self.next_block += 1
        return f"{11 + n // 250}.{n % 250}.0.1"

    def host(self, name, node, mbit, processes):
        ip = self.address()
        self.hosts[name] = {"node": node, "ip": ip, "mbit": mbit, "processes": processes(ip)}
        return ip

    def gml(self):
        out = ["graph [", "  directed 0"]
        for i, (label, mbit) in enumerate(self.nodes):
            out += ["  node [", f"    id {i}", f'    label "{label}"',
                    f'    host_bandwidth_down "{mbit} Mbit"', f'    host_bandwidth_up "{mbit} Mbit"', "  ]"]
        for a, b, ms, loss in self.edges:
            out += ["  edge [", f"    source {a}", f"    target {b}", f'    latency "{ms} ms"',
                    f"    packet_loss {loss}", "  ]"]
        out.append("]")
        return "\n".join(out) + "\n"

    def yaml(self, args, stop_s):
        config = {
            "general": {"stop_time": f"{stop_s}s", "seed": args.seed, "parallelism": args.parallelism,
                        "progress": False, "model_unblocked_syscall_latency": True},
            # Direct edges only: a circuit's hops take the latencies the
            # scenario names (Shadow would otherwise route around them).
            "network": {"graph": {"type": "gml", "file": {"path": "net.gml"}}, "use_shortest_path": False},
            "hosts": {},
        }
        if not args.stock_buffers:
            # Shadow quirk (shared/tools/shadow/README.md): a zero receive
            # window stalls the sender until its RTO; large fixed buffers
            # avoid it. Stated next to every figure (buffers=...).
            config["experimental"] = {"socket_recv_buffer": 64 * MIB, "socket_recv_autotune": False}
            if os.environ.get("LAMINA_SHADOW_SEND_BUFFERS"):
                config["experimental"].update({"socket_send_buffer": 64 * MIB, "socket_send_autotune": False})
        for name, h in self.hosts.items():
            config["hosts"][name] = {
                "network_node_id": h["node"], "ip_addr": h["ip"],
                "bandwidth_down": f'{h["mbit"]} Mbit', "bandwidth_up": f'{h["mbit"]} Mbit',
                "processes": h["processes"],
            }
        # JSON is YAML: no YAML library needed.
        return json.dumps(config, indent=1) + "\n"


def env(log="info"):
    log = os.environ.get("LAMINA_SHADOW_LOG", log)
    return {"RUST_LOG": log, "NO_COLOR": "1", "TOKIO_WORKER_THREADS": os.environ.get("LAMINA_SHADOW_THREADS", "2")}


def ms(t):
    return f"{int(round(t * 1000))}ms"


class Programs:
    """Command lines of the programs under Shadow."""

    def __init__(self, args):
        self.bin = args.bin
        self.epoch = args.epoch_secs
        self.relay_help = help_text(os.path.join(self.bin, "lamina-relay"))
        self.client_help = help_text(os.path.join(self.bin, "lamina-client"), "proxy")
        # Simulated addresses are 11.x and up (public-looking), so exits need
        # no private-range permission; pass it only where it exists anyway.
        self.relay_extra = [f for f in ("--test-network",) if f in self.relay_help]

    def relay(self, ip, seeds, exit_, mbit, start):
        args = ["--data-dir", "lamina", "--listen", f"{ip}:{RELAY_PORT}", "--pow-bits", str(POW_BITS),
                "--epoch-secs", str(self.epoch), "--bandwidth", str(mbit * 125)] + self.relay_extra
        for s in seeds:
            args += ["--seed", f"{s}:{RELAY_PORT}"]
        if exit_:
            args.append("--exit")
        return {"path": os.path.join(self.bin, "lamina-relay"), "args": args, "environment": env(),
                "start_time": ms(start), "expected_final_state": "running"}

    def proxy(self, seeds, start, pin=None):
        args = ["proxy", "--socks", SOCKS, "--data-dir", "lamina", "--pow-bits", str(POW_BITS),
                "--epoch-secs", str(self.epoch)]
        for s in seeds:
            args += ["--seed", f"{s}:{RELAY_PORT}"]
        if pin:
            if "--pin-path" not in self.client_help:
                die("this lamina-client has no --pin-path; the scenario needs pinned paths")
            args += ["--pin-path", ",".join(f"{p}:{RELAY_PORT}" for p in pin)]
        return {"path": os.path.join(self.bin, "lamina-client"), "args": args,
                "environment": env("info,lamina_client::circmgr=debug"),
                "start_time": ms(start), "expected_final_state": "running"}

    def server(self, ip, start):
        return {"path": os.path.join(self.bin, "lamina-shadow-server"), "args": ["--listen", f"{ip}:{SERVER_PORT}"],
                "environment": env(), "start_time": ms(start), "expected_final_state": "running"}

    def fetch(self, server, start, name, extra):
        args = ["--socks", SOCKS, "--server", f"{server}:{SERVER_PORT}", "--name", name] + extra
        return {"path": os.path.join(self.bin, "lamina-shadow-fetch"), "args": args, "environment": env(),
                "start_time": ms(start)}

    def probe(self, relay_ip, start):
        return {"path": os.path.join(self.bin, "lamina-client"),
                "args": ["dir", "--seed", f"{relay_ip}:{RELAY_PORT}", "--json", "--pow-bits", str(POW_BITS)],
                "environment": env("warn"), "start_time": ms(start)}


def help_text(path, sub=None):
    if not os.access(path, os.X_OK):
        die(f"{path} is missing (build with cargo build --release, or pass --bin DIR)")
    cmd = [path] + ([sub] if sub else []) + ["--help"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout


# ---------------------------------------------------------------- scenarios


def bulk_wan(args, p):
    """Three regions, one pinned circuit guard(B) → middle(C) → exit(A)."""
    net = Net()
    a, b, c = net.node("region-a", 100), net.node("region-b", 100), net.node("region-c", 100)
    for n in (a, b, c):
        net.edge(n, n, 1)
    net.edge(a, b, 10, args.loss)
    net.edge(b, c, 40)
    net.edge(a, c, 80)
    guard = net.host("guard", b, 100, lambda ip: [p.relay(ip, [], False, 100, 1)])
    middle = net.host("middle", c, 100, lambda ip: [p.relay(ip, [guard], False, 100, 2)])
    exit_ = net.host("exit", a, 100, lambda ip: [p.relay(ip, [guard], True, 100, 3)])
    server = net.host("server", a, 100, lambda ip: [p.server(ip, 1)])
    seeds = [guard, middle, exit_]
    start = 3 + 2 * args.epoch_secs
    size = args.size or 50_000_000
    net.host("client", a, 100, lambda ip: [
        p.proxy(seeds, start, pin=[guard, middle, exit_]),
        # Time out before the simulation ends, so a stall still reports.
        p.fetch(server, start, "bulk", ["--sizes", str(size), "--timeout-s", str(int(args.minutes * 60) - 10)]),
    ])
    # A web-like fetch on its own circuit (same pinned relays) while the
    # bulk transfer runs: the delay a bulk download adds to others.
    net.host("web", a, 100, lambda ip: [
        p.proxy(seeds, start, pin=[guard, middle, exit_]),
        p.fetch(server, start + 8, "web", ["--sizes", str(50 * KIB), "--count", "5", "--pause-ms", "1000",
                                           "--isolate"]),
    ])
    one_way = 10 + 40 + 80 + 1
    return net, start + args.minutes * 60, {"rtt_model_ms": 2 * one_way, "size": size}


def fair_share(args, p):
    """Two circuits whose only common hop is one 100 Mbit/s middle relay."""
    net = Net()
    lan_a, lan_b = net.node("lan-a", 1000), net.node("lan-b", 1000)
    net.edge(lan_a, lan_a, 2)
    net.edge(lan_b, lan_b, 2)
    net.edge(lan_a, lan_b, 5, args.loss)
    g1 = net.host("guard1", lan_a, 1000, lambda ip: [p.relay(ip, [], False, 1000, 1)])
    g2 = net.host("guard2", lan_a, 1000, lambda ip: [p.relay(ip, [g1], False, 1000, 2)])
    shared = net.host("shared", lan_a, 100, lambda ip: [p.relay(ip, [g1], False, 100, 2)])
    e1 = net.host("exit1", lan_b, 1000, lambda ip: [p.relay(ip, [g1], True, 1000, 3)])
    e2 = net.host("exit2", lan_b, 1000, lambda ip: [p.relay(ip, [g1], True, 1000, 3)])
    server = net.host("server", lan_b, 1000, lambda ip: [p.server(ip, 1)])
    seeds = [g1, shared, e1]
    start = 3 + 2 * args.epoch_secs
    bulk_s = max(10, int(args.minutes * 60))
    for name, path in (("a", [g1, shared, e1]), ("b", [g2, shared, e2])):
        net.host(f"client-{name}", lan_a, 1000, lambda ip, path=path, name=name: [
            p.proxy(seeds, start, pin=path),
            # Both proxies are ready well before this: the bulk reads overlap.
            p.fetch(server, start + 10, name, ["--bulk-s", str(bulk_s)]),
        ])
    return net, start + 10 + bulk_s + 30, {"bulk_s": bulk_s}


def network(args, p):
    """N relays and M clients over five regions."""
    rng = random.Random(args.seed)
    net = Net()
    ids = {r: net.node(r, 1000) for r in REGIONS}
    for r in REGIONS:
        net.edge(ids[r], ids[r], 2)
    for (x, y), lat in REGION_LATENCY.items():
        net.edge(ids[x], ids[y], lat, args.loss)
    relays = []
    tiers = [t for t, share in RELAY_TIERS for _ in range(int(share * 100))]
    for i in range(args.relays):
        region = REGIONS[i % len(REGIONS)]
        mbit = tiers[rng.randrange(len(tiers))]
        exit_ = i % 4 == 2
        seeds = [relays[0][0]] if relays else []
        if len(relays) >= 2:
            seeds.append(relays[1][0])
        start = 1 + i * 0.05
        ip = net.host(f"relay{i + 1}", ids[region], mbit,
                      lambda ip, seeds=seeds, exit_=exit_, mbit=mbit, start=start: [p.relay(ip, seeds, exit_, mbit, start)])
        relays.append((ip, exit_))
    relays_up = 1 + args.relays * 0.05
    servers = []
    for k in range(args.servers):
        region = REGIONS[k % len(REGIONS)]
        servers.append(net.host(f"server{k + 1}", ids[region], 1000, lambda ip: [p.server(ip, 1)]))
    # Directory probes: a sample of relays, every epoch for the first minute.
    sample = [ip for ip, _ in relays[:: max(1, args.relays // 10)]][:10]
    probe_times = [relays_up + args.epoch_secs * (k + 1) for k in range(max(1, 60 // args.epoch_secs))]
    net.host("probe", ids[REGIONS[0]], 1000, lambda ip: [p.probe(r, t) for t in probe_times for r in sample])
    seeds = [relays[0][0], relays[1][0], relays[2][0]]
    start0 = relays_up + 2 * args.epoch_secs
    end = start0 + args.minutes * 60
    sizes = ",".join(str(s) for s in (50 * KIB, MIB, 50 * KIB, 5 * MIB))
    for j in range(args.clients):
        region = REGIONS[j % len(REGIONS)]
        start = start0 + j * 0.5
        server = servers[j % len(servers)]
        net.host(f"client{j + 1}", ids[region], 100, lambda ip, start=start, server=server, j=j: [
            p.proxy(seeds, start),
            p.fetch(server, start, f"c{j + 1}", ["--sizes", sizes, "--until-s", str(int(end - start)),
                                                 "--pause-ms", "5000", "--isolate", "--timeout-s", "120"]),
        ])
    return net, int(end + 150), {"probe_times": probe_times, "probed": len(sample)}


SCENARIOS = {"bulk-wan": bulk_wan, "fair-share": fair_share, "network": network}


# ---------------------------------------------------------------- results

TRANSFER = re.compile(r"^transfer (.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d(?:\.\d+)?)Z")
BUILT = re.compile(r"circuit built.*took_ms=([0-9.]+)")


def kv(line):
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def sim_seconds(line):
    """Seconds since the simulated epoch (2000-01-01T00:00:00Z) of a log line."""
    m = STAMP.match(line)
    if not m:
        return None
    day = int(m.group(3)) - 1
    return day * 86400 + int(m.group(4)) * 3600 + int(m.group(5)) * 60 + float(m.group(6))


def files(out, host, prefix, ext):
    """A host's output files of one program, in process (pid) order."""
    found = glob.glob(os.path.join(out, "shadow.data", "hosts", host, f"{prefix}.*.{ext}"))

    def pid(path):
        digits = os.path.basename(path)[len(prefix) + 1:].split(".")[0]
        return int(digits) if digits.isdigit() else 0

    return sorted(found, key=pid)


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def transfers(out, host):
    rows = []
    for path in files(out, host, "lamina-shadow-fetch", "stdout"):
        for line in read(path).splitlines():
            m = TRANSFER.match(line)
            if m:
                rows.append(kv(m.group(1)))
    return rows


def client_log(out, host):
    """(bootstrap seconds after start, build times in ms) from a proxy's log."""
    ready, first, builds = None, None, []
    for path in files(out, host, "lamina-client", "stderr"):
        for line in ANSI.sub("", read(path)).splitlines():
            t = sim_seconds(line)
            if first is None and t is not None:
                first = t
            if "Bootstrapped 100%" in line and ready is None:
                ready = t
            m = BUILT.search(line)
            if m:
                builds.append(float(m.group(1)))
    return ready, builds


def num(row, key):
    try:
        return float(row.get(key, "-"))
    except ValueError:
        return None


def pct(values, q):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def summarise_bulk_wan(out, info, args):
    rows = transfers(out, "client")
    bulk = rows[0] if rows else {}
    ok = bulk.get("ok") == "1"
    ttlb, socks = num(bulk, "ttlb_ms"), num(bulk, "socks_ms")
    goodput = None
    if ok and ttlb and socks is not None:
        goodput = int(bulk["bytes"]) * 8 / ((ttlb - socks) / 1000) / 1e6
    web = transfers(out, "web")
    _, builds = client_log(out, "client")
    # The web client opens its streams on ready circuits: its SOCKS time is
    # one circuit round trip plus the exit's TCP connect (1 ms hops).
    web_socks = pct([num(r, "socks_ms") for r in web], 0.5)
    after_open = [num(r, "ttfb_ms") - num(r, "socks_ms") for r in web if num(r, "ttfb_ms") and num(r, "socks_ms")]
    return {
        "scenario": "bulk-wan", "goodput_mbit": fmt(goodput), "bottleneck_mbit": 100,
        "circuit_rtt_ms": fmt(web_socks, 0), "rtt_model_ms": info["rtt_model_ms"], "ok": int(ok),
        "bulk_socks_ms": fmt(socks, 0), "web_first_byte_after_open_ms_max": fmt(pct(after_open, 1.0), 0),
        "bytes": bulk.get("bytes", "0"), "ttlb_s": fmt(ttlb / 1000 if ttlb else None, 2),
        "max_gap_ms": bulk.get("max_gap_ms", "-"), "build_ms": fmt(builds[0] if builds else None, 0),
        "web_ok": sum(r.get("ok") == "1" for r in web), "web_ttfb_ms_p50": fmt(pct([num(r, "ttfb_ms") for r in web], 0.5), 0),
        "web_ttfb_ms_max": fmt(pct([num(r, "ttfb_ms") for r in web], 1.0), 0), "loss": args.loss,
    }


def summarise_fair_share(out, info, args):
    got = {}
    gaps = {}
    for name in ("a", "b"):
        rows = transfers(out, f"client-{name}")
        got[name] = int(rows[0]["bytes"]) if rows else 0
        gaps[name] = rows[0].get("max_gap_ms", "-") if rows else "-"
    total = got["a"] + got["b"]
    share = (lambda x: fmt(x / total, 3)) if total else (lambda x: "-")
    return {
        "scenario": "fair-share", "share_a": share(got["a"]), "share_b": share(got["b"]),
        "total_mbit": fmt(total * 8 / info["bulk_s"] / 1e6), "shared_mbit": 100,
        "max_gap_ms_a": gaps["a"], "max_gap_ms_b": gaps["b"], "loss": args.loss,
    }


def directory_convergence(out, info, args):
    """Per probe time: how many probed relays serve the full directory with
    the majority root."""
    outputs = files(out, "probe", "lamina-client", "stdout")
    per_round = info["probed"]
    converged_at, last = None, None
    for k, t in enumerate(info["probe_times"]):
        roots = []
        for path in outputs[k * per_round:(k + 1) * per_round]:
            try:
                d = json.loads(read(path))
                roots.append((d["root"], d["count"]))
            except (ValueError, KeyError):
                roots.append(None)
        full = [r for r in roots if r and r[1] == args.relays]
        agree = max((full.count(r) for r in set(full)), default=0)
        last = (agree, len(roots))
        if converged_at is None and agree == len(roots) and roots:
            converged_at = t
    return converged_at, last


def summarise_network(out, info, args):
    rows, boots, builds, booted = [], [], [], 0
    for j in range(args.clients):
        host = f"client{j + 1}"
        rows += transfers(out, host)
        ready, b = client_log(out, host)
        builds += b
        if ready is not None:
            booted += 1
            start = 1 + args.relays * 0.05 + 2 * args.epoch_secs + j * 0.5
            boots.append(ready - start)
    ok = [r for r in rows if r.get("ok") == "1"]
    by_size = lambda size: [num(r, "ttlb_ms") / 1000 for r in ok if r.get("size") == str(size)]
    converged_at, last = directory_convergence(out, info, args)
    relays_up = 1 + args.relays * 0.05
    return {
        "scenario": "network", "relays": args.relays, "clients": args.clients, "transfers": len(rows),
        "ok": len(ok), "ttfb_ms_p50": fmt(pct([num(r, "ttfb_ms") for r in ok], 0.5), 0),
        "ttlb_50kib_s_p50": fmt(pct(by_size(50 * KIB), 0.5), 2), "ttlb_1mib_s_p50": fmt(pct(by_size(MIB), 0.5), 2),
        "ttlb_5mib_s_p50": fmt(pct(by_size(5 * MIB), 0.5), 2), "build_ms_p50": fmt(pct(builds, 0.5), 0),
        "build_ms_p90": fmt(pct(builds, 0.9), 0), "builds": len(builds), "bootstrapped": booted,
        "bootstrap_s_p50": fmt(pct(boots, 0.5), 2), "bootstrap_s_max": fmt(pct(boots, 1.0), 2),
        "dir_converged_s": fmt(converged_at - relays_up if converged_at else None, 0),
        "dir_agree_last": f"{last[0]}/{last[1]}" if last else "-", "loss": args.loss,
    }


SUMMARIES = {"bulk-wan": summarise_bulk_wan, "fair-share": summarise_fair_share, "network": summarise_network}


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--relays", type=int, default=20, help="network: relays (default 20)")
    ap.add_argument("--clients", type=int, default=5, help="network: clients (default 5)")
    ap.add_argument("--servers", type=int, default=2, help="network: transfer servers (default 2)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="network: minutes of transfers (default 2); fair-share: bulk time (default 1); "
                         "bulk-wan: simulated minutes allowed (default 5)")
    ap.add_argument("--loss", type=float, default=0.0,
                    help="packet loss on inter-region links (bulk-wan: client-guard link; fair-share: the lan-a/lan-b link)")
    ap.add_argument("--size", type=int, default=None, help="bulk-wan: bytes (default 50,000,000)")
    ap.add_argument("--epoch-secs", type=int, default=10, help="directory epoch in the simulation (default 10)")
    ap.add_argument("--seed", type=int, default=1, help="Shadow's and the generator's seed")
    ap.add_argument("--parallelism", type=int, default=1, help="Shadow worker threads (default 1: shared machine)")
    ap.add_argument("--stock-buffers", action="store_true",
                    help="keep Shadow's autotuned receive buffers (stalls after zero windows, see README)")
    ap.add_argument("--json", metavar="FILE", help="also write the summary here")
    ap.add_argument("--out", metavar="DIR", help="working directory (default tests/shadow/out/SCENARIO)")
    ap.add_argument("--bin", required=True, metavar="DIR", help="folder with the Lamina binaries")
    ap.add_argument("--shadow", required=True, metavar="PATH", help="the shadow binary")
    ap.add_argument("--generate-only", action="store_true", help="write the configuration, do not run")
    args = ap.parse_args()
    if args.minutes is None:
        args.minutes = {"network": 2, "fair-share": 1, "bulk-wan": 5}[args.scenario]
    if args.scenario == "network" and args.relays < 3:
        die("--relays must be at least 3")
    args.bin = os.path.abspath(args.bin)
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.abspath(args.out or os.path.join(here, "out", args.scenario))
    programs = Programs(args)
    net, stop_s, info = SCENARIOS[args.scenario](args, programs)
    if os.path.exists(os.path.join(out, "shadow.data")):
        shutil.rmtree(os.path.join(out, "shadow.data"))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "net.gml"), "w") as f:
        f.write(net.gml())
    with open(os.path.join(out, "shadow.yaml"), "w") as f:
        f.write(net.yaml(args, int(stop_s)))
    if args.generate_only:
        print(f"wrote {out}/net.gml and {out}/shadow.yaml ({len(net.hosts)} hosts, stop {int(stop_s)} s)")
        return
    began = time.monotonic()
    with open(os.path.join(out, "shadow.log"), "w") as log:
        rc = subprocess.run(["nice", "-n", "10", args.shadow, "shadow.yaml"], cwd=out, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - began
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = SUMMARIES[args.scenario](out, info, args)
    summary.update({"shadow_rc": rc, "wall_s": fmt(wall), "peak_rss_mib": fmt(peak_mib, 0), "sim_s": int(stop_s),
                    "buffers": "stock" if args.stock_buffers else "fixed64m"})
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    print(f"results in {out} (shadow exit status {rc}; logs in shadow.log and shadow.data/hosts/*/)")
    print(" ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
