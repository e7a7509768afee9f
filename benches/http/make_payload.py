#!/usr/bin/env python3
"""Builds an NDJSON ingest payload from LogHub samples (https://github.com/logpai/loghub):
N entries, each with 3 tags and a BODY-byte body of real log text (consecutive
lines joined and cut), never a repeated character."""
import json, os, sys

entries = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
body_bytes = int(sys.argv[2]) if len(sys.argv) > 2 else 256
offset = int(sys.argv[3]) if len(sys.argv) > 3 else 0
# The full samples beside the repository, else the subset vendored in it
# (the same rule as tests/common/loghub.rs).
repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../..")
root = os.path.join(repo, "../shared/data/loghub")
if not os.path.isdir(root):
    root = os.path.join(repo, "tests/data/loghub")
names = ["Android", "Apache", "HDFS", "Hadoop", "Linux", "OpenSSH", "Spark", "Zookeeper"]
text = []
for name in names:
    with open(os.path.join(root, f"{name}_2k.log"), encoding="utf-8", errors="replace") as f:
        text.extend((name, line.rstrip("\n")) for line in f)
out = []
for i in range(entries):
    name, _ = text[(offset + i * 7) % len(text)]
    body = ""
    j = offset + i * 7
    while len(body.encode()) < body_bytes:
        body += text[j % len(text)][1] + " | "
        j += 1
    body = body.encode()[:body_bytes].decode("utf-8", "ignore")
    level = "error" if "ERROR" in body or "error" in body else "info"
    out.append(json.dumps({"tags": {"app": name.lower(), "host": f"web-{i % 16:02d}", "level": level}, "body": body}, separators=(",", ":")))
sys.stdout.write("\n".join(out) + "\n")
