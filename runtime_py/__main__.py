"""`python -m runtime_py verify BUNDLE [--json OUT] [--only KEY ...]`: verification without the toolchain."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime_py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="re-check a bundle's checksums and golden outputs")
    v.add_argument("bundle")
    v.add_argument("--json", dest="json_out")
    v.add_argument("--only", action="append", help="artifact key or file (repeatable)")
    v.add_argument("--threads", type=int)
    args = ap.parse_args(argv)

    from .bundle import BundleError
    from .verify import format_table, verify_bundle

    try:
        report = verify_bundle(args.bundle, only=args.only, threads=args.threads)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
