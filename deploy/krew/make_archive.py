#!/usr/bin/env python3
"""The krew plugin's archive: ``kubectl-kptrace.tar.gz`` holding the shim next to this script, made the same
byte for byte on every machine (fixed mtime, owner and gzip header), so the sha256 in kptrace.yaml can be
checked by a test and recomputed for a release.

    python3 deploy/krew/make_archive.py -o dist/      # writes the archive, prints its sha256
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ("kubectl-kptrace",)


def archive_bytes() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in FILES:
            data = (HERE / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out-dir", default=None, help="write kubectl-kptrace.tar.gz here")
    args = ap.parse_args()
    data = archive_bytes()
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.out_dir) / "kubectl-kptrace.tar.gz").write_bytes(data)
    print(hashlib.sha256(data).hexdigest())


if __name__ == "__main__":
    main()
