"""benchmarks/peers/check_checkpoint.py CHECKPOINT, in the GenAI venv (transformers 5.5): the checkpoint loads with
exactly the weights built (sha256 per tensor against the digest written by build_checkpoint.py under topv's
transformers 5.23). Exit code 1 if a tensor differs (transformers 5.5 re-initialises what it cannot map)."""
import hashlib, json, sys
from pathlib import Path
from transformers import LlavaForConditionalGeneration

folder = Path(sys.argv[1])
digest = json.loads((folder / "weights-digest.json").read_text())
sd = LlavaForConditionalGeneration.from_pretrained(folder).state_dict()
def key(k):  # 5.5 names the CLIP tower's inner module: model.vision_tower.vision_model.*
    return k if k in sd else k.replace("model.vision_tower.", "model.vision_tower.vision_model.")
bad = [k for k, h in digest.items() if hashlib.sha256(sd[key(k)].contiguous().numpy().tobytes()).hexdigest() != h]
print(f"{len(digest) - len(bad)}/{len(digest)} tensors identical" + (f"; DIFFERENT: {bad[:5]}" if bad else ""))
sys.exit(1 if bad else 0)
