"""The ONNX Runtime pipeline: errors, streaming, sampling, thread safety and steady memory."""

import json
import threading

import pytest

import topv
from topv.errors import (
    ArtifactError,
    BusyError,
    ChecksumMismatchError,
    ImageError,
    IncompatibleArtifactError,
    InputError,
    PromptTooLongError,
)
from topv.testing.llava import LlavaShape
from topv.runtime.pipeline import Pipeline

SHAPE = LlavaShape(num_kv_heads=2, image_size=84, initializer_range=0.2)  # 36 visual tokens


@pytest.fixture(scope="module")
def folder(exports):
    return exports.export("runtime-6x6", SHAPE, keep=12, layer=2, max_prompt_tokens=60, max_new_tokens=24)


@pytest.fixture(scope="module")
def pipe(folder):
    return Pipeline.load(folder, threads=1)


def test_prompt_longer_than_the_static_cache(pipe, scene_image):
    long_prompt = " ".join(f"w{i}" for i in range(40))
    with pytest.raises(PromptTooLongError, match="exported for at most 60.*--max-prompt-tokens"):
        pipe.generate(scene_image, long_prompt)


def test_more_new_tokens_than_exported(pipe, scene_image):
    with pytest.raises(InputError, match="exceeds the 24 new tokens"):
        pipe.generate(scene_image, "w1", max_new_tokens=25)


def test_bad_images(pipe, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00\x01 definitely not a jpeg")
    with pytest.raises(ImageError, match="not an image"):
        pipe.generate(bad, "w1")
    with pytest.raises(ImageError, match="does not exist"):
        pipe.generate(tmp_path / "missing.png", "w1")


def _copy(folder, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


def test_checksum_mismatch(folder, tmp_path):
    dst = _copy(folder, tmp_path)
    weights = dst / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="weights.bin does not match its SHA-256"):
        Pipeline.load(dst)


def test_truncated_file(folder, tmp_path):
    dst = _copy(folder, tmp_path)
    path = dst / "decode_step.onnx"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="decode_step.onnx has 100 bytes .* truncated"):
        Pipeline.load(dst)


def test_incompatible_version_and_missing_manifest(folder, tmp_path):
    dst = _copy(folder, tmp_path)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["format"] = 99
    manifest["topv_version"] = "9.0.0"
    (dst / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleArtifactError, match="topv 9.0.0 in artifact format 99.*Re-export"):
        Pipeline.load(dst)
    (dst / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Pipeline.load(dst)
    with pytest.raises(ArtifactError, match="does not exist"):
        Pipeline.load(dst / "nothing-here")


def test_unknown_backend(folder):
    with pytest.raises(InputError, match="Unknown backend 'cuda'"):
        Pipeline.load(folder, "cuda")


def test_stream_pieces_add_up_to_the_text(pipe, scene_image):
    result = pipe.generate(scene_image, "w1 w2", max_new_tokens=12)
    stream = pipe.generate(scene_image, "w1 w2", max_new_tokens=12, stream=True)
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == result.text
    assert stream.result.token_ids == result.token_ids
    timings = result.timings
    assert set(timings) >= {"vision", "prefill_head", "prune", "prefill_tail", "decode", "ttft", "total"}
    assert len(timings["decode"]) == len(result.token_ids) - 1


def test_sampling_is_reproducible_and_is_the_shared_sampler(pipe, scene_image):
    """Sampled tokens are compared on the same kernels only (across kernels a draw near a probability boundary may
    fall either way): the same seed gives the same tokens, and they are what ``topv.sampling`` (the reference's
    sampler too) draws from this backend's own logits, step by step."""
    from topv.export.validate import teacher_forced_logits
    from topv.sampling import SamplingConfig, TokenSampler

    kwargs = dict(max_new_tokens=16, temperature=1.3, top_p=0.9, seed=5)
    a = pipe.generate(scene_image, "w1 w2", **kwargs)
    b = pipe.generate(scene_image, "w1 w2", **kwargs)
    assert a.token_ids == b.token_ids
    assert a.token_ids != pipe.generate(scene_image, "w1 w2", max_new_tokens=16).token_ids  # it did sample
    logits, _ = teacher_forced_logits(pipe, pipe.prepare_inputs(scene_image, "w1 w2"), a.token_ids)
    sampler = TokenSampler(SamplingConfig(temperature=1.3, top_p=0.9, seed=5))
    assert [sampler(row) for row in logits] == a.token_ids


def test_threads_get_the_tokens_they_would_get_alone(folder, scene_image):
    pipe = Pipeline.load(folder, threads=1, max_concurrency=2)
    prompts = ["w1 w2", "w7", "w3 w4 w5", "w9 w9", "w11", "w2 w8"]
    alone = [pipe.generate(scene_image, p, max_new_tokens=10).token_ids for p in prompts]
    results = [None] * len(prompts)

    def work(i):
        results[i] = pipe.generate(scene_image, prompts[i], max_new_tokens=10).token_ids

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == alone


def test_abandoned_stream_returns_its_kv_state(pipe, scene_image):
    stream = pipe.generate(scene_image, "w1", max_new_tokens=8, stream=True)
    next(stream)
    stream.close()
    # With max_concurrency=1 a leaked state would block this call forever.
    assert pipe.generate(scene_image, "w1", max_new_tokens=2).token_ids


@pytest.mark.slow
def test_a_thousand_generations_do_not_grow_memory(pipe, scene_image):
    import gc
    import tracemalloc

    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    for _ in range(50):
        pipe.generate(scene_image, "w1 w2", max_new_tokens=3)
    gc.collect()
    rss0 = proc.memory_info().rss
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for _ in range(1000):
        pipe.generate(scene_image, "w1 w2", max_new_tokens=3)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    python_growth = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    rss_growth = proc.memory_info().rss - rss0
    assert python_growth < 512 * 1024, f"Python heap grew by {python_growth} bytes over 1000 generations"
    assert rss_growth < 32 * 1024 * 1024, f"RSS grew by {rss_growth / 1e6:.1f} MB over 1000 generations"


def test_torch_backend_gives_the_same_tokens(folder, pipe, scene_image, exports):
    from tests._helpers import assert_decided, reference_trace

    torch_pipe = Pipeline.load(folder, "torch", threads=1)
    for prompt in ("w1 w2", "w4 w4 w6"):  # different kernels: only where the reference's margins decide them
        assert_decided(reference_trace(str(exports.model_dir("runtime-6x6", SHAPE)), scene_image, prompt, keep=12, layer=2,
                                       steps=12), keep=12, what=prompt)
        a = pipe.generate(scene_image, prompt, max_new_tokens=12)
        b = torch_pipe.generate(scene_image, prompt, max_new_tokens=12)
        assert (b.token_ids, b.kept_indices) == (a.token_ids, a.kept_indices)


def test_torch_backend_needs_the_source_checkpoint(folder, tmp_path):
    with pytest.raises(ArtifactError, match="model_dir="):
        Pipeline.load(folder, "torch", model_dir=tmp_path)


def test_ignore_eos_generates_exactly_max_new_tokens(pipe, scene_image):
    free = pipe.generate(scene_image, "w1 w2", max_new_tokens=24)
    stop = free.token_ids[2]
    stopped = pipe.generate(scene_image, "w1 w2", max_new_tokens=24, stop_token_ids=[stop])
    assert len(stopped.token_ids) == free.token_ids.index(stop) + 1
    forced = pipe.generate(scene_image, "w1 w2", max_new_tokens=24, stop_token_ids=[stop], ignore_eos=True)
    assert len(forced.token_ids) == 24 and forced.token_ids[:len(free.token_ids)] == free.token_ids


def test_a_half_read_stream_never_blocks_the_next_request(folder, scene_image):
    pipe = Pipeline.load(folder, threads=1)
    alone = pipe.generate(scene_image, "w1 w2", max_new_tokens=6).token_ids
    s = pipe.generate(scene_image, "w1 w2", max_new_tokens=6, stream=True)
    next(s)
    # this thread holds the only KV state in an unfinished stream: waiting would never end, so fail at once
    with pytest.raises(BusyError, match="unfinished stream"):
        pipe.generate(scene_image, "w1 w2", max_new_tokens=6)
    # another thread waits for the state; it gets it when the stream is dropped (a client that went away)
    got = []
    worker = threading.Thread(target=lambda: got.append(pipe.generate(scene_image, "w1 w2", max_new_tokens=6).token_ids))
    worker.start()
    worker.join(0.5)
    assert worker.is_alive()  # still waiting, not failed
    del s
    worker.join(30)
    assert got == [alone]
    # a stream that was never started gives its state back when closed
    never = pipe.generate(scene_image, "w3", stream=True)
    never.close()
    assert pipe.generate(scene_image, "w1 w2", max_new_tokens=6).token_ids == alone


def test_waiting_for_a_state_ends_with_a_typed_error(folder, scene_image):
    pipe = Pipeline.load(folder, threads=1, wait_seconds=0.2)
    s = pipe.generate(scene_image, "w1 w2", max_new_tokens=6, stream=True)
    next(s)
    errors = []

    def other():
        try:
            pipe.generate(scene_image, "w1", max_new_tokens=2)
        except BusyError as exc:
            errors.append(exc)

    worker = threading.Thread(target=other)
    worker.start()
    worker.join(10)
    assert errors and "stayed in use" in str(errors[0])
    s.close()
