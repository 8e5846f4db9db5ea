"""MAL (Mask Auto-Labeler) as a :class:`~components.models.family.ModelFamily`.

Input: box crops (``crop``: ``N x 3 x S x S`` in [0, 1], the 1.3x test crop of each box, resized to
``mal.model.crop_size``). Output: mask logits (``mask_logits``: ``N x 1 x S/8 x S/8``; the caller
upsamples, applies a sigmoid and zeroes what lies outside the box, :mod:`.predict`). Promotion is
gated on the val mIoU (``miou``), the metric the checkpoint is chosen on too. Trained on the
boxes of ``datasets/coco/train.json`` (and of val with ``mal.train.use_val_boxes``), or with
``mal.boxes: cam`` on the CAM classifier's boxes of the train images; validated against the true
masks of val either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.models.family import TrainerSettings, logged_params

if TYPE_CHECKING:
    import lightning as L
    import torch
    from torch import nn

    from components.config import Params
    from components.quantization.calibration import CalibrationSet

CALIBRATION_STREAM = 3
"""Separates MAL's calibration draw from other uses of ``params.seed``."""


class MaskAutoLabelerFamily:
    name = "mal"
    title = "MAL (Mask Auto-Labeler)"
    monitor = "val/miou"
    gate_metric = "miou"
    gate_label = "mask mIoU"
    onnx_input_names: tuple[str, ...] = ("crop",)
    quantization_float_scopes: tuple[str, ...] = ()  # one image, no difference to protect: all INT8

    def onnx_output_names(self, params: Params) -> tuple[str, ...]:
        return ("mask_logits",)

    def deploy_metadata(self, params: Params, module: L.LightningModule | None = None) -> dict[str, Any]:
        e = params.mal.eval
        return {
            "crop_size": params.mal.model.crop_size,
            "test_margin": e.test_margin,
            "mask_threshold": e.mask_threshold,
            "postprocess": "upsample logits to the crop, sigmoid, zero outside the box, paste, threshold",
        }

    def model_hparams(self, module: L.LightningModule) -> dict[str, Any]:
        return dict(module.hparams["model"])

    def trainer_settings(self, params: Params) -> TrainerSettings:
        t = params.mal.train
        return TrainerSettings(
            epochs=t.epochs,
            precision=t.precision,
            accelerator=t.accelerator,
            report_keys=("train/loss_epoch", "train/mil_epoch", "train/crf_epoch", "val/miou"),
            channels_last=t.channels_last,
        )

    def hyperparameters(self, params: Params) -> dict[str, Any]:
        return logged_params(params, "mal")

    def build_module(self, params: Params) -> L.LightningModule:
        from components.models.mal.module import MaskAutoLabelerModule

        return MaskAutoLabelerModule(
            model=params.mal.model.model_dump(mode="json"),
            train=params.mal.train.model_dump(mode="json"),
            eval=params.mal.eval.model_dump(mode="json"),
        )

    def build_model(self, model_hparams: dict[str, Any]) -> nn.Module:
        from components.config import MalModelParams
        from components.models.mal.model import MaskAutoLabeler

        return MaskAutoLabeler.from_params(
            MalModelParams.model_validate(model_hparams).model_copy(update={"pretrained": "none"})
        )

    def build_datamodule(self, params: Params) -> L.LightningDataModule:
        from components.data.formats import DatasetLayout
        from components.labeling.pipeline import mal_train_boxes
        from components.models.mal.data import MalDataModule

        layout = DatasetLayout(params.datasets_dir)
        return MalDataModule(
            train_json=mal_train_boxes(params),
            val_json=layout.coco_json("val"),
            images_root=params.datasets_dir,
            crop_size=params.mal.model.crop_size,
            train=params.mal.train,
            eval=params.mal.eval,
            seed=params.training_seed,
        )

    def load_module(self, checkpoint: Path) -> L.LightningModule:
        from components.models.mal.module import load_module

        return load_module(checkpoint)  # ``module.model`` is the student: MAL labels with it (paper)

    def _test_crops(self, params: Params, split: str) -> Any:
        """``split``'s boxes as un-augmented 1.3x test crops: what the deployed model is fed."""
        from components.data.formats import DatasetLayout
        from components.models.mal.data import BoxCropDataset

        return BoxCropDataset(
            DatasetLayout(params.datasets_dir).coco_json(split),
            params.datasets_dir,
            params.mal.model.crop_size,
            train=False,
            test_margin=params.mal.eval.test_margin,
            seed=params.seed,
            min_box_size=1,
        )

    @staticmethod
    def _stack(dataset: Any, indices: list[int]) -> tuple[torch.Tensor, list[str]]:
        import torch

        items = [dataset[i] for i in indices]
        return torch.stack([it["teacher"] for it in items]), [f"ann{int(it['ann_id'])}" for it in items]

    def sample_inputs(self, params: Params, split: str, count: int) -> tuple[torch.Tensor, ...]:
        """The test crops of the first ``count`` boxes of ``split`` (the same every run)."""
        dataset = self._test_crops(params, split)
        crops, _ = self._stack(dataset, list(range(min(int(count), len(dataset)))))
        return (crops,)

    def calibration_set(self, params: Params, count: int) -> CalibrationSet:
        """A seeded draw of train box crops (the deployed input: un-augmented 1.3x test crops)."""
        import numpy as np

        from components.quantization.calibration import CalibrationSet

        dataset = self._test_crops(params, "train")
        rng = np.random.default_rng([int(params.seed), CALIBRATION_STREAM])
        picks = sorted(int(i) for i in rng.choice(len(dataset), size=min(int(count), len(dataset)), replace=False))
        crops, names = self._stack(dataset, picks)
        return CalibrationSet((crops,), self.onnx_input_names, names)

    def export_module(self, module: L.LightningModule, params: Params) -> nn.Module:
        return module.student

    def operating_threshold(self, model: Any, params: Params) -> float | None:
        return None  # MAL writes masks for given boxes; it calls no image good or bad

    def evaluate(
        self,
        model: Any,
        params: Params,
        split: str,
        pictures_dir: Path | None = None,
        threshold: float | None = None,
    ) -> dict[str, float]:
        from components.models.mal.evaluate import evaluate_split

        return evaluate_split(model, params, split, pictures_dir)

    def registered_model(self, params: Params) -> str:
        return params.mal.registered_model


FAMILY = MaskAutoLabelerFamily()

__all__ = ["FAMILY", "MaskAutoLabelerFamily"]
