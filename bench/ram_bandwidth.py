"""Measure this host's RAM read bandwidth at several buffer sizes and thread counts; prints GB/s.

    python bench/ram_bandwidth.py [--seconds 2] [--sizes-mib 8,64,256,1024] [--threads 1,N] [--json]

Small buffers fit in the CPU caches and show cache bandwidth; the figure for planning is the one at
buffers far above the last-level cache (256 MiB and up), which should level off. `agiplan detect
--measure` uses one thread and 256 MiB. All figures are what one process gets (see
planner/hardware/bandwidth.py); other load on the machine lowers them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

from planner.hardware.bandwidth import measure_ram_bandwidth_gbs
from planner.units import MIB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per (size, threads) point")
    parser.add_argument("--sizes-mib", default="8,64,256,1024", help="comma-separated buffer sizes")
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}", help="comma-separated thread counts")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes_mib.split(",") if s]
    thread_counts = sorted({int(t) for t in args.threads.split(",") if t})

    rows = []
    for threads in thread_counts:
        for size in sizes:
            gbs = measure_ram_bandwidth_gbs(seconds=args.seconds, buffer_bytes=size * MIB, threads=threads)
            rows.append({"buffer_mib": size, "threads": threads, "read_gbs": round(gbs, 2)})
            if not args.json:
                print(f"{size:>6} MiB  {threads:>3} thread(s)  {gbs:8.2f} GB/s", flush=True)
    if args.json:
        json.dump({"host": platform.node(), "cpu_count": os.cpu_count(), "rows": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
