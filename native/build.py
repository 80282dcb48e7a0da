"""Compile native/ddbjson.c into ``_dmsbus_ddbjson.abi3.so``, the decoder's compiled fast path.

    python native/build.py --out DIR                            # for this machine
    python native/build.py --out DIR --target aarch64-linux-gnu # for Lambda (arm64)

The compiler is zig's C compiler from the ``ziglang`` wheel (requirements.txt): it builds for
this machine and cross-compiles for Lambda's arm64 with no system toolchain, no Docker and no
root. The module uses only CPython's stable ABI (3.11+), so the headers of the interpreter
running this script serve every target: one binary loads on 3.11 here and 3.12 on Lambda.
Without the module, dmsbus.ddbjson decodes in pure Python, about 8x slower.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "ddbjson.c"
MODULE = "_dmsbus_ddbjson"
#: Lambda's Python 3.12 runs on Amazon Linux 2023 (glibc 2.34); 2.17 is manylinux2014's floor.
GLIBC = "2.17"


def command(out: Path, target: str | None) -> list[str]:
    include = sysconfig.get_paths()["include"]
    zig = [sys.executable, "-m", "ziglang", "cc"]
    if target is not None:
        zig += ["-target", f"{target}.{GLIBC}" if target.endswith("-gnu") else target]
    return [
        *zig,
        "-O2",
        "-s",
        "-shared",
        "-fPIC",
        "-fvisibility=hidden",  # PyMODINIT_FUNC marks the one exported symbol
        "-Wall",
        "-Werror",
        f"-I{include}",
        str(SOURCE),
        "-o",
        str(out / f"{MODULE}.abi3.so"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder the module is written to")
    parser.add_argument("--target", help="zig target triple, e.g. aarch64-linux-gnu (default: this machine)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    build = command(args.out, args.target)
    result = subprocess.run(build, check=False)
    if result.returncode != 0:
        print(f"native/build.py: compiling {SOURCE} failed: {' '.join(build)}", file=sys.stderr)
        return result.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
