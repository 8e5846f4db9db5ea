"""The CAM defect classifier as a :class:`~components.models.family.ModelFamily`.

Input ``image``: ``N x 3 x S x S`` in [0, 1] (``S`` = ``cam.input_size`` or ``data.image_size``;
normalisation is inside the graph). Outputs: ``heatmap`` (``N x 1 x S x S`` in [0, 1], the
anomaly class's activation map, :mod:`.model`) and ``logits`` (``N x 2``, [good, anomaly]; the
primary output the export parity check and the quantization evaluation read). A part is an
anomaly when ``softmax(logits)[:, 1]`` is above the sidecar's ``threshold``; its defect box is
the box of the largest region where the heatmap reaches ``box_threshold`` of its maximum
(:func:`components.models.cam.heatmap.heatmap_to_boxes`). Promotion is gated on val image AUROC
(``auroc``), the threshold-free number the checkpoint is also chosen on. Trained and judged on
the prepared segmentation split (its test images and masks; no goldens), or, for a source
without masks (class folders), the image-label lists (:mod:`.data`).
"""

from __future__ import annotations

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


def _export_wrapper(model: nn.Module) -> nn.Module:
    """``image -> (heatmap, logits)``, in the order of :data:`~components.models.cam.model.ONNX_OUTPUT_NAMES`."""
    from torch import nn

    class CamExport(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits, heatmap = self.model.forward_with_cam(image)
            return heatmap, logits

    return CamExport(model)


class CamFamily:
    name = "cam"
    title = "CAM defect classifier"
    monitor = "val/auroc"
    gate_metric = "auroc"
    gate_label = "image AUROC"
    onnx_input_names: tuple[str, ...] = ("image",)
    quantization_float_scopes: tuple[str, ...] = ()  # one image, no difference to protect: all INT8

    def onnx_output_names(self, params: Params) -> tuple[str, ...]:
        from components.models.cam.model import ONNX_OUTPUT_NAMES

        return ONNX_OUTPUT_NAMES

    def deploy_metadata(self, params: Params, module: L.LightningModule | None = None) -> dict[str, Any]:
        """Class names, the score and box rules, and the operating threshold of ``module``."""
        from components.models.cam.evaluate import image_size
        from components.models.cam.model import CLASS_NAMES

        e = params.cam.eval
        meta: dict[str, Any] = {
            "classes": list(CLASS_NAMES),
            "input_size": image_size(params),
            "score": "softmax(logits)[:, 1]",
            "box_threshold": e.box_threshold,
            "box_mode": e.box_mode,
            "min_box_area": e.min_box_area,
            "box_rule": "connected regions of heatmap >= box_threshold * max(heatmap); largest (or all) -> boxes",
        }
        if module is not None:
            meta["threshold"] = self.operating_threshold(module.model, params)
            meta.update(
                threshold_provenance(e.threshold_split, e.max_false_alarm_rate, params.data.calibration_fraction)
            )
        return meta

    def model_hparams(self, module: L.LightningModule) -> dict[str, Any]:
        return {"model": dict(module.hparams["model"])}

    def serving_example(self, params: Params) -> dict[str, Path]:
        """The first val image (the segmentation set's test image, else the image-label list's): the
        deployable model's input example (``image``)."""
        from components.data.formats import DatasetLayout, read_image_labels, read_segment_list

        layout = DatasetLayout(params.datasets_dir)
        if layout.segment_list("val").is_file():
            return {"image": layout.segment_image("A", read_segment_list(layout.segment_list("val"))[0])}
        return {"image": layout.root / read_image_labels(layout.image_labels_csv("val"))[0]["image"]}

    def trainer_settings(self, params: Params) -> TrainerSettings:
        return TrainerSettings.from_train_params(
            params.cam.train,
            report_keys=("train/loss_epoch", "val/loss", "val/auroc", "val/accuracy", "val/balanced_accuracy"),
        )

    def hyperparameters(self, params: Params) -> dict[str, Any]:
        return logged_params(params, "cam")

    def build_module(self, params: Params) -> L.LightningModule:
        from components.models.cam.module import CamModule

        return CamModule(model=params.cam.model.model_dump(mode="json"), train=params.cam.train.model_dump(mode="json"))

    def build_model(self, model_hparams: dict[str, Any]) -> nn.Module:
        """``model_hparams``: the module's stored hyper-parameters (or the bare ``model`` section)."""
        from components.config import CamModelParams
        from components.models.cam.model import CamClassifier

        section = model_hparams.get("model", model_hparams)
        return CamClassifier.from_params(
            CamModelParams.model_validate(section).model_copy(update={"pretrained": "none"})
        )

    def build_datamodule(self, params: Params) -> L.LightningDataModule:
        from components.models.cam.data import CamDataModule
        from components.models.cam.evaluate import image_size

        t = params.cam.train
        return CamDataModule(
            root=params.datasets_dir,
            image_size=image_size(params),
            batch_size=t.batch_size,
            eval_batch_size=params.cam.eval.batch_size,
            num_workers=t.num_workers,
            augment=t.augment,
            seed=params.training_seed,
            calibration=(params.data.calibration_fraction, params.seed),
        )

    def load_module(self, checkpoint: Path) -> L.LightningModule:
        from components.models.cam.module import load_module

        return load_module(checkpoint)

    def _stack(self, params: Params, split: str, indices: list[int]) -> tuple[torch.Tensor, list[str]]:
        import torch

        from components.models.cam.evaluate import dataset_for

        dataset = dataset_for(params, split)
        items = [dataset[i] for i in indices if i < len(dataset)]
        if not items:
            raise ValueError(f"{params.datasets_dir}: the {split} split has no images")
        return torch.stack([it["image"] for it in items]), [it["name"] for it in items]

    def sample_inputs(self, params: Params, split: str, count: int) -> tuple[torch.Tensor, ...]:
        """The first ``count`` images of ``split`` (the same images every run)."""
        images, _ = self._stack(params, split, list(range(int(count))))
        return (images,)

    def calibration_set(self, params: Params, count: int) -> CalibrationSet:
        """A seeded draw of train images, un-augmented (see :mod:`components.quantization.calibration`)."""
        from components.models.cam.evaluate import dataset_for
        from components.quantization.calibration import CALIBRATION_SPLIT, CalibrationSet, calibration_indices

        indices = calibration_indices(len(dataset_for(params, CALIBRATION_SPLIT)), count, params.seed)
        images, names = self._stack(params, CALIBRATION_SPLIT, indices)
        return CalibrationSet((images,), self.onnx_input_names, names)

    def export_module(self, module: L.LightningModule, params: Params) -> nn.Module:
        return _export_wrapper(module.model)

    def operating_threshold(self, model: Any, params: Params) -> float | None:
        from components.models.cam.evaluate import operating_threshold

        return operating_threshold(model, params)

    def evaluate(
        self,
        model: Any,
        params: Params,
        split: str,
        pictures_dir: Path | None = None,
        threshold: float | None = None,
    ) -> dict[str, float]:
        from components.models.cam.evaluate import evaluate_split

        return evaluate_split(model, params, split, pictures_dir, threshold)

    def registered_model(self, params: Params) -> str:
        return params.cam.registered_model


FAMILY = CamFamily()

__all__ = ["FAMILY", "CamFamily"]
