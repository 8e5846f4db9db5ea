"""Benchmarking of exported models: a trtexec-like harness, runtimes, TensorRT builds, platforms, comparison.

Module map (imports stay lazy: heavy libraries load only in the function that needs them):

* :mod:`.harness` - pure timing loop and trtexec-compatible statistics.
* :mod:`.variants` - the runtime variant spec (runtime, device, precision, channels-last, compile) and its labels.
* :mod:`.runtimes` - load a model for a variant (pytorch / onnxruntime / tensorrt, CPU or CUDA) and give ``run_batch``.
* :mod:`.tensorrt_build` - engine build with the TensorRT Python API (10.x weak typing, 11.x strong).
* :mod:`.trtexec` - find, version, command line, log and ``--exportTimes`` parsing.
* :mod:`.platforms` - ``platforms.yaml``, the list of machines and TAO's reference FPS.
* :mod:`.model_ref` - registry URI / run URI / path to a local model file.
* :mod:`.bench` - CLI and flow entry points, JSON + MLflow recording, fan-out comparison.
* :mod:`.compare` - the pure comparison table.
* :mod:`.deployments` - one Prefect deployment per platform work pool.
"""
