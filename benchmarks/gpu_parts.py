"""How large a wheel part may be so that one device call carries it with the working tree (64 MiB in all).

    python3 benchmarks/gpu_parts.py --part-bytes     # for benchmarks/gpu_wheels.sh
    python3 benchmarks/gpu_parts.py --plan N         # the device calls for N parts
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALL_LIMIT = 64 << 20  # what one device call may send: tracked + untracked-not-ignored files + carried paths
MARGIN = 1 << 20  # the tree may grow a little between packing and the calls (results, notes)
MIN_PART = 8 << 20  # below this the calls would cost more device time than the run itself


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of what every device call sends besides its carried paths: tracked and untracked-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout
    return sum((root / name).stat().st_size for name in set(out.decode().split("\0")) if name and (root / name).is_file())


def part_bytes(root: Path = ROOT) -> int:
    """The largest part (a whole number of MiB) that fits one call next to the tree.

    Raises:
        SystemExit: the tree leaves less than ``MIN_PART`` (make the tree smaller first).
    """
    room = CALL_LIMIT - tree_bytes(root) - MARGIN
    part = room >> 20 << 20
    if part < MIN_PART:
        raise SystemExit(f"the working tree leaves {room / 2**20:.1f} MiB per device call; wheel parts need at least "
                         f"{MIN_PART >> 20} MiB. Make the tracked tree smaller.")
    return part


def plan(parts: int, root: Path = ROOT) -> str:
    tree, part = tree_bytes(root), part_bytes(root)
    lines = [f"working tree {tree / 2**20:.1f} MiB; parts of {part >> 20} MiB; {parts} device calls:"]
    for k in range(1, parts + 1):
        tail = " && bash benchmarks/gpu.sh" if k == parts else ""
        lines.append(f"  call {k}: carry ['.gpuwheels/{k}'], command: "
                     f"mkdir -p /tmp/gw && cp .gpuwheels/{k}/part /tmp/gw/part.{k}{tail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part-bytes", action="store_true")
    p.add_argument("--plan", type=int, metavar="N")
    args = p.parse_args(argv)
    if args.part_bytes:
        print(part_bytes())
    if args.plan:
        print(plan(args.plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
