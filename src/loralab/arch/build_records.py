"""Write the shipped arch records: `python -m loralab.arch.build_records`.

Introspects every bundled model for every task its architecture supports and stores the records in
src/loralab/arch/records/<key>.json.gz, so plans of bundled models never import torch. Keys contain
the transformers and torch versions: rerun this after upgrading either (a test checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from loralab.arch.bundled import bundled_models
from loralab.arch.cache import SHIPPED_DIR, record_key, write_record
from loralab.arch.introspect import TASKS, UnsupportedTaskError, introspect


def build(out_dir: Path, *, clean: bool = True) -> list[Path]:
    """Write all records into `out_dir`; with `clean`, delete records this run did not produce."""
    written: list[Path] = []
    for model_id, folder in bundled_models().items():
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        for task in TASKS:
            key = record_key(config, task)
            try:
                rec = introspect(config, task=task, num_labels=None, model_id=model_id)
            except UnsupportedTaskError:
                continue
            path = out_dir / f"{key}.json.gz"
            write_record(path, rec)
            written.append(path)
            print(f"{model_id:40s} {task:9s} {rec.total_params:>15,}  {path.name}")
    if clean:
        keep = set(written)
        for stale in out_dir.glob("*.json.gz"):
            if stale not in keep:
                stale.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loralab.arch.build_records", description=__doc__)
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--keep-stale", action="store_true", help="keep records of other versions")
    args = parser.parse_args(argv)
    written = build(args.out, clean=not args.keep_stale)
    size = sum(p.stat().st_size for p in written)
    print(f"{len(written)} records, {size / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
