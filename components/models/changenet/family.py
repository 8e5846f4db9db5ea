"""Visual ChangeNet-Segmentation as a :class:`~components.models.family.ModelFamily`.

Inputs: a test and a golden image (``input0``, ``input1``: ``N x 3 x H x W`` in [0, 1]).
Output: change logits ``output_final`` (``N x 2 x H x W``). Promotion is gated on the
change-class IoU of val (``iou``), the metric the checkpoint is also chosen on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.evaluation.calibration import threshold_provenance
from components.models.family import TrainerSettings, logged_params

if TYPE_CHECKING:
    import lightning as L
    import torch
    from torch import nn

    from components.config import Params
    from components.quantization.calibration import CalibrationSet

FLOAT_SCOPES: tuple[str, ...] = ("/model/backbone/", "input")
"""What INT8 quantization keeps float: the raw-pixel input path and the shared Siamese backbone.

The change signal is the *difference* of two backbone embeddings of nearly identical images.
Quantization noise in the backbone is not common to both (two slightly different inputs round
differently), so it reaches the decoder as false change: on the MVTec transistor checkpoint an
all-INT8 graph lost 12 (U8S8) to 16 (S8S8) points of change-IoU, the decoder-only INT8 graph
0.1-0.2 points. The decoder holds ~90% of the FLOPs at 256x256, so most of the speed remains.
"""


class ChangeNetSegmentFamily:
    name = "segment"
    title = "ChangeNet-Segmentation"
    monitor = "val/iou"
    gate_metric = "iou"
    gate_label = "change-IoU"
    onnx_input_names: tuple[str, ...] = ("input0", "input1")
    quantization_float_scopes: tuple[str, ...] = FLOAT_SCOPES

    def onnx_output_names(self, params: Params) -> tuple[str, ...]:
        from components.export.onnx_export import output_names

        return output_names(params.export.side_outputs)

    def deploy_metadata(self, params: Params, module: L.LightningModule | None = None) -> dict[str, Any]:
        """The pixel threshold, and the image verdict: score rule and the threshold chosen for it."""
        setting = params.segment.eval
        metadata: dict[str, Any] = {
            "threshold": setting.threshold,
            "image_score": setting.image_score,
            "score_window": setting.score_window,
            "topk_fraction": setting.topk_fraction,
        }
        if params.data.tiling is not None:  # the graph is tile-sized: a deployment slides windows over a pair
            metadata["tiling"] = params.data.tiling.model_dump(mode="json")
        if module is not None:
            threshold = self.operating_threshold(module.model, params)
            metadata["image_threshold"] = None if threshold is None or math.isnan(threshold) else threshold
            metadata.update(
                threshold_provenance(
                    setting.image_threshold_split, setting.max_false_alarm_rate, params.data.calibration_fraction
                )
            )
        return metadata

    def model_hparams(self, module: L.LightningModule) -> dict[str, Any]:
        return dict(module.hparams["model"])

    def serving_example(self, params: Params) -> dict[str, Path]:
        """The first val pair's files: the deployable model's input example (``test``, ``golden``)."""
        from components.data.formats import DatasetLayout, read_segment_list

        layout = DatasetLayout(params.datasets_dir)
        name = read_segment_list(layout.segment_list("val"))[0]
        return {"test": layout.segment_image("A", name), "golden": layout.segment_image("B", name)}

    def trainer_settings(self, params: Params) -> TrainerSettings:
        return TrainerSettings.from_train_params(
            params.segment.train,
            report_keys=("train/loss_epoch", "val/loss", "val/iou", "val/f1", "val/precision", "val/recall"),
        )

    def hyperparameters(self, params: Params) -> dict[str, Any]:
        return logged_params(params, "segment")

    def build_module(self, params: Params) -> L.LightningModule:
        from components.models.changenet.module import ChangeSegmentModule

        return ChangeSegmentModule(
            model=params.segment.model.model_dump(mode="json"),
            train=params.segment.train.model_dump(mode="json"),
            threshold=params.segment.eval.threshold,
            eval=params.segment.eval.model_dump(mode="json"),
            tiling=params.data.tiling.model_dump(mode="json") if params.data.tiling is not None else None,
        )

    def build_model(self, model_hparams: dict[str, Any]) -> nn.Module:
        from components.config import SegmentModelParams
        from components.models.changenet.model import ChangeNetSegment

        model_params = SegmentModelParams.model_validate(model_hparams).model_copy(update={"pretrained": "none"})
        return ChangeNetSegment.from_params(model_params)

    def build_datamodule(self, params: Params) -> L.LightningDataModule:
        from components.models.changenet.data import SegmentDataModule, pseudo_mask_dirs

        t = params.segment.train
        train_mask_dir = None
        if t.labels == "mal":  # the label-efficient chain: masks MAL made from the train boxes
            from components.labeling.pipeline import mal_mask_dir

            train_mask_dir = mal_mask_dir(params)
        return SegmentDataModule(
            root=params.datasets_dir,
            batch_size=t.batch_size,
            num_workers=t.num_workers,
            augment=t.augment,
            seed=params.training_seed,
            eval_batch_size=params.segment.eval.batch_size,
            train_mask_dir=train_mask_dir,
            pseudo_mask_dirs=pseudo_mask_dirs(params),
            defect_share=t.defect_share,
            tiling=params.data.tiling,
            calibration=(params.data.calibration_fraction, params.seed),
        )

    def load_module(self, checkpoint: Path) -> L.LightningModule:
        from components.models.changenet.module import load_module

        return load_module(checkpoint)

    def sample_inputs(self, params: Params, split: str, count: int) -> tuple[torch.Tensor, ...]:
        """The first ``count`` pairs of ``split`` (the same pairs every run, so numbers compare).

        With ``data.tiling`` each native-size pair gives its centre tile: the exported model is tile-sized.
        """
        import torch

        from components.models.changenet.data import open_split
        from components.models.changenet.tiling import sample_tile

        dataset = open_split(params, split)
        items = [dataset[i] for i in range(min(int(count), len(dataset)))]
        if params.data.tiling is not None:
            items = [sample_tile(item, params.data.tiling.tile_size) for item in items]
        if not items:
            raise ValueError(f"{params.datasets_dir}: the {split} split has no pairs")
        return torch.stack([it["test"] for it in items]), torch.stack([it["golden"] for it in items])

    def calibration_set(self, params: Params, count: int) -> CalibrationSet:
        """A seeded draw of train pairs (see :mod:`components.quantization.calibration`)."""
        from components.quantization.calibration import segment_calibration

        tile = params.data.tiling.tile_size if params.data.tiling is not None else None
        return segment_calibration(params.datasets_dir, count, params.seed, tile=tile)

    def export_module(self, module: L.LightningModule, params: Params) -> nn.Module:
        from components.export.onnx_export import SegmentExportWrapper

        return SegmentExportWrapper(module.model, params.export.side_outputs)

    def operating_threshold(self, model: Any, params: Params) -> float | None:
        """The image verdict's threshold on the image score (see ``image_operating_threshold``)."""
        from components.models.changenet.evaluate import image_operating_threshold

        return image_operating_threshold(model, params)

    def evaluate(
        self,
        model: Any,
        params: Params,
        split: str,
        pictures_dir: Path | None = None,
        threshold: float | None = None,
    ) -> dict[str, float]:
        from components.models.changenet.evaluate import evaluate_split

        return evaluate_split(model, params, split, pictures_dir, image_threshold=threshold)

    def registered_model(self, params: Params) -> str:
        return params.tracking.registered_model


FAMILY = ChangeNetSegmentFamily()

__all__ = ["FAMILY", "ChangeNetSegmentFamily"]
