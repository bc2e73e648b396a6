"""The TensorRT 10.x ONNX parser's supported operators, as data (no imports beyond the standard library).

Source: onnx/onnx-tensorrt, ``docs/operators.md`` for TensorRT 10.15 ("TensorRT 10.15 supports operators in
the inclusive range of opset 9 to opset 24"), the operator support matrix transcribed row for row below
(operator, supported, supported types, restrictions; ``<br />`` in the Resize row replaced by spaces).
The same file for TensorRT 10.0 states the range opset 9 to opset 20.

``since`` is the first TensorRT 10.x release known to parse the operator:

* ``"10.0"``: listed as supported in the TensorRT 8.5 table of the same file, or added by a 8.6/9.x
  release according to onnx-tensorrt's ``docs/Changelog.md`` (GroupNormalization, LayerNormalization,
  IsInf: 8.6; Hardmax: 9.2).
* a later 10.x minor: added by that release according to ``docs/Changelog.md`` (DeformConv 10.1;
  BlackmanWindow, HammingWindow, HannWindow 10.4; STFT 10.5; RotaryEmbedding, RMSNormalization,
  TensorScatter 10.15).
* ``None``: listed in the 10.15 table but topv has no record of the release that added it (Attention,
  CastLike, Gelu, Mish); a check against an older 10.x target reports it as a warning.

Supported types are the 10.15 table's for every 10.x target. Data types (from the same file): TensorRT
supports DOUBLE, FLOAT32, FLOAT16, BFLOAT16, FP8, FP4, INT32, INT64, INT8, INT4, UINT8 and BOOL;
"There is limited support for DOUBLE type. TensorRT will attempt to cast DOUBLE down to FLOAT, clamping
values to +-FLT_MAX if necessary"; INT8, INT4, FP8 and FP4 are quantized types (only through
quantization from a wider floating-point type); UINT8 only as a network input or output.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = {
    "repository": "https://github.com/onnx/onnx-tensorrt",
    "file": "docs/operators.md",
    "table_version": "10.15",
    "changelog": "docs/Changelog.md",
}

#: Known opset ranges of the parser, by the TensorRT release whose operators.md states them.
KNOWN_OPSET_RANGES: dict[str, tuple[int, int]] = {"10.0": (9, 20), "10.15": (9, 24)}

#: The TopK row of the 10.15 table: "`K` input must be less than 3840".
TOPK_MAX_K = 3840

#: ONNX element types TensorRT can hold in a tensor, by ONNX TensorProto name -> the table's short name.
TRT_TYPE_NAMES: dict[str, str] = {
    "FLOAT": "FP32",
    "FLOAT16": "FP16",
    "BFLOAT16": "BF16",
    "INT32": "INT32",
    "INT64": "INT64",
    "BOOL": "BOOL",
    "INT8": "INT8",
    "UINT8": "UINT8",
    "FLOAT8E4M3FN": "FP8",
    "INT4": "INT4",
    "FLOAT4E2M1": "FP4",
}

#: Types the parser converts instead of rejecting: DOUBLE -> FLOAT, clamped to +-FLT_MAX (onnx-tensorrt
#: ``importerUtils.cpp`` ``convertDtype`` maps DOUBLE to kFLOAT; ``WeightsContext.cpp`` ``convertDouble`` casts
#: DOUBLE weights down). UINT8 weights become INT32 (``convertUINT8``).
DOWNCAST_TYPES: dict[str, str] = {"DOUBLE": "FLOAT"}

#: Types the parser accepts beyond the table's "Supported Types" column, with the evidence. The column is
#: documentation and lags the importers, so topv reports a type outside it as a warning, not an error.
TYPE_ADDENDA: dict[str, tuple[tuple[str, ...], str]] = {
    "Clip": (
        ("INT32", "INT64"),
        "onnx-tensorrt builtin_op_importers.cpp, Clip: INT32/INT64 inputs take the elementwise path (\"This version "
        "of TensorRT only supports floating-point, INT32, or INT64 inputs for Clip\")",
    ),
    "CumSum": (
        ("INT32", "INT64"),
        "TensorRT operator reference, Cumulative layer: SUM takes int32, int64, float16, float32, bfloat16 (the "
        "older loop-based CumSum importer adds slices with an elementwise SUM, which also takes INT32/INT64)",
    ),
}

#: Quantized types: usable only through Q/DQ from a wider floating-point type.
QUANTIZED_TYPES = frozenset({"INT8", "INT4", "FP8", "FP4"})


@dataclass(frozen=True)
class OpSupport:
    """One row of the operator support matrix."""

    supported: bool
    types: tuple[str, ...] = ()
    restrictions: str = ""
    since: str | None = None


def _yes(types: tuple[str, ...], restrictions: str = "", since: str | None = None) -> OpSupport:
    return OpSupport(True, types, restrictions, since)


def _no(note: str = "") -> OpSupport:
    return OpSupport(False, (), note, None)


OPERATORS: dict[str, OpSupport] = {
    'Abs': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Acos': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Acosh': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Add': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'AffineGrid': _no(),
    'And': _yes(('BOOL',), since='10.0'),
    'ArgMax': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'ArgMin': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Asin': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Asinh': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Atan': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Atanh': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Attention': _yes(('FP32', 'FP16', 'BF16', 'INT8', 'FP8'), restrictions="`Q`, `K`, `V` and `attn_mask ` must be 4D. `past_key`, `past_value` and `nonpad_kv_seqlen` inputs are unsupported. `present_key`, `present_value` and `qk_matmul_output` outputs are unsupported. `qk_matmul_output_mode` and `softcap` attributes are unsupported. `q_num_heads` and `kv_num_heads` attributes are supported via being specified as the second dimension of `Q` and `K`/`V`'s shapes respectively.", since=None),
    'AveragePool': _yes(('FP32', 'FP16', 'BF16'), restrictions='2D or 3D Pooling only. `dilations` must be empty or all ones', since='10.0'),
    'BatchNormalization': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Bernoulli': _no(),
    'BitShift': _no(),
    'BitwiseAnd': _no(),
    'BitwiseNot': _no(),
    'BitwiseOr': _no(),
    'BitwiseXor': _no(),
    'BlackmanWindow': _yes(('FP32', 'FP16'), since='10.4'),
    'Cast': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'UINT8', 'BOOL'), since='10.0'),
    'CastLike': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'UINT8', 'BOOL'), since=None),
    'Ceil': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Col2Im': _no(),
    'Celu': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'CenterCropPad': _no(),
    'Clip': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Compress': _no(),
    'Concat': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'ConcatFromSequence': _no(),
    'Constant': _yes(('FP32', 'FP16', 'BF16', 'FP8', 'FP4', 'INT4', 'INT32', 'INT64', 'BOOL'), restrictions='`sparse_value`, `value_string`, and `value_strings` attributes are unsupported.', since='10.0'),
    'ConstantOfShape': _yes(('FP32', 'FP16', 'BF16', 'FP8', 'FP4', 'INT4', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'Conv': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'ConvInteger': _no(),
    'ConvTranspose': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Cos': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Cosh': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'CumSum': _yes(('FP32', 'FP16', 'BF16'), restrictions='`axis` must be a build-time constant', since='10.0'),
    'DFT': _no(),
    'DeformConv': _yes(('FP32', 'FP16'), restrictions='`input` must have 1D or 2D spatial dimensions. `pads` for the beginning and end along each spatial axis must be the same', since='10.1'),
    'DepthToSpace': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'DequantizeLinear': _yes(('INT8', 'FP8', 'FP4', 'INT4'), restrictions='`x_zero_point` must be zero', since='10.0'),
    'Det': _no(),
    'Div': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Dropout': _yes(('FP32', 'FP16', 'BF16'), restrictions='`is_training` must be an initializer and evaluate to False.', since='10.0'),
    'DynamicQuantizeLinear': _no(),
    'Einsum': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Elu': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Equal': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Erf': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Exp': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Expand': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'EyeLike': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), restrictions='`input` must have static dimensions', since='10.0'),
    'Flatten': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'Floor': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Gather': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'GatherElements': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'GatherND': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'Gelu': _yes(('FP32', 'FP16', 'BF16', 'INT8', 'INT32', 'INT64'), since=None),
    'Gemm': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'GlobalAveragePool': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'GlobalLpPool': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'GlobalMaxPool': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Greater': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'GreaterOrEqual': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'GridSample': _yes(('FP32', 'FP16'), restrictions='Input must be 4D input.', since='10.0'),
    'GroupNormalization': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'GRU': _yes(('FP32', 'FP16', 'BF16'), restrictions='For bidirectional GRUs, activation functions must be the same for both the forward and reverse pass', since='10.0'),
    'HammingWindow': _yes(('FP32', 'FP16'), since='10.4'),
    'HannWindow': _yes(('FP32', 'FP16'), since='10.4'),
    'HardSigmoid': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'HardSwish': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Hardmax': _yes(('FP32', 'FP16', 'BF16'), restrictions='`axis` dimension of input must be a build-time constant', since='10.0'),
    'Identity': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'If': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), restrictions='Output tensors of the two conditional branches must have the same rank and must have different names', since='10.0'),
    'ImageScaler': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'ImageDecoder': _no(),
    'InstanceNormalization': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'IsInf': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'IsNaN': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'LayerNormalization': _yes(('FP32', 'FP16', 'BF16'), restrictions='Only the first output `Y` is supported.', since='10.0'),
    'LeakyRelu': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Less': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'LessOrEqual': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Log': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'LogSoftmax': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Loop': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), restrictions='Scan output length cannot be dynamic. The shape of Loop carried dependencies must be the same across all loop iterations.', since='10.0'),
    'LRN': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'LSTM': _yes(('FP32', 'FP16', 'BF16'), restrictions='For bidirectional LSTMs, activation functions must be the same for both the forward and reverse pass. `input_forget` attribute must be 0. `layout` attribute must be 0.', since='10.0'),
    'LpNormalization': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'LpPool': _yes(('FP32', 'FP16', 'BF16'), restrictions='`dilations` must be empty or all ones', since='10.0'),
    'MatMul': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'MatMulInteger': _no(),
    'Max': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'MaxPool': _yes(('FP32', 'FP16', 'BF16'), restrictions='2D or 3D pooling only. `Indices` output tensor unsupported. `dilations` must be empty or all ones', since='10.0'),
    'MaxRoiPool': _no(),
    'MaxUnpool': _no(),
    'Mean': _yes(('FP32', 'FP16', 'BF16', 'FP8', 'INT32', 'INT64'), since='10.0'),
    'MeanVarianceNormalization': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'MelWeightMatrix': _no(),
    'Min': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Mish': _yes(('FP32', 'FP16'), since=None),
    'Mod': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Mul': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Multinomial': _no(),
    'Neg': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'NegativeLogLikelihoodLoss': _no(),
    'NonMaxSuppression': _yes(('FP32', 'FP16'), since='10.0'),
    'NonZero': _yes(('FP32', 'FP16'), since='10.0'),
    'Not': _yes(('BOOL',), since='10.0'),
    'OneHot': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), restrictions='`depth` must be a build-time constant', since='10.0'),
    'Optional': _no(),
    'OptionalGetElement': _no(),
    'OptionalHasElement': _no(),
    'Or': _yes(('BOOL',), since='10.0'),
    'Pad': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'ParametricSoftplus': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Pow': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'PRelu': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'QLinearConv': _no(),
    'QLinearMatMul': _no(),
    'QuantizeLinear': _yes(('FP32', 'FP16', 'BF16'), restrictions='`y_zero_point` must be 0', since='10.0'),
    'RandomNormal': _yes(('FP32', 'FP16', 'BF16'), restrictions='`seed` value is ignored by TensorRT', since='10.0'),
    'RandomNormalLike': _yes(('FP32', 'FP16', 'BF16'), restrictions='`seed` value is ignored by TensorRT', since='10.0'),
    'RandomUniform': _yes(('FP32', 'FP16', 'BF16'), restrictions='`seed` value is ignored by TensorRT', since='10.0'),
    'RandomUniformLike': _yes(('FP32', 'FP16', 'BF16'), restrictions='`seed` value is ignored by TensorRT', since='10.0'),
    'Range': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Reciprocal': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'ReduceL1': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`axes` must be an initializer', since='10.0'),
    'ReduceL2': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`axes` must be an initializer', since='10.0'),
    'ReduceLogSum': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`axes` must be an initializer', since='10.0'),
    'ReduceLogSumExp': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`axes` must be an initializer', since='10.0'),
    'ReduceMax': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`axes` must be an initializer', since='10.0'),
    'ReduceMean': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`axes` must be an initializer', since='10.0'),
    'ReduceMin': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`axes` must be an initializer', since='10.0'),
    'ReduceProd': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`axes` must be an initializer', since='10.0'),
    'ReduceSum': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`axes` must be an initializer', since='10.0'),
    'ReduceSumSquare': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`axes` must be an initializer', since='10.0'),
    'RegexFullMatch': _no(),
    'Relu': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Reshape': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'Resize': _yes(('FP32', 'FP16', 'BF16'), restrictions='Supported resize transformation modes: `half_pixel`, `pytorch_half_pixel`, `tf_half_pixel_for_nn`, `asymmetric`, and `align_corners`. Supported resize modes: `nearest`, `linear`. Supported nearest modes: `floor`, `ceil`, `round_prefer_floor`, `round_prefer_ceil`. Supported aspect ratio policy: `stretch`. When `scales` is a tensor input, `axes` must be an iota vector of length rank(input). Antialiasing is not supported.', since='10.0'),
    'ReverseSequence': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'RMSNormalization': _yes(('FP32', 'FP16', 'BF16'), since='10.15'),
    'RNN': _yes(('FP32', 'FP16', 'BF16'), restrictions='For bidirectional RNNs, activation functions must be the same for both the forward and reverse pass', since='10.0'),
    'RoiAlign': _yes(('FP32', 'FP16'), since='10.0'),
    'RotaryEmbedding': _yes(('FP32', 'FP16', 'BF16'), restrictions='`position_ids` must be INT64', since='10.15'),
    'Round': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'STFT': _yes(('FP32',), restrictions='`frame_step` and `window` must be an initializer. Input must be real-valued.', since='10.5'),
    'ScaledTanh': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Scan': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Scatter': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'ScatterElements': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'ScatterND': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`reduction` other than `none` is not supported', since='10.0'),
    'Selu': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'SequenceAt': _no(),
    'SequenceConstruct': _no(),
    'SequenceEmpty': _no(),
    'SequenceErase': _no(),
    'SequenceInsert': _no(),
    'SequenceLength': _no(),
    'SequenceMap': _no(),
    'Shape': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'Shrink': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Sigmoid': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Sign': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Sin': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Sinh': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Size': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'Slice': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'Softmax': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'SoftmaxCrossEntropyLoss': _no(),
    'Softplus': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Softsign': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'SpaceToDepth': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Split': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'SplitToSequence': _no(),
    'Sqrt': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Squeeze': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), restrictions='`axes` must be resolvable to a constant.', since='10.0'),
    'StringConcat': _no(),
    'StringNormalizer': _no(),
    'StringSplit': _no(),
    'Sub': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Sum': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), since='10.0'),
    'Tan': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Tanh': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'TensorScatter': _yes(('FP32', 'FP16', 'BF16', 'INT32'), restrictions='`past_cache` and `update` must be 4D. `axis` must be -2.', since='10.15'),
    'TfIdfVectorizer': _no(),
    'ThresholdedRelu': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Tile': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'TopK': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64'), restrictions='`sorted` must be 1. `K` input must be less than 3840.', since='10.0'),
    'Transpose': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'Trilu': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'Unique': _no(),
    'Unsqueeze': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), restrictions='`axes` must be resolvable to a constant.', since='10.0'),
    'Upsample': _yes(('FP32', 'FP16', 'BF16'), since='10.0'),
    'Where': _yes(('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL'), since='10.0'),
    'Xor': _yes(('BOOL',), since='10.0'),
}


def parse_version(text: str) -> tuple[int, int]:
    """``"10"``, ``"10.3"`` or ``"10.3.0.26"`` -> ``(major, minor)``; a bare major means minor 0.

    Raises:
        ValueError: not a version number.
    """
    parts = str(text).strip().lstrip("v").split(".")
    try:
        major = int(parts[0])
        minor = int(parts[1]) if len(parts) > 1 and parts[1] not in ("", "x") else 0
    except ValueError:
        raise ValueError(f"{text!r} is not a TensorRT version such as 10, 10.3 or 10.3.0") from None
    return major, minor


def opset_range(version: tuple[int, int]) -> tuple[int, int, int]:
    """``(min_opset, confirmed_max, possible_max)`` for a TensorRT 10.x release.

    ``confirmed_max`` comes from the newest known table at or below ``version``; ``possible_max`` from the
    newest table overall (a release between two known ones may accept opsets up to it; topv cannot tell).
    """
    known = sorted((parse_version(v), rng) for v, rng in KNOWN_OPSET_RANGES.items())
    lo, confirmed = known[0][1]
    for v, (low, high) in known:
        if v <= version:
            lo, confirmed = low, high
    possible = max(high for _, (_, high) in known) if version < known[-1][0] else confirmed
    return lo, confirmed, possible


def available(op: OpSupport, version: tuple[int, int]) -> bool | None:
    """Whether a supported operator is known to be parsed by ``version``; None when unknown."""
    if not op.supported:
        return False
    if op.since is None:
        return True if version >= parse_version(SOURCE["table_version"]) else None
    return version >= parse_version(op.since)
