"""Regenerate the committed Python stubs from protos/booking/v1/*.proto.

    python clients/generate.py            # write into clients/
    python clients/generate.py --check    # exit 1 when the committed stubs are stale

Output per proto: ``*_pb2.py`` (messages), ``*_pb2.pyi`` and ``*_pb2_grpc.pyi``
(typed stubs from mypy-protobuf), ``*_pb2_grpc.py`` (service stubs). The
google/type protos are not generated: googleapis-common-protos provides them.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "clients"
PACKAGE_DIR = Path("booking") / "v1"


def generate(out: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) into ``out``; return the written files."""
    import grpc_tools
    from grpc_tools import protoc

    bin_dir = Path(sys.executable).parent
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE_DIR).glob("*.proto"))
    args = [
        "protoc",
        f"--proto_path={PROTOS}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for init in (out / "booking" / "__init__.py", out / PACKAGE_DIR / "__init__.py"):
        init.touch()
    return sorted(p for p in (out / PACKAGE_DIR).iterdir() if p.name != "__pycache__")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed_dir = OUT / PACKAGE_DIR
        stale = []
        for path in fresh:
            target = committed_dir / path.name
            if not target.exists() or not filecmp.cmp(path, target, shallow=False):
                stale.append(path.name)
        generated_names = {p.name for p in fresh}
        extra = (
            [p.name for p in committed_dir.glob("*_pb2*") if p.name not in generated_names]
            if committed_dir.exists()
            else []
        )
        if opts.check:
            if stale or extra:
                print(f"stale stubs: {sorted(stale + extra)}; run python clients/generate.py")
                return 1
            print("stubs are up to date")
            return 0
        committed_dir.mkdir(parents=True, exist_ok=True)
        for name in extra:
            (committed_dir / name).unlink()
        for path in fresh:
            shutil.copyfile(path, committed_dir / path.name)
        print(f"wrote {len(fresh)} files to {committed_dir.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
