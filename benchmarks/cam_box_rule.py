"""Sweep the CAM heatmap -> box rule on a trained CAM classifier: is the box rule or the heatmap the limit?

The rule (``cam.eval.box_threshold``, ``cam.eval.box_mode``) turns the anomaly heatmap into boxes;
it needs no retraining, so every setting is judged on the same predictions' heatmaps: box IoU
against the box of the true mask, hits at IoU 0.3 / 0.5, per defect kind. The operating threshold is
fixed (the trained model's, chosen on its threshold split), so only the boxes change.

Point ``--params`` at the params file of a project whose ``cam`` model is trained, e.g. the one
``cam_mvtec.py`` leaves in its work directory:

    python benchmarks/cam_box_rule.py --params /tmp/inspectops-cam-chain/params-chain-TAO-split-212-91.yaml

Choosing the rule on the split it is reported on flatters it: read the spread, not the best row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from components.config import load_params  # noqa: E402
from components.models.family import best_checkpoint, get_family  # noqa: E402


def sweep(params_path: Path, split: str, thresholds: list[float], modes: list[str]) -> list[dict[str, Any]]:
    """One row per (mode, threshold): box IoU and hits overall and per defect kind on ``split``."""
    params = load_params(params_path)
    family = get_family("cam")
    model = family.load_module(best_checkpoint(params, family)).model.eval()
    operating = family.operating_threshold(model, params)  # once: the boxes change, the verdict does not
    rows = []
    for mode in modes:
        for threshold in thresholds:
            rule = load_params(params_path, {"cam.eval.box_threshold": threshold, "cam.eval.box_mode": mode})
            values = family.evaluate(model, rule, split, None, operating)
            kinds = {k.split("/")[0]: v for k, v in values.items() if k.endswith("/box_iou")}
            rows.append({"mode": mode, "box_threshold": threshold, **values, "kinds": kinds})
            print(f"{mode:8s} {threshold:.2f}  box IoU {values['box_iou']:.3f}", flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], split: str) -> str:
    kinds = sorted({k for row in rows for k in row["kinds"]})
    head = f"| box_mode | box_threshold | {split} box IoU | hit@0.3 | hit@0.5 | " + " | ".join(kinds) + " |"
    lines = [head, "|" + "---|" * (5 + len(kinds))]
    for row in rows:
        per_kind = " | ".join(f"{row['kinds'].get(k, float('nan')):.2f}" for k in kinds)
        lines.append(
            f"| {row['mode']} | {row['box_threshold']:.1f} | {row['box_iou']:.2f} | {100 * row['box_hit_30']:.1f} | "
            f"{100 * row['box_hit_50']:.1f} | {per_kind} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True, help="params file of a project with a trained cam model")
    parser.add_argument("--split", default="val")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    parser.add_argument("--modes", nargs="+", default=["largest", "all"], choices=["largest", "all"])
    args = parser.parse_args()
    print(markdown(sweep(args.params, args.split, args.thresholds, args.modes), args.split))


if __name__ == "__main__":
    main()
