"""Run every benchmark in this folder, one after the other, and print each one's JSON line.

    python benchmarks/run_all.py                 # full sizes (minutes)
    python benchmarks/run_all.py --tiny          # tiny sizes (seconds each; what CI runs)
    python benchmarks/run_all.py --only train_step,extract
    python benchmarks/run_all.py --reference /path/to/CPC_audio   # also the side-by-side comparison

Each benchmark runs in its own process (so one's allocator state or threads cannot colour the next),
with its human summary passed through on stderr. Stdout gets exactly the JSON lines, one per benchmark,
so ``run_all.py > results.jsonl`` keeps them. The exit code is 1 if any benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
# Run in this order, whichever exist. The memory benchmarks (streaming, prepare_memory, extract_memory) each
# measure a fresh child process; at full size they take the longest (2-hour files).
BENCHMARKS = ("train_step", "extract", "loader", "probe", "streaming", "prepare_memory", "extract_memory")


def json_lines(text: str) -> list[dict]:
    """The benchmark records (JSON objects with a ``benchmark`` key) among the lines of ``text``."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "benchmark" in record:
            records.append(record)
    return records


def run_one(name: str, arguments: list[str]) -> tuple[int, list[dict]]:
    """Run ``benchmarks/<name>.py`` with ``arguments``; return its exit code and JSON records."""
    command = [sys.executable, str(HERE / f"{name}.py"), *arguments]
    print(f"== {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    return completed.returncode, json_lines(completed.stdout)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="pass --tiny to every benchmark")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all present)")
    parser.add_argument("--reference", type=Path, default=None, help="a CPC_audio checkout: also run the side-by-side")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    present = [name for name in BENCHMARKS if (HERE / f"{name}.py").is_file()]
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in present and name != "reference_cpc_audio"]
        if unknown:
            print(f"error: no benchmark named {', '.join(unknown)}; present: {', '.join(present)}", file=sys.stderr)
            return 2
        present = [name for name in present if name in wanted]
    runs = [(name, ["--tiny"] if args.tiny else []) for name in present]
    if args.reference is not None:
        runs.append(("reference_cpc_audio", ["--reference", str(args.reference)] + (["--tiny"] if args.tiny else [])))

    failed = []
    for name, arguments in runs:
        code, records = run_one(name, arguments)
        for record in records:
            print(json.dumps(record), flush=True)
        if code != 0 or not records:
            failed.append(f"{name} (exit code {code}, {len(records)} JSON lines)")
    if failed:
        print(f"failed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
