"""Exact ONNX graph rewrites that let onnxruntime's CPU INT8 kernels cover the whole decoder.

onnxruntime's CPU provider has no integer ``ConvTranspose``: in a Q/DQ graph each
transposed convolution runs in float between a DequantizeLinear and a QuantizeLinear, and
because the integer convolutions around it run channels-last, onnxruntime also inserts layout
transposes of the full-resolution maps on both sides. On ChangeNet's decoder (two 4x4 stride-2
upsamplings, the second at 128x128 -> 256x256) that float island costs more than every INT8
convolution together.

A ``ConvTranspose`` with kernel 4, stride 2 and padding 1 is *exactly* a 3x3 convolution
(padding 1) with four times the output channels followed by a 2x ``DepthToSpace`` ("sub-pixel
convolution", Shi et al., CVPR 2016): output pixel ``(2i + a, 2j + b)`` only ever sees inputs
``i - 1 .. i + 1`` / ``j - 1 .. j + 1``, through kernel taps fixed by the phase ``(a, b)``.
The rewritten graph is mathematically the same function (only the float summation order
differs), quantizes as an ordinary convolution, and stays channels-last end to end.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Transposed-conv tap used by output phase ``a`` at 3x3 position ``u`` (input offset u - 1);
# missing pairs are taps that phase never uses (zero weights in the 3x3 kernel).
_TAP: dict[tuple[int, int], int] = {(0, 0): 3, (0, 1): 1, (1, 1): 2, (1, 2): 0}


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv_geometry_is(node: onnx.NodeProto, kernel: int, stride: int) -> bool:
    """A square ``kernel`` conv/deconv with ``stride``, padding 1, no dilation, groups or auto-pad."""
    attrs = _attributes(node)
    return (
        list(attrs.get("kernel_shape", [])) == [kernel, kernel]
        and list(attrs.get("strides", [1, 1])) == [stride, stride]
        and list(attrs.get("pads", [0, 0, 0, 0])) == [1, 1, 1, 1]
        and list(attrs.get("dilations", [1, 1])) == [1, 1]
        and int(attrs.get("group", 1)) == 1  # type: ignore[call-overload]
        and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
    )


def _is_k4_s2_p1(node: onnx.NodeProto) -> bool:
    attrs = _attributes(node)
    return (
        _conv_geometry_is(node, kernel=4, stride=2)
        and not attrs.get("output_padding")
        and not attrs.get("output_shape")
    )


def subpixel_weights(weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """3x3 conv weights ``(4 * O, C, 3, 3)`` and bias ``(4 * O,)`` equal to a k4/s2/p1 transposed conv.

    ``weight`` is the ``ConvTranspose`` weight ``(C, O, 4, 4)``. Output channel ``o * 4 + a * 2 + b``
    holds phase ``(a, b)`` of channel ``o``: the order ``DepthToSpace`` mode ``CRD`` (= PyTorch's
    ``pixel_shuffle``) puts back in place.
    """
    in_ch, out_ch = weight.shape[:2]
    conv = np.zeros((out_ch, 2, 2, in_ch, 3, 3), dtype=weight.dtype)
    for (a, u), kh in _TAP.items():
        for (b, v), kw in _TAP.items():
            conv[:, a, b, :, u, v] = weight[:, :, kh, kw].T
    new_bias = np.zeros(out_ch, dtype=weight.dtype) if bias is None else bias.astype(weight.dtype)
    return conv.reshape(out_ch * 4, in_ch, 3, 3), np.repeat(new_bias, 4)


def convtranspose_to_subpixel(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Copy of ``model`` with every constant-weight k4/s2/p1 ``ConvTranspose`` as Conv + DepthToSpace.

    Returns the new model and how many nodes were rewritten; other ``ConvTranspose`` nodes are kept.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    rewritten = 0
    replaced: set[str] = set()
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "ConvTranspose" or node.input[1] not in inits or not _is_k4_s2_p1(node):
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        has_bias = len(node.input) > 2 and node.input[2] != ""
        if has_bias and node.input[2] not in inits:
            new_nodes.append(node)
            continue
        bias = numpy_helper.to_array(inits[node.input[2]]) if has_bias else None
        conv_w, conv_b = subpixel_weights(weight, bias)
        base = node.name or node.output[0]
        w_name, b_name, mid = f"{base}_subpixel_weight", f"{base}_subpixel_bias", f"{base}_subpixel_out"
        graph.initializer.extend([numpy_helper.from_array(conv_w, w_name), numpy_helper.from_array(conv_b, b_name)])
        new_nodes.append(
            helper.make_node(
                "Conv",
                [node.input[0], w_name, b_name],
                [mid],
                name=f"{base}_subpixel_conv",
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[1, 1],
            )
        )
        new_nodes.append(
            helper.make_node(
                "DepthToSpace", [mid], [node.output[0]], name=f"{base}_subpixel_d2s", blocksize=2, mode="CRD"
            )
        )
        replaced.update(node.input[1:3])
        rewritten += 1
    _replace_nodes(graph, new_nodes, replaced)
    return model, rewritten


def _zero_or_absent(node: onnx.NodeProto, index: int, inits: dict[str, onnx.TensorProto]) -> bool:
    if len(node.input) <= index or not node.input[index]:
        return True
    return node.input[index] in inits and not np.any(numpy_helper.to_array(inits[node.input[index]]))


def fuse_pad_into_conv(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Copy of ``model`` with each constant zero ``Pad`` that feeds only a ``Conv`` folded into its pads.

    Frozen SAME padding (:mod:`components.export.static_padding`) exports as ``Pad -> Conv``; as
    separate nodes the quantizer gives the ``Pad`` its own Q/DQ and onnxruntime runs it as a
    full copy of the feature map. Folded, it is the convolution's (asymmetric) border. Returns the
    new model and the number of pads folded.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    removed: set[int] = set()
    folded = 0
    for index, node in enumerate(graph.node):
        if node.op_type != "Pad" or node.output[0] in graph_outputs:
            continue
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != node.output[0]:
            continue
        conv = users[0]
        attrs = _attributes(node)
        if (
            attrs.get("mode", b"constant") not in (b"constant", "constant")
            or len(node.input) < 2
            or node.input[1] not in inits
        ):
            continue
        if not _zero_or_absent(node, 2, inits):  # a non-zero pad value is not a convolution border
            continue
        if len(node.input) > 3 and node.input[3]:  # explicit axes: not produced by the exporter
            continue
        pads = numpy_helper.to_array(inits[node.input[1]]).astype(np.int64).tolist()
        if len(pads) != 8 or any(p < 0 for p in pads) or pads[0] or pads[1] or pads[4] or pads[5]:
            continue
        conv_attrs = _attributes(conv)
        if conv_attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        old = list(conv_attrs.get("pads", [0, 0, 0, 0]))  # type: ignore[call-overload]
        new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
        kept = [a for a in conv.attribute if a.name != "pads"]
        del conv.attribute[:]
        conv.attribute.extend([*kept, helper.make_attribute("pads", new)])
        conv.input[0] = node.input[0]
        removed.add(index)
        folded += 1
    nodes = [n for i, n in enumerate(graph.node) if i not in removed]
    del graph.node[:]
    graph.node.extend(nodes)
    return model, folded


def _is_plain_3x3(node: onnx.NodeProto) -> bool:
    return _conv_geometry_is(node, kernel=3, stride=1)


def narrow_conv_to_shifted_sum(model: onnx.ModelProto, max_out_channels: int = 4) -> tuple[onnx.ModelProto, int]:
    """Copy of ``model`` with each 3x3 ``Conv`` of at most ``max_out_channels`` outputs as 1x1 conv + shifted sum.

    A 3x3 convolution with very few output channels (ChangeNet's classifier: 64 -> 2 at full
    resolution) is the slowest integer kernel of onnxruntime's CPU provider: it builds a 9x
    im2col copy of its input only to multiply it by a 2-column matrix. The same function is a
    1x1 convolution producing ``9 * O`` maps (one per kernel tap), zero-padded by one pixel,
    whose nine tap-shifted ``O``-channel windows are summed:
    ``y[o, i, j] = sum_{u,v} z[(u, v, o), i + u - 1, j + v - 1]``. The bias rides on the centre tap,
    whose window never reads padding. Returns the new model and how many convolutions changed.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    rewritten = 0
    replaced: set[str] = set()
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        weight_init = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if weight_init is None or not _is_plain_3x3(node):
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(weight_init)
        out_ch, in_ch = weight.shape[:2]
        has_bias = len(node.input) > 2 and node.input[2] != ""
        if out_ch > max_out_channels or (has_bias and node.input[2] not in inits):
            new_nodes.append(node)
            continue
        bias = numpy_helper.to_array(inits[node.input[2]]) if has_bias else np.zeros(out_ch, weight.dtype)
        taps = weight.transpose(2, 3, 0, 1).reshape(9 * out_ch, in_ch, 1, 1)  # channel (u * 3 + v) * O + o
        tap_bias = np.zeros(9 * out_ch, dtype=weight.dtype)
        tap_bias[4 * out_ch : 5 * out_ch] = bias  # centre tap (u = v = 1)
        base = node.name or node.output[0]
        names = {k: f"{base}_shifted_{k}" for k in ("w", "b", "taps", "pads", "padded")}
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.ascontiguousarray(taps), names["w"]),
                numpy_helper.from_array(tap_bias, names["b"]),
                numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), names["pads"]),
            ]
        )
        new_nodes.append(
            helper.make_node(
                "Conv",
                [node.input[0], names["w"], names["b"]],
                [names["taps"]],
                name=f"{base}_taps",
                kernel_shape=[1, 1],
            )
        )
        new_nodes.append(
            helper.make_node(
                "Pad", [names["taps"], names["pads"]], [names["padded"]], name=f"{base}_taps_pad", mode="constant"
            )
        )
        windows = []
        for u in range(3):
            for v in range(3):
                k = u * 3 + v
                bounds = {
                    "starts": [k * out_ch, u, v],
                    "ends": [(k + 1) * out_ch, -2 + u if u < 2 else 2**62, -2 + v if v < 2 else 2**62],
                }
                for key, values in bounds.items():
                    graph.initializer.append(
                        numpy_helper.from_array(np.array(values, dtype=np.int64), f"{base}_shift{k}_{key}")
                    )
                axes = f"{base}_shift_axes"
                if k == 0:
                    graph.initializer.append(numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), axes))
                window = f"{base}_shift{k}"
                new_nodes.append(
                    helper.make_node(
                        "Slice",
                        [names["padded"], f"{base}_shift{k}_starts", f"{base}_shift{k}_ends", axes],
                        [window],
                        name=window,
                    )
                )
                windows.append(window)
        new_nodes.append(helper.make_node("Sum", windows, [node.output[0]], name=f"{base}_shifted_sum"))
        replaced.update(node.input[1:3])
        rewritten += 1
    _replace_nodes(graph, new_nodes, replaced)
    return model, rewritten


__all__ = ["convtranspose_to_subpixel", "fuse_pad_into_conv", "narrow_conv_to_shifted_sum", "subpixel_weights"]


def _replace_nodes(graph: onnx.GraphProto, new_nodes: list[onnx.NodeProto], replaced: set[str]) -> None:
    """Swap in the rewritten node list and drop the initializers that only the replaced nodes used."""
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for n in graph.node for name in n.input}
    kept = [t for t in graph.initializer if t.name in used or t.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept)
