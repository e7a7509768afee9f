#!/usr/bin/env python3
"""Helpers of the archive tier's benchmarks (benches/tier/*.sh): they read
the nodes' HTTP documents (`/v1/cluster`, `/v1/stats`, `/metrics`), wait for
states, and take the time of what the scripts measure. Every wait has a
timeout; every subcommand prints what it measured on stdout (one JSON
document, or words on stderr when it gives up, with exit status 1).

Members are given as `ID=HTTP=GRPC` (node id, HTTP address, gRPC address).
The follower's shard `s` is archived by the tier's group
`owner_of(follower_id, s, groups)`, the same mix as
`replication::leader::owner_of` (its test
`ownership_matches_the_tier_benches_copy` pins a few values)."""
import argparse
import json
import os
import re
import signal
import sys
import time
import urllib.request


def owner_of(follower_id, shard, cores):
    key = ((follower_id << 32) | shard) * 0x9E3779B97F4A7C15 % (1 << 64)
    return (key >> 32) % max(cores, 1)


def get(addr, path, timeout=2.0):
    """The body of GET http://addr/path, or None when the node does not answer."""
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as response:
            return response.read()
    except Exception:
        return None


def get_json(addr, path, timeout=2.0):
    body = get(addr, path, timeout)
    try:
        return json.loads(body) if body is not None else None
    except ValueError:
        return None


def parse_members(text):
    members = {}
    for item in text.split(","):
        node_id, http, grpc = item.split("=")
        members[int(node_id)] = {"http": http, "grpc": grpc}
    return members


def cluster_views(members, ids=None):
    """node id -> its /v1/cluster document (None when it does not answer)."""
    return {node: get_json(members[node]["http"], "/v1/cluster") for node in (ids or sorted(members))}


def groups_of(view):
    return {g["group"]: g for g in (view or {}).get("groups", [])}


def leaders(members):
    """group -> (leader id, term), by majority of the answering members' views."""
    seen = {}
    for view in cluster_views(members).values():
        for group, g in groups_of(view).items():
            if g["leader"]:
                best = seen.get(group)
                if best is None or g["term"] > best[1]:
                    seen[group] = (g["leader"], g["term"])
    return seen


def follower_shards(stats):
    return {s["shard"]: s for s in (stats or {}).get("shards", [])}


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def cmd_leaders(args):
    members = parse_members(args.members)
    print(json.dumps({str(g): {"leader": l, "term": t} for g, (l, t) in sorted(leaders(members).items())}))


def cmd_pick(args):
    """Prints the member leading the most groups (--fewest: the fewest),
    ties to the lowest id, and the groups it leads."""
    members = parse_members(args.members)
    led = {node: [] for node in members}
    for group, (leader, _) in sorted(leaders(members).items()):
        led.setdefault(leader, []).append(group)
    key = (lambda node: (len(led[node]), -node)) if not args.fewest else (lambda node: (-len(led[node]), -node))
    node = max(members, key=key)
    print(node, ",".join(map(str, led[node])) or "none")
    return 0


def settled_state(members, follower, exact):
    """(settled?, description) of the tier (and the follower's sessions)."""
    views = cluster_views(members)
    down = [node for node, view in views.items() if view is None]
    if down:
        return False, f"members not answering: {down}"
    groups = sorted(groups_of(next(iter(views.values()))))
    if not groups:
        return False, "no groups reported"
    why = []
    for group in groups:
        leads = {groups_of(view)[group]["leader"] for view in views.values()}
        if len(leads) != 1 or 0 in leads:
            why.append(f"group {group}: leaders seen {sorted(leads)}")
            continue
        leader = leads.pop()
        leader_applied = groups_of(views[leader])[group]["applied"]
        applied = {node: groups_of(view)[group]["applied"] for node, view in views.items()}
        behind = {node: a for node, a in applied.items() if (a != leader_applied if exact else a < leader_applied)}
        if behind:
            why.append(f"group {group}: leader {leader} applied {leader_applied}, behind {behind}")
            continue
        if follower:
            stats = get_json(follower["http"], "/v1/stats")
            for shard, s in follower_shards(stats).items():
                if owner_of(follower["id"], shard, len(groups)) != group:
                    continue
                r = s.get("replication") or {}
                if not r.get("connected") or r.get("leader_addr") != members[leader]["grpc"]:
                    why.append(f"group {group}: follower shard {shard} not yet connected to node {leader}")
    return not why, "; ".join(why)


def cmd_wait_settled(args):
    """Waits until every group has one leader all members agree on, every
    member has applied at least what the leader had applied (the members
    are read one after the other in one pass; --exact: the same index, for
    an idle tier), and, with --follower, each follower shard's session is up
    with its group's leader. Prints the seconds since --since (a
    `time.time()` stamp; default: the call)."""
    members = parse_members(args.members)
    follower = {"http": args.follower, "id": args.follower_id} if args.follower else None
    start = args.since if args.since is not None else time.time()
    deadline = time.time() + args.timeout
    while True:
        ok, why = settled_state(members, follower, args.exact)
        if ok:
            print(json.dumps({"seconds": round(time.time() - start, 3)}))
            return 0
        if time.time() > deadline:
            print(f"not settled after {args.timeout} s: {why}", file=sys.stderr)
            return 1
        time.sleep(0.1)


def cmd_failover(args):
    """Times the failover after member `--dead` was SIGKILLed at `--since`
    (a `time.time()` stamp taken just before the kill; the script kills and
    reaps, so this starts polling some tens of ms later, long before any
    election can end). For each group the dead member led (`--before`: the
    `leaders` document read before the kill): (a) the election: the first
    poll in which a surviving member names another leader in a later term;
    (b) the next acknowledged push: the first poll in which a follower shard
    of that group, in a session with a surviving member, shows an acked_seq
    above the one its new session first showed (so neither an ack in flight
    from the dead leader nor the watermark a new session starts from counts:
    only an ack of a push the new leader committed and applied)."""
    members = parse_members(args.members)
    dead = args.dead
    survivors = [node for node in sorted(members) if node != dead]
    with open(args.before) as f:
        before = {int(g): (v["leader"], v["term"]) for g, v in json.load(f).items()}
    led = sorted(group for group, (leader, _) in before.items() if leader == dead)
    groups = len(before)
    shards_of = {g: [s for s in range(args.follower_shards) if owner_of(args.follower_id, s, groups) == g] for g in led}
    dead_grpc = members[dead]["grpc"]
    t0 = args.since
    elected, acked = {}, {}
    first_new = {}
    polls = 0
    first_poll = None
    while len(acked) < len(led) or len(elected) < len(led):
        now = time.time() - t0
        if now > args.timeout:
            break
        polls += 1
        stats = get_json(args.follower, "/v1/stats", timeout=1.0)
        seen = time.time() - t0
        first_poll = first_poll if first_poll is not None else seen
        for group in led:
            if group in acked:
                continue
            for shard in shards_of[group]:
                r = (follower_shards(stats).get(shard) or {}).get("replication") or {}
                if r.get("leader_addr") in (None, dead_grpc) or not r.get("connected"):
                    continue
                seq = r.get("acked_seq") or 0
                if shard not in first_new:
                    first_new[shard] = seq
                elif seq > first_new[shard]:
                    acked[group] = seen
        views = cluster_views(members, survivors)
        seen = time.time() - t0
        for group in led:
            if group in elected:
                continue
            for view in views.values():
                g = groups_of(view).get(group)
                if g and g["leader"] not in (0, dead) and g["term"] > before[group][1]:
                    elected[group] = seen
        time.sleep(args.poll_ms / 1000)
    elapsed = time.time() - t0 - (first_poll or 0)
    result = {
        "dead": dead,
        "groups": [
            {
                "group": g,
                "term_before": before[g][1],
                "election_s": round(elected[g], 3) if g in elected else None,
                "ack_s": round(acked[g], 3) if g in acked else None,
            }
            for g in led
        ],
        "poll_interval_ms": round(elapsed / max(polls, 1) * 1000, 1),
        "first_poll_s": round(first_poll or 0, 3),
    }
    with open(args.results, "a") as results:
        results.write(json.dumps(result) + "\n")

    def seconds(value):
        return f"{value:.3f} s" if value is not None else f"none within {args.timeout} s"

    parts = [
        f"group {g['group']}: new leader named after {seconds(g['election_s'])}, next ack after {seconds(g['ack_s'])}"
        for g in result["groups"]
    ]
    print(f"killed node {dead} (led groups {','.join(map(str, led)) or 'none'}); " + "; ".join(parts))
    return 0 if len(acked) == len(led) else 1


def cmd_summary(args):
    """p50/p99/max of the failover results (one JSON document per line)."""
    ack, election, missing = [], [], 0
    intervals, first_polls = [], []
    with open(args.results) as results:
        for line in results:
            round_result = json.loads(line)
            intervals.append(round_result["poll_interval_ms"])
            first_polls.append(round_result["first_poll_s"])
            for g in round_result["groups"]:
                if g["ack_s"] is None:
                    missing += 1
                else:
                    ack.append(g["ack_s"])
                if g["election_s"] is not None:
                    election.append(g["election_s"])

    def line(name, values):
        if not values:
            return f"{name}: no measurement"
        return (
            f"{name}: n={len(values)} p50 {percentile(values, 50):.3f} s, p99 {percentile(values, 99):.3f} s, "
            f"max {max(values):.3f} s, min {min(values):.3f} s"
        )

    print(line("kill -> next acknowledged push on the group", ack) + "   (goal: p50 <= 1.5 s, p99 <= 2.5 s)")
    print(line("kill -> a survivor names the new leader   ", election))
    if missing:
        print(f"groups whose push was not acknowledged within the round's timeout: {missing}")
    if intervals:
        print(
            f"resolution: one poll (follower /v1/stats + survivors' /v1/cluster) every {percentile(intervals, 50)} ms "
            f"(median), the first {percentile(first_polls, 50) * 1000:.0f} ms after the kill (median)"
        )
    return 0


def cmd_stat(args):
    """Sums of /v1/stats fields over the node's shards: `ingest_entries`,
    `acked` (the follower's acked seqs), `lag`, `disk_bytes`, `raw_bytes`,
    `entries`, `last_seq`; one number per field, space-separated."""
    stats = get_json(args.addr, "/v1/stats")
    if stats is None:
        print(f"{args.addr} does not answer /v1/stats", file=sys.stderr)
        return 1
    out = []
    for field in args.fields:
        total = 0
        for s in stats["shards"]:
            r = s.get("replication") or {}
            value = {"acked": r.get("acked_seq"), "lag": r.get("lag_entries")}.get(field, s.get(field))
            total += value or 0
        out.append(str(total))
    print(" ".join(out))
    return 0


def cmd_per_shard(args):
    """One /v1/stats field per shard, space-separated, in shard order."""
    stats = get_json(args.addr, "/v1/stats")
    if stats is None:
        print(f"{args.addr} does not answer /v1/stats", file=sys.stderr)
        return 1
    print(" ".join(str(s.get(args.field) or 0) for s in sorted(stats["shards"], key=lambda s: s["shard"])))
    return 0


def cmd_wait_drained(args):
    """Waits until the follower's lag is 0 on every shard."""
    start = time.monotonic()
    while time.monotonic() - start < args.timeout:
        stats = get_json(args.follower, "/v1/stats")
        if stats and all(((s.get("replication") or {}).get("lag_entries") or 0) == 0 for s in stats["shards"]):
            print(json.dumps({"seconds": round(time.monotonic() - start, 3)}))
            return 0
        time.sleep(0.1)
    print(f"the follower's lag did not reach 0 within {args.timeout} s", file=sys.stderr)
    return 1


def cmd_stalls(args):
    """Watches the follower's acks until the file --until exists (or
    --timeout): per shard, the longest time its acked seq stood still while
    it had entries the leader had not acknowledged, ended by an ack (a stall
    as the follower sees it). Resolution: one poll every --poll-ms plus the poll's
    own time. Prints {"shard": seconds, ..., "polls": n}."""
    start = time.monotonic()
    progress = {}  # shard -> (acked seq, when it last moved or the lag was 0)
    longest = {}
    polls = 0
    while not os.path.exists(args.until) and time.monotonic() - start < args.timeout:
        stats = get_json(args.follower, "/v1/stats", timeout=5)
        now = time.monotonic()
        polls += 1
        for shard, s in follower_shards(stats).items():
            replication = s.get("replication") or {}
            acked, lag = replication.get("acked_seq") or 0, replication.get("lag_entries") or 0
            before = progress.get(shard)
            if before is None or acked != before[0] or lag == 0:
                if before is not None and acked != before[0]:
                    longest[shard] = max(longest.get(shard, 0), now - before[1])
                progress[shard] = (acked, now)
        time.sleep(args.poll_ms / 1000)
    print(json.dumps({**{str(k): round(v, 3) for k, v in sorted(longest.items())}, "polls": polls}))
    return 0


def metric_sum(addr, name):
    body = get(addr, "/metrics")
    if body is None:
        return None
    total = 0
    for line in body.decode().splitlines():
        if line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cmd_metric(args):
    """Sums of Prometheus families over their labels, space-separated."""
    values = [metric_sum(args.addr, name) for name in args.names]
    if any(value is None for value in values):
        print(f"{args.addr} does not answer /metrics", file=sys.stderr)
        return 1
    print(" ".join(f"{value:.6f}" for value in values))
    return 0


def cmd_catchup(args):
    """Times a restarted member's catch-up: polls its /v1/cluster until every
    group's applied index reaches the leader's (`--targets`, group=index),
    and its /v1/stats disk_bytes; prints the segment bytes gained over the
    time since `--since` (a `time.time()` stamp taken before the restart).
    With --from-empty (a member started without data), also when its
    disk_bytes first grew (`first_growth_s`: the first data arrived)."""
    members = parse_members(args.members)
    member = members[args.node]
    targets = {int(g): int(i) for g, i in (item.split("=") for item in args.targets.split(","))}
    first_answer = None
    first_growth = None
    while True:
        now = time.time()
        if now - args.since > args.timeout:
            print(f"node {args.node} did not catch up within {args.timeout} s", file=sys.stderr)
            return 1
        view = get_json(member["http"], "/v1/cluster", timeout=1.0)
        if view is not None and first_answer is None:
            first_answer = time.time()
        if args.from_empty and view is not None and first_growth is None:
            stats = get_json(member["http"], "/v1/stats", timeout=1.0)
            if stats is not None and sum(s["disk_bytes"] for s in stats["shards"]) > 0:
                first_growth = time.time()
        applied = {g: x["applied"] for g, x in groups_of(view).items()}
        if view is not None and all(applied.get(g, 0) >= i for g, i in targets.items()):
            done = time.time()
            break
        time.sleep(0.05)
    stats = get_json(member["http"], "/v1/stats")
    totals = {f: sum(s[f] for s in stats["shards"]) for f in ("disk_bytes", "raw_bytes", "entries")}
    print(
        json.dumps(
            {
                "seconds": round(done - args.since, 3),
                "first_answer_s": round(first_answer - args.since, 3),
                "first_growth_s": round(first_growth - args.since, 3) if first_growth is not None else None,
                "applied": applied,
                "snapshots_installed": metric_sum(member["http"], "wormdb_raft_snapshots_installed_total"),
                **totals,
            }
        )
    )
    return 0


def cmd_state(args):
    """What the archive check compares, read from idle nodes: the follower's
    last and acked seq per shard, every member's entries per shard and
    applied index per group."""
    members = parse_members(args.members)
    stats = get_json(args.follower, "/v1/stats")
    state = {
        "follower_id": args.follower_id,
        "follower": {
            str(s["shard"]): {"last_seq": s["last_seq"], "acked_seq": (s.get("replication") or {}).get("acked_seq")}
            for s in stats["shards"]
        },
        "members": {},
    }
    for node, member in members.items():
        member_stats = get_json(member["http"], "/v1/stats")
        view = get_json(member["http"], "/v1/cluster")
        state["members"][str(node)] = {
            "entries": {str(s["shard"]): s["entries"] for s in member_stats["shards"]},
            "applied": {str(g): x["applied"] for g, x in groups_of(view).items()},
        }
    print(json.dumps(state))
    return 0


def inspect_watermarks(path):
    """(node, shard) -> watermark from a `wormdb inspect` dump's
    "origin watermarks" sections."""
    watermarks = {}
    in_section = False
    with open(path) as dump:
        for line in dump:
            if "origin watermarks" in line:
                in_section = True
                continue
            match = re.match(r"\s+node (\d+) shard (\d+): (\d+)\s*$", line)
            if in_section and match:
                key = (int(match.group(1)), int(match.group(2)))
                watermarks[key] = max(watermarks.get(key, 0), int(match.group(3)))
            elif in_section:
                in_section = False
    return watermarks


def cmd_check_archive(args):
    """The archive equals the follower's log: on every member, group g's
    shard holds exactly as many entries as the follower shards it archives
    have seqs (no direct writes are made, so the group holds nothing else),
    every origin watermark (from `wormdb inspect` after a clean stop) equals
    the follower shard's last seq, and the members applied the same index."""
    with open(args.state) as f:
        state = json.load(f)
    follower_id = state["follower_id"]
    last = {int(s): v["last_seq"] for s, v in state["follower"].items()}
    acked = {int(s): v["acked_seq"] for s, v in state["follower"].items()}
    problems = []
    for shard in sorted(last):
        if acked[shard] != last[shard]:
            problems.append(f"follower shard {shard}: acked {acked[shard]} != last seq {last[shard]}")
    applied = {node: m["applied"] for node, m in state["members"].items()}
    if len({json.dumps(a, sort_keys=True) for a in applied.values()}) != 1:
        problems.append(f"applied indexes differ: {applied}")
    for item in args.inspect:
        node, path = item.split("=", 1)
        member = state["members"][node]
        groups = len(member["entries"])
        watermarks = inspect_watermarks(path)
        expected_count = {g: 0 for g in range(groups)}
        for shard, seq in last.items():
            expected_count[owner_of(follower_id, shard, groups)] += seq
            got = watermarks.get((follower_id, shard))
            if got != seq:
                problems.append(f"node {node}: watermark of (node {follower_id}, shard {shard}) is {got}, the follower's last seq {seq}")
        for g in range(groups):
            if member["entries"][str(g)] != expected_count[g]:
                problems.append(f"node {node}: group {g} holds {member['entries'][str(g)]} entries, expected {expected_count[g]}")
        extra = sorted(key for key in watermarks if key[0] != follower_id)
        if extra:
            problems.append(f"node {node}: origins other than the follower: {extra}")
    pairs = ", ".join(f"(node {follower_id}, shard {s}): {last[s]:,}" for s in sorted(last))
    if problems:
        print("ARCHIVE CHECK FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(f"archive check: OK on {len(args.inspect)} members; follower seqs {pairs}; counts, watermarks and applied indexes agree")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("leaders")
    p.add_argument("--members", required=True)
    p.set_defaults(run=cmd_leaders)
    p = sub.add_parser("pick")
    p.add_argument("--members", required=True)
    p.add_argument("--fewest", action="store_true")
    p.set_defaults(run=cmd_pick)
    p = sub.add_parser("wait-settled")
    p.add_argument("--members", required=True)
    p.add_argument("--follower")
    p.add_argument("--follower-id", type=int, default=0)
    p.add_argument("--exact", action="store_true")
    p.add_argument("--since", type=float)
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(run=cmd_wait_settled)
    p = sub.add_parser("failover")
    p.add_argument("--members", required=True)
    p.add_argument("--dead", type=int, required=True)
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--before", required=True, help="the `leaders` document read before the kill")
    p.add_argument("--follower", required=True)
    p.add_argument("--follower-id", type=int, required=True)
    p.add_argument("--follower-shards", type=int, required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--poll-ms", type=float, default=10)
    p.add_argument("--results", required=True, help="a file the round's JSON result is appended to")
    p.set_defaults(run=cmd_failover)
    p = sub.add_parser("summary")
    p.add_argument("results")
    p.set_defaults(run=cmd_summary)
    p = sub.add_parser("stat")
    p.add_argument("addr")
    p.add_argument("fields", nargs="+")
    p.set_defaults(run=cmd_stat)
    p = sub.add_parser("per-shard")
    p.add_argument("addr")
    p.add_argument("field")
    p.set_defaults(run=cmd_per_shard)
    p = sub.add_parser("wait-drained")
    p.add_argument("--follower", required=True)
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(run=cmd_wait_drained)
    p = sub.add_parser("stalls")
    p.add_argument("--follower", required=True)
    p.add_argument("--until", required=True, help="stop once this file exists")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--poll-ms", type=float, default=20)
    p.set_defaults(run=cmd_stalls)
    p = sub.add_parser("metric")
    p.add_argument("addr")
    p.add_argument("names", nargs="+")
    p.set_defaults(run=cmd_metric)
    p = sub.add_parser("catchup")
    p.add_argument("--members", required=True)
    p.add_argument("--node", type=int, required=True)
    p.add_argument("--targets", required=True)
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--from-empty", action="store_true", help="also time the first growth of its disk_bytes")
    p.set_defaults(run=cmd_catchup)
    p = sub.add_parser("state")
    p.add_argument("--members", required=True)
    p.add_argument("--follower", required=True)
    p.add_argument("--follower-id", type=int, required=True)
    p.set_defaults(run=cmd_state)
    p = sub.add_parser("check-archive")
    p.add_argument("--state", required=True)
    p.add_argument("inspect", nargs="+", help="NODE=PATH of a `wormdb inspect` dump")
    p.set_defaults(run=cmd_check_archive)
    p = sub.add_parser("group-of")
    p.add_argument("follower_id", type=int)
    p.add_argument("shard", type=int)
    p.add_argument("groups", type=int)
    p.set_defaults(run=lambda a: print(owner_of(a.follower_id, a.shard, a.groups)) or 0)
    args = parser.parse_args()
    sys.exit(args.run(args) or 0)


if __name__ == "__main__":
    main()
