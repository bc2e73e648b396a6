"""Build the peer-benchmark checkpoint: a random-weight LLaVA of topv's "cpu-bench" shape (CLIP-B/14-336,
576 visual tokens + a 12-layer hidden-768 Llama, vocab 32000) with a real byte-level BPE tokenizer.

Run with topv's venv (transformers 5.23):  .venv/bin/python benchmarks/peers/build_checkpoint.py OUT_DIR [INIT_RANGE]
(INIT_RANGE, default the shape's 0.02, whose greedy output is one token repeated; run.sh uses 0.1, which gives
32 distinct greedy tokens, so that the pruning-off token agreement with GenAI means something. Speed does not
depend on it.) Deterministic: the BPE is trained on the pinned transformers package's own text files.

* The tokenizer is a byte-level BPE (GPT-2 style) trained offline with `tokenizers` on text files of the
  installed Python packages (sorted, deterministic): openvino-tokenizers mis-converts a word-level
  tokenizer's whitespace split, so topv's test tokenizer cannot be used for GenAI.
  Specials first, as topv's test models: <pad>=0 <s>=1 </s>=2 <unk>=3 <image>=4; post-processor adds <s>.
* Chat template renders LLaVA-1.5's "USER: <image>\\n{question} ASSISTANT:", which is what GenAI's LLaVA
  path builds from the raw prompt "USER: <image>{question} ASSISTANT:" (it expands <image> into 576
  image tokens followed by a newline) with apply_chat_template=False.
* Weights are saved under the hub's LLaVA key layout (vision_tower.vision_model.*, multi_modal_projector.*,
  language_model.model.*, language_model.lm_head.*): transformers 5.5 (optimum-intel's) silently
  re-initialises the vision tower of a checkpoint saved by 5.23 with the new layout; 5.23 reads both.
* preprocessor_config.json (CLIP mean/std, 336 resize + crop) is written next to processor_config.json:
  GenAI reads processor_config.json only when it has a video_processor key, otherwise it silently
  normalises with mean 0 / std 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% else %}{{ item['text'] }}{% endif %}"
    "{% endfor %} "
    "{% else %}ASSISTANT: "
    "{% for item in message['content'] %}{{ item['text'] }}{% endfor %}</s>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
VOCAB = 32000


def corpus(limit_bytes: int = 24_000_000) -> list[str]:
    import transformers

    root = Path(transformers.__file__).parent  # the pinned transformers package's own files: the same everywhere
    files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".md", ".txt") and p.is_file())
    out, size = [], 0
    for p in files:
        if size >= limit_bytes:
            break
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        out.append(str(p))
        size += len(text)
    return out


def build_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train(corpus(), trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    assert [tok.token_to_id(t) for t in SPECIALS] == list(range(5)), [tok.token_to_id(t) for t in SPECIALS]
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})


def hub_key(key: str) -> str:
    """A LlavaForConditionalGeneration key as saved by transformers 5.23 (whatever prefix it wrote) in the hub's
    llava-1.5 layout, which transformers 5.5 maps correctly."""
    if key.startswith("model."):
        key = key[len("model."):]
    if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
        key = "vision_tower.vision_model." + key[len("vision_tower."):]
    elif key.startswith("language_model.") and not key.startswith(("language_model.model.", "language_model.lm_head.")):
        key = "language_model.model." + key[len("language_model."):]
    elif key.startswith("lm_head."):
        key = "language_model." + key
    return key


def to_hub_layout(folder: Path) -> None:
    from safetensors.numpy import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    print("saved by transformers with prefixes:", sorted({".".join(k.split(".")[:2]) for k in tensors}))
    save_file({hub_key(k): v for k, v in tensors.items()}, path, metadata={"format": "pt"})


def main(out: Path, init_range: float | None = None) -> None:
    import numpy as np
    import torch
    from transformers import LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from topv.testing.llava import CLIP_MEAN, CLIP_STD, SHAPES, llava_config

    t0 = time.perf_counter()
    shape = SHAPES["cpu-bench"]
    tokenizer = build_tokenizer()
    t1 = time.perf_counter()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": shape.image_size},
                                            crop_size={"height": shape.image_size, "width": shape.image_size},
                                            do_center_crop=True, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=shape.patch_size,
                               vision_feature_select_strategy=shape.vision_feature_select_strategy,
                               chat_template=CHAT_TEMPLATE, num_additional_image_tokens=1)
    if init_range:  # larger random weights: less degenerate greedy output (a sharper token-agreement check)
        shape = shape.replace(initializer_range=init_range)
    config = llava_config(shape, VOCAB)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    to_hub_layout(out)
    # GenAI's LLaVA preprocessing config (see the module docstring)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "processor_class": "LlavaProcessor",
        "do_resize": True, "size": {"shortest_edge": shape.image_size}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": shape.image_size, "width": shape.image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
        "patch_size": shape.patch_size, "vision_feature_select_strategy": shape.vision_feature_select_strategy,
    }, indent=2) + "\n")
    # the reloaded model (hub layout) must hold exactly the weights built
    again = LlavaForConditionalGeneration.from_pretrained(out).eval()
    want = model.state_dict()
    got = again.state_dict()
    bad = [k for k in want if not torch.equal(want[k], got[k])]
    assert not bad, f"{len(bad)} tensors differ after reload, e.g. {bad[:3]}"
    digest = {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() for k, v in want.items()}
    (out / "weights-digest.json").write_text(json.dumps(digest, indent=1) + "\n")
    print(f"tokenizer {t1 - t0:.1f}s, model {time.perf_counter() - t1:.1f}s; {sum(v.numel() for v in want.values()) / 1e6:.1f}M "
          f"parameters; reload check ok; {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: topv.testing
    main(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else None)
