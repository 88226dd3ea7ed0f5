#!/usr/bin/env python3
"""Runs commands in turn, one run of each per round, so that a load that
drifts (other work on the machine) touches all alike; prints for each the
median wall time and the median CPU time (user + system) in milliseconds,
and each one's ratio to the first.

    bench/interleave.py [--rounds N] [--warmup N] -- 'CMD A' 'CMD B' ...
"""
import argparse
import os
import shlex
import statistics
import subprocess
import time

parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int, default=300)
parser.add_argument("--warmup", type=int, default=10)
parser.add_argument("commands", nargs="+")
args = parser.parse_args()
commands = [shlex.split(c) for c in args.commands]
wall = [[] for _ in commands]
cpu = [[] for _ in commands]
for round in range(args.warmup + args.rounds):
    for i, argv in enumerate(commands):
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{args.commands[i]} failed")
        if round >= args.warmup:
            wall[i].append(elapsed * 1000)
            cpu[i].append((usage.ru_utime + usage.ru_stime) * 1000)
base_wall = statistics.median(wall[0])
base_cpu = statistics.median(cpu[0])
for i, command in enumerate(args.commands):
    w, c = statistics.median(wall[i]), statistics.median(cpu[i])
    print(f"  {command}\n    wall {w:7.3f} ms ({w / base_wall:.2f}x)   cpu {c:7.3f} ms ({c / base_cpu:.2f}x)")
