"""The deployable model: what a line PC pulls from the registry and runs without torch.

- :mod:`.runtime`: an ONNX bundle (FP32, the INT8 copy that passed the gate, the sidecar) loaded
  with onnxruntime alone; images in, masks, scores and verdicts at the shipped threshold out.
- :mod:`.bundle`: assembles that bundle from a pipeline run's ``artifacts/deploy`` and logs it to
  MLflow as a pyfunc model (:mod:`.pyfunc_model`), which the register stage registers.
- :mod:`.card`: the model card of a registered version.

Nothing here imports torch, Lightning or timm: the bundle must load where they are not installed.
"""
