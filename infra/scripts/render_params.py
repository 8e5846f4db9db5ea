"""Write a params file: ``params.yaml`` with an overlay's keys replaced, then validated.

    python infra/scripts/render_params.py --overlay infra/params/gpu-retrain.yaml \\
        --out params.gpu-retrain.yaml

The overlay holds only the keys that differ, nested as in ``params.yaml``: mappings merge,
everything else (scalars, lists) replaces. The result goes through the project's own schema
(:mod:`components.config`) before it is written, so a misspelt or out-of-range key stops
the run here, in a deployment's pull step, before any GPU time is spent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

# The checkout's own schema, even where an older inspectops is installed (the image).
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


from components.config import merge_overlay as merge  # noqa: E402  (after the checkout joins sys.path)


def _read_mapping(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def render(base_path: Path, overlay_path: Path) -> dict[str, Any]:
    """The merged params mapping, validated with :func:`components.config.parse_params`."""
    from components.config import parse_params

    merged = merge(_read_mapping(base_path), _read_mapping(overlay_path))
    parse_params(merged, f"{base_path} + {overlay_path}")
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=Path("params.yaml"), help="base params file (default params.yaml)")
    parser.add_argument("--overlay", type=Path, required=True, help="YAML with the keys to replace")
    parser.add_argument("--out", type=Path, required=True, help="params file to write")
    args = parser.parse_args(argv)
    try:
        merged = render(args.base, args.overlay)
    except ValueError as error:  # ParamsError names every bad key
        print(f"error: {error}", file=sys.stderr)
        return 1
    header = f"# Rendered by infra/scripts/render_params.py from {args.base} + {args.overlay}; do not edit.\n"
    args.out.write_text(header + yaml.safe_dump(merged, sort_keys=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
