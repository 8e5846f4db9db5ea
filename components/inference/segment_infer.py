"""Predict change masks for golden/test pairs given as two files or two folders.

Folders are paired by file name (``golden/x.png`` with ``test/x.png``). Images are
resized to the model's training size, and the mask is brought back to the test image's
own size, so outputs line up with what the user passed in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from components.config import SegmentEvalParams, TilingParams
from components.evaluation.visualize import overlay
from components.fsutil import atomic_dir
from components.imageio import read_image, write_png
from components.inference.pairs import pair_inputs


def _to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)


@torch.inference_mode()
def infer_segment(
    checkpoint: Path,
    golden: Path,
    test: Path,
    out: Path,
    image_size: int,
    threshold: float = 0.5,
    verdict: SegmentEvalParams | None = None,
    image_threshold: float | None = None,
    tiling: TilingParams | None = None,
) -> list[Path]:
    """Write ``<name>_mask.png`` (0/255) and ``<name>_overlay.png`` for each pair into ``out``.

    With ``verdict`` (the ``segment.eval`` settings), also ``verdicts.csv``: each pair's image
    score by ``verdict.image_score`` (at the model's input size, as in evaluation) and, given
    ``image_threshold``, PASS or DEFECT (score above it).

    With ``tiling`` (``data.tiling``) nothing is resized: overlapping windows slide over the test
    image's full size (the golden resized to it first if it differs) and the score is taken on the
    stitched full-size map, as evaluation does.
    """
    from components.models.changenet.image_score import image_scores
    from components.models.changenet.module import load_module

    pairs = pair_inputs(Path(golden), Path(test))
    model = load_module(checkpoint).model.eval()
    written: list[Path] = []
    rows = ["name,image_score,verdict"]
    with atomic_dir(out) as staging:
        for name, golden_path, test_path in pairs:
            golden_img, test_img = read_image(golden_path), read_image(test_path)
            if tiling is not None:
                row = _infer_tiled(
                    model, name, golden_img, test_img, staging, threshold, verdict, image_threshold, tiling
                )
                if row is not None:
                    rows.append(row)
                written.append(out / f"{name}_mask.png")
                continue
            logits = model(_to_tensor(test_img, image_size)[None], _to_tensor(golden_img, image_size)[None])[-1]
            prob = torch.softmax(logits.float(), dim=1)[:, 1:2]
            if verdict is not None:
                score = float(
                    image_scores(prob[:, 0].numpy(), threshold, verdict.score_window, verdict.topk_fraction)[
                        verdict.image_score
                    ][0]
                )
                call = "" if image_threshold is None else ("DEFECT" if score > image_threshold else "PASS")
                rows.append(f"{name},{score:.6f},{call}")
            height, width = test_img.shape[:2]
            prob = torch.nn.functional.interpolate(prob, size=(height, width), mode="bilinear", align_corners=False)
            mask = (prob[0, 0] >= threshold).numpy()
            golden_resized = np.asarray(Image.fromarray(golden_img).resize((width, height), Image.Resampling.BICUBIC))
            write_png(staging / f"{name}_mask.png", (mask * 255).astype(np.uint8))
            picture = overlay(golden_resized, test_img, mask, np.zeros_like(mask))
            write_png(staging / f"{name}_overlay.png", picture)
            written.append(out / f"{name}_mask.png")
        if verdict is not None:
            (staging / "verdicts.csv").write_text("\n".join(rows) + "\n")
    return written


def _infer_tiled(
    model: torch.nn.Module,
    name: str,
    golden_img: np.ndarray,
    test_img: np.ndarray,
    staging: Path,
    threshold: float,
    verdict: SegmentEvalParams | None,
    image_threshold: float | None,
    tiling: TilingParams,
) -> str | None:
    """One pair at native size: the stitched map's mask, overlay and (with ``verdict``) its verdicts.csv row."""
    from components.models.changenet.image_score import image_scores
    from components.models.changenet.tiling import predict_tiled

    height, width = test_img.shape[:2]
    if golden_img.shape[:2] != (height, width):
        golden_img = np.asarray(Image.fromarray(golden_img).resize((width, height), Image.Resampling.BICUBIC))
    batch = verdict.batch_size if verdict is not None else 8
    prob = predict_tiled(model, test_img, golden_img, tiling.tile_size, tiling.overlap, batch)
    mask = (prob >= threshold).numpy()
    write_png(staging / f"{name}_mask.png", (mask * 255).astype(np.uint8))
    write_png(staging / f"{name}_overlay.png", overlay(golden_img, test_img, mask, np.zeros_like(mask)))
    if verdict is None:
        return None
    scores = image_scores(prob[None].numpy(), threshold, verdict.score_window, verdict.topk_fraction)
    score = float(scores[verdict.image_score][0])
    call = "" if image_threshold is None else ("DEFECT" if score > image_threshold else "PASS")
    return f"{name},{score:.6f},{call}"
