"""Shared pieces of training and evaluation on shapes-VQA: model presets, prompts, batches, quick accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from topv.testing.llava import LlavaShape

# The bundled model: CLIP-style tower 192 px / patch 16 (12x12 = 144 visual tokens after dropping CLS),
# 2-layer MLP projector, 8-layer Llama decoder. About 2.7M parameters.
PRESETS: dict[str, LlavaShape] = {
    "shapes-vqa": LlavaShape(
        hidden_size=128,
        intermediate_size=384,
        num_layers=8,
        num_heads=4,
        num_kv_heads=4,
        max_position_embeddings=512,
        vision_hidden_size=128,
        vision_intermediate_size=512,
        vision_layers=4,
        vision_heads=4,
        image_size=192,
        patch_size=16,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    ),
    # For tests: 48 px / patch 16 (9 visual tokens), two decoder layers.
    "test-tiny": LlavaShape(
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=2,
        max_position_embeddings=256,
        vision_hidden_size=32,
        vision_intermediate_size=64,
        vision_layers=1,
        vision_heads=2,
        image_size=48,
        patch_size=16,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    ),
}


def chat_prompt(processor: Any, question: str) -> str:
    """The generation prompt for one image and ``question``, from the processor's chat template."""
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(conversation, add_generation_prompt=True)


def num_image_tokens(model_config: Any) -> int:
    """Image tokens the processor expands ``<image>`` into (grid tokens, plus CLS with the "full" strategy)."""
    vision = model_config.vision_config
    grid = (vision.image_size // vision.patch_size) ** 2
    return grid + (1 if model_config.vision_feature_select_strategy == "full" else 0)


def encode_text(processor: Any, question: str, answer: str | None, image_tokens: int) -> list[int]:
    """Token ids of the prompt for ``question`` (``<image>`` expanded), then ``answer`` and ``</s>`` if given.

    Equal to ``processor(images=..., text=prompt + " " + answer + " </s>")["input_ids"]`` (tests check it),
    without running the image processor.
    """
    tokenizer = processor.tokenizer
    image_token = processor.image_token
    text = chat_prompt(processor, question).replace(image_token, image_token * image_tokens)
    if answer is not None:
        text = f"{text} {answer} {tokenizer.eos_token}"
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def pixel_values(processor: Any, images: Sequence[Any]) -> Any:
    """``(B, 3, H, W)`` float tensor: rescale + normalize of RGB images already at the model's resolution.

    Equal to ``processor.image_processor(images)`` for such images (resize and centre crop are no-ops;
    tests check it) and several times faster.
    """
    import numpy as np
    import torch

    ip = processor.image_processor
    size = ip.crop_size["height"] if isinstance(ip.crop_size, dict) else ip.crop_size.height
    arrays = []
    for im in images:
        im = im.convert("RGB")
        if im.size != (size, size):
            return ip(list(images), return_tensors="pt")["pixel_values"]
        arrays.append(np.asarray(im))
    # the same arithmetic as transformers' rescale (float64 multiply, then float32) and normalize (float32)
    x = (np.stack(arrays).astype(np.float64) * ip.rescale_factor).astype(np.float32)
    x = (x - np.asarray(ip.image_mean, dtype=np.float32)) / np.asarray(ip.image_std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@dataclass
class Batch:
    input_ids: Any
    attention_mask: Any
    labels: Any
    pixel_values: Any
    answer_positions: Any  # (B,) index of the last prompt token (predicts the answer's first token)
    answer_ids: Any  # (B,) first answer token
    image_index: Any = None  # (B,) row -> index into pixel_values; None: one image per row

    def model_inputs(self) -> dict[str, Any]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "pixel_values": self.pixel_values if self.image_index is None else self.pixel_values[self.image_index],
            "labels": self.labels,
        }


def make_batch(
    processor: Any,
    images: Sequence[Any],
    questions: Sequence[str],
    answers: Sequence[str],
    image_tokens: int,
    image_index: Sequence[int] | None = None,
) -> Batch:
    """Right-padded training batch; labels cover the answer tokens and ``</s>`` only.

    ``image_index[row]`` says which of ``images`` a row asks about (default: row i asks about image i).
    """
    import torch

    if image_index is None and len(images) != len(questions):
        raise ValueError(f"{len(images)} images for {len(questions)} questions; pass image_index")

    pad = processor.tokenizer.pad_token_id
    seqs, prompt_lens = [], []
    for q, a in zip(questions, answers):
        prompt = encode_text(processor, q, None, image_tokens)
        full = encode_text(processor, q, a, image_tokens)
        assert full[: len(prompt)] == prompt
        seqs.append(full)
        prompt_lens.append(len(prompt))
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    labels = torch.full((len(seqs), length), -100, dtype=torch.long)
    for i, (s, p) in enumerate(zip(seqs, prompt_lens)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, p : len(s)] = torch.tensor(s[p:])
    positions = torch.tensor([p - 1 for p in prompt_lens])
    answer_ids = torch.tensor([s[p] for s, p in zip(seqs, prompt_lens)])
    index = None if image_index is None else torch.tensor(list(image_index), dtype=torch.long)
    return Batch(ids, mask, labels, pixel_values(processor, images), positions, answer_ids, index)


def prefix_length(batch: Batch, image_token_id: int) -> int:
    """Length of the prefix every row shares: the tokens up to the last image token (``USER: <image>*N``)."""
    positions = (batch.input_ids[0] == image_token_id).nonzero()
    if not len(positions):
        raise ValueError("the batch has no image tokens")
    n = int(positions.max()) + 1
    if not (batch.input_ids[:, :n] == batch.input_ids[:1, :n]).all() or not batch.attention_mask[:, :n].all():
        raise ValueError("the rows do not share the prompt prefix up to the image tokens")
    return n


@dataclass
class Packed:
    """Several questions about one image packed into one row: ``USER: <image>*N`` once, then each
    question's own tokens, each seeing the shared prefix and itself only (a 4-D attention mask), at the
    position ids it would have alone."""

    input_ids: Any  # (B_img, L)
    attention_mask: Any  # (B_img, 1, L, L) bool
    position_ids: Any  # (B_img, L)
    labels: Any  # (B_img, L)
    answer_positions: Any  # (B,) flat index into (B_img * L) of each original row's last prompt token


def pack(batch: Batch, prefix: int) -> Packed:
    import torch

    assert batch.image_index is not None
    n_img = batch.pixel_values.shape[0]
    lengths = batch.attention_mask.sum(1).tolist()
    rows: list[list[int]] = [[] for _ in range(n_img)]
    for r, g in enumerate(batch.image_index.tolist()):
        rows[g].append(r)
    total = [prefix + sum(lengths[r] - prefix for r in rs) for rs in rows]
    width = max(total)
    ids = torch.zeros((n_img, width), dtype=torch.long)  # padding: id 0 (<pad>), masked out, unlabelled
    labels = torch.full((n_img, width), -100, dtype=torch.long)
    positions = torch.zeros((n_img, width), dtype=torch.long)
    segment = torch.full((n_img, width), -1, dtype=torch.long)
    answer_positions = torch.zeros(len(lengths), dtype=torch.long)
    for g, rs in enumerate(rows):
        ids[g, :prefix] = batch.input_ids[rs[0], :prefix]
        positions[g, :prefix] = torch.arange(prefix)
        segment[g, :prefix] = 0
        at = prefix
        for j, r in enumerate(rs, start=1):
            n = lengths[r] - prefix
            ids[g, at : at + n] = batch.input_ids[r, prefix : lengths[r]]
            labels[g, at : at + n] = batch.labels[r, prefix : lengths[r]]
            positions[g, at : at + n] = torch.arange(prefix, lengths[r])
            segment[g, at : at + n] = j
            answer_positions[r] = g * width + at + int(batch.answer_positions[r]) - prefix
            at += n
    q, k = segment.unsqueeze(2), segment.unsqueeze(1)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = causal & (k >= 0) & ((k == 0) | (k == q))
    mask[:, :, 0] |= q.squeeze(2) < 0  # padding queries attend to token 0 (their outputs are unused)
    return Packed(ids, mask.unsqueeze(1), positions, labels, answer_positions)


def forward(model: Any, batch: Batch, *, with_labels: bool = True) -> tuple[Any, Any]:
    """``(output, answer_logits)``: the model's own forward on a batch and, for each row, the logits at its
    last prompt token (which predict the answer's first token).

    Without ``image_index`` this is one plain ``model(...)`` call. With ``image_index`` (several questions
    about one image) the rows about one image are packed into one sequence (:func:`pack`): the prompt
    prefix they share, ``USER: <image>*N`` (vision tower, projector and every decoder layer on it), runs
    once, and each question's own tokens (question, ``ASSISTANT:``, answer, ``</s>``) attend to that prefix
    and to themselves only, at their usual position ids. With causal attention the prefix does not depend
    on the question, so the logits, the loss and the gradients are those of the per-row forward (tests
    compare them), computed several times faster.
    """
    import torch

    if batch.image_index is None:
        labels = batch.labels if with_labels else None
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=batch.pixel_values, labels=labels)
        rows = torch.arange(batch.input_ids.shape[0])
        return out, out.logits[rows, batch.answer_positions]
    packed = pack(batch, prefix_length(batch, model.config.image_token_id))
    out = model(
        input_ids=packed.input_ids,
        attention_mask=packed.attention_mask,
        position_ids=packed.position_ids,
        pixel_values=batch.pixel_values,
        labels=packed.labels if with_labels else None,
    )
    return out, out.logits.reshape(-1, out.logits.shape[-1])[packed.answer_positions]


def first_token_predictions(model: Any, batch: Batch) -> Any:
    """Greedy first answer token for each row (one forward pass, no generation loop)."""
    import torch

    with torch.no_grad():
        _, answer_logits = forward(model, batch, with_labels=False)
    return answer_logits.argmax(-1)
