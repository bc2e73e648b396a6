"""int8 weights for the GenAI benchmark: NNCF data-free INT8_ASYM (per channel) on each exported IR model,
the same as `optimum-cli export openvino --weight-format int8` does, without a second export from PyTorch.

    VENV/bin/python benchmarks/peers/compress_ir.py IR_FP32_DIR IR_INT8_DIR   (in the GenAI venv)
"""
import shutil, sys, time
from pathlib import Path

import nncf
import openvino as ov

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
core = ov.Core()
for f in src.iterdir():
    if f.suffix in (".xml", ".bin") and f.stem.endswith("_model"):
        continue
    shutil.copy2(f, dst / f.name)
for xml in sorted(src.glob("openvino_*_model.xml")):
    t = time.perf_counter()
    model = nncf.compress_weights(core.read_model(xml), mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(model, dst / xml.name, compress_to_fp16=False)  # save_model's default would turn the rest into f16
    print(f"{xml.name}: {time.perf_counter() - t:.1f}s")
