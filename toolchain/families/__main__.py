"""`python -m toolchain.families --matrix [--write FILE]`: print (or write) the family × stage support matrix."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .support import matrix_markdown


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m toolchain.families", description=__doc__)
    p.add_argument("--matrix", action="store_true", help="the family × stage matrix as Markdown")
    p.add_argument("--write", metavar="FILE", help="write it to FILE (e.g. docs/families.md) instead of stdout")
    a = p.parse_args(argv)
    if not a.matrix:
        p.error("nothing to do: pass --matrix")
    text = matrix_markdown()
    if a.write:
        Path(a.write).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
