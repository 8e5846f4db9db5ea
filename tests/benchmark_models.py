"""Tiny hand-built ONNX models with ChangeNet's interface, for benchmark tests.

Built with ``onnx.helper`` (no torch export) so that they cost milliseconds to make and
to run: ``input0``/``input1`` (N×3×S×S, dynamic batch) -> difference -> 3×3 conv -> ``output_final``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_change_onnx(
    path: Path,
    image_size: int = 64,
    input_names: tuple[str, str] = ("input0", "input1"),
    dtype: str = "fp32",
    qdq: str | None = None,
) -> Path:
    """Write a tiny change-detection-shaped ONNX; ``dtype="fp16"`` or ``qdq="int8"|"fp8"`` for precision tests."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.FLOAT16 if dtype == "fp16" else TensorProto.FLOAT
    np_dtype = np.float16 if dtype == "fp16" else np.float32
    shape = ["batch", 3, image_size, image_size]
    inputs = [helper.make_tensor_value_info(name, elem, shape) for name in input_names]
    output = helper.make_tensor_value_info("output_final", elem, ["batch", 2, image_size, image_size])
    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np_dtype) * np_dtype(0.1), "weight"
    )
    nodes = [helper.make_node("Sub", list(input_names), ["diff"])]
    initializers = [weight]
    conv_input = "diff"
    if qdq is not None:
        initializers.append(numpy_helper.from_array(np.array(0.02, dtype=np.float32), "scale"))
        if qdq == "fp8":
            zero = helper.make_tensor("zero", TensorProto.FLOAT8E4M3FN, [], [0.0])
        else:
            zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "zero")
        initializers.append(zero)
        nodes += [
            helper.make_node("QuantizeLinear", ["diff", "scale", "zero"], ["diff_q"]),
            helper.make_node("DequantizeLinear", ["diff_q", "scale", "zero"], ["diff_dq"]),
        ]
        conv_input = "diff_dq"
    nodes.append(helper.make_node("Conv", [conv_input, "weight"], ["output_final"], pads=[1, 1, 1, 1]))
    graph = helper.make_graph(nodes, "tiny_change", inputs, [output], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], producer_name="inspectops-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
