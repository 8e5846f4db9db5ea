"""The MLflow pyfunc model of a registered inspectops version (MLflow "models from code").

MLflow copies this file into the model and runs it when the model loads: it defines
:class:`InspectionModel` and hands an instance to :func:`mlflow.models.set_model`. The bundle
folder (ONNX models, manifest, card) is the model's ``bundle`` artifact; the torch-free runtime
code ships in the model's ``code/`` folder. So ``mlflow.pyfunc.load_model("models:/...@champion")``
and ``mlflow models serve`` need MLflow, pandas, numpy, Pillow and onnxruntime, never torch.

Input: a DataFrame with one image per column and one part per row, as base64-encoded image
bytes (PNG, JPEG, ...): ``test`` and ``golden`` for segmentation and one-light classification,
``test_<Light>``/``golden_<Light>`` for several lights, ``image`` for the CAM classifier.
Output: one row per part: ``score``, ``threshold`` (the shipped one), ``verdict`` (``PASS`` or
``DEFECT``); segmentation adds ``mask`` (base64 PNG, 0/255 at the test image's size) and
``changed_fraction``; the CAM classifier adds ``boxes`` (``x1 y1 x2 y2`` per box, ``;``-separated).
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class InspectionModel(PythonModel):
    """Loads the bundle once per process; each ``predict`` judges a batch of parts."""

    def load_context(self, context: Any) -> None:
        from components.serving.runtime import DeployBundle

        self.bundle = DeployBundle(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # No type hints here: MLflow reads them as the input schema; the signature saved with the
        # model (from its input example) is the schema instead.
        from components.serving.runtime import prediction_frame

        return prediction_frame(self.bundle, model_input)


mlflow.models.set_model(InspectionModel())
