"""Visual ChangeNet-Classification as a :class:`~components.models.family.ModelFamily`.

Inputs (TAO's export names): ``input_1`` the test image, ``input_2`` its golden, each the lights
stacked vertically, ``N x 3 x (L*H) x W`` in [0, 1] (``N x G x 3 x (L*H) x W`` for ``G > 1``
goldens). Output ``output``: logits ``N x 2`` [PASS, defect] (learnable) or the embedding
distance ``N x 1`` (euclidean). The defect score is ``softmax(output)[:, 1]`` or the distance; a
part is a defect when it is above the sidecar's ``threshold``. Promotion is gated on val image
AUROC (``auroc``), the threshold-free number the checkpoint is also chosen on.
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

FLOAT_SCOPES: tuple[str, ...] = ("/model/backbone/", "input")
"""INT8 keeps the Siamese backbone float, for the reason the segmentation family gives: the
decision rests on the small difference between two embeddings, which independent rounding of
two nearly equal images turns into false change."""


def _export_wrapper(model: nn.Module) -> nn.Module:
    """``(input_1, input_2) -> output``: logits ``(N, 2)``, or distances as ``(N, 1)``."""
    from torch import nn

    class ClassifyExport(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
            out = self.model(test, golden)
            return out.unsqueeze(1) if out.dim() == 1 else out

    return ClassifyExport(model)


class ChangeNetClassifyFamily:
    name = "classify"
    title = "ChangeNet-Classification"
    monitor = "val/auroc"
    gate_metric = "auroc"
    gate_label = "image AUROC"
    onnx_input_names: tuple[str, ...] = ("input_1", "input_2")
    quantization_float_scopes: tuple[str, ...] = FLOAT_SCOPES

    def onnx_output_names(self, params: Params) -> tuple[str, ...]:
        return ("output",)

    def deploy_metadata(self, params: Params, module: L.LightningModule | None = None) -> dict[str, Any]:
        """The lights in their stacking order, the golden count, the score rule and the operating threshold."""
        meta: dict[str, Any] = {
            "lighting_conditions": list(params.data.lighting_conditions),
            "num_golden": params.data.num_golden,
            "difference_module": params.classify.model.difference_module,
            "score": (
                "softmax(output)[:, 1]" if params.classify.model.difference_module == "learnable" else "output[:, 0]"
            ),
        }
        if module is not None:
            meta["threshold"] = self.operating_threshold(module.model, params)
            e = params.classify.eval
            meta.update(
                threshold_provenance(e.threshold_split, e.max_false_alarm_rate, params.data.calibration_fraction)
            )
        return meta

    def model_hparams(self, module: L.LightningModule) -> dict[str, Any]:
        return {"model": dict(module.hparams["model"]), "num_lights": int(module.hparams["num_lights"])}

    def serving_example(self, params: Params) -> dict[str, Path]:
        """The first val part's files under every light: the deployable model's input example
        (``test``/``golden``, or ``test_<Light>``/``golden_<Light>`` for several lights; the first golden)."""
        import csv

        from components.data.formats import DatasetLayout, classify_image_path, golden_image_paths

        layout = DatasetLayout(params.datasets_dir)
        with layout.classify_csv("val").open(newline="") as handle:
            row = next(csv.DictReader(handle))
        lights = list(params.data.lighting_conditions)
        files: dict[str, Path] = {}
        for light in lights:
            suffix = "" if len(lights) == 1 else f"_{light}"
            name = row["object_name"]
            files[f"test{suffix}"] = classify_image_path(layout.classify_images, row["input_path"], name, light)
            goldens = golden_image_paths(
                layout.classify_images, row["golden_path"], name, light, params.data.num_golden
            )
            files[f"golden{suffix}"] = goldens[0]
        return files

    def trainer_settings(self, params: Params) -> TrainerSettings:
        return TrainerSettings.from_train_params(
            params.classify.train, report_keys=("train/loss_epoch", "val/loss", "val/auroc", "val/ap")
        )

    def hyperparameters(self, params: Params) -> dict[str, Any]:
        return logged_params(params, "classify")

    def build_module(self, params: Params) -> L.LightningModule:
        from components.models.changenet_classify.module import ChangeClassifyModule

        return ChangeClassifyModule(
            model=params.classify.model.model_dump(mode="json"),
            train=params.classify.train.model_dump(mode="json"),
            num_lights=len(params.data.lighting_conditions),
        )

    def build_model(self, model_hparams: dict[str, Any]) -> nn.Module:
        """``model_hparams``: the module's stored hyper-parameters (``model`` section and ``num_lights``)."""
        from components.config import ClassifyModelParams
        from components.models.changenet_classify.model import ChangeNetClassify

        section = model_hparams.get("model", model_hparams)
        model_params = ClassifyModelParams.model_validate(section).model_copy(update={"pretrained": "none"})
        return ChangeNetClassify.from_params(model_params, int(model_hparams.get("num_lights", 1)))

    def build_datamodule(self, params: Params) -> L.LightningDataModule:
        from components.models.changenet_classify.data import ClassifyDataModule

        t = params.classify.train
        return ClassifyDataModule(
            root=params.datasets_dir,
            lights=params.data.lighting_conditions,
            num_golden=params.data.num_golden,
            input_size=params.classify.input_size,
            batch_size=t.batch_size,
            eval_batch_size=params.classify.eval.batch_size,
            num_workers=t.num_workers,
            augment=t.augment,
            sampler=t.sampler,
            fpratio_sampling=t.fpratio_sampling,
            seed=params.training_seed,
            calibration=(params.data.calibration_fraction, params.seed),
            masks=t.mask_loss_weight > 0,
        )

    def load_module(self, checkpoint: Path) -> L.LightningModule:
        from components.models.changenet_classify.module import load_module

        return load_module(checkpoint)

    def _stack(self, params: Params, split: str, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from components.models.changenet_classify.evaluate import dataset_for

        dataset = dataset_for(params, split)
        items = [dataset[i] for i in indices if i < len(dataset)]
        if not items:
            raise ValueError(f"{params.datasets_dir}: the {split} split has no parts")
        test = torch.stack([it["test"] for it in items])
        golden = torch.stack([it["golden"] for it in items])
        return test, golden[:, 0] if golden.shape[1] == 1 else golden

    def sample_inputs(self, params: Params, split: str, count: int) -> tuple[torch.Tensor, ...]:
        """The first ``count`` parts of ``split`` (the same parts every run)."""
        return self._stack(params, split, list(range(int(count))))

    def calibration_set(self, params: Params, count: int) -> CalibrationSet:
        """A seeded draw of train parts, un-augmented (see :mod:`components.quantization.calibration`)."""
        from components.models.changenet_classify.evaluate import dataset_for
        from components.quantization.calibration import CALIBRATION_SPLIT, CalibrationSet, calibration_indices

        rows = dataset_for(params, CALIBRATION_SPLIT).rows
        indices = calibration_indices(len(rows), count, params.seed)
        test, golden = self._stack(params, CALIBRATION_SPLIT, indices)
        return CalibrationSet((test, golden), self.onnx_input_names, [rows[i].object_name for i in indices])

    def export_module(self, module: L.LightningModule, params: Params) -> nn.Module:
        return _export_wrapper(module.model)

    def operating_threshold(self, model: Any, params: Params) -> float | None:
        from components.models.changenet_classify.evaluate import operating_threshold

        return operating_threshold(model, params)

    def evaluate(
        self,
        model: Any,
        params: Params,
        split: str,
        pictures_dir: Path | None = None,
        threshold: float | None = None,
    ) -> dict[str, float]:
        from components.models.changenet_classify.evaluate import evaluate_split

        return evaluate_split(model, params, split, pictures_dir, threshold)

    def registered_model(self, params: Params) -> str:
        return params.classify.registered_model


FAMILY = ChangeNetClassifyFamily()

__all__ = ["FAMILY", "FLOAT_SCOPES", "ChangeNetClassifyFamily"]
