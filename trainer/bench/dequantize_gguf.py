"""Write an F32 copy of a quantised GGUF: the same weights the trainer computes with (transformers dequantises
the GGUF the same way), so llama.cpp and the trainer can be compared without llama.cpp's quantised kernels.

    .venv/bin/python trainer/bench/dequantize_gguf.py models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2-f32.gguf

Only the weights' storage changes: every key-value (tokenizer, chat template, hyper-parameters) is copied.
"""

from __future__ import annotations

import sys

import gguf
import numpy as np
from gguf.quants import dequantize


def dequantize_file(src: str, dst: str) -> None:
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch=arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape))  # numpy order: slowest dimension first
        data = np.ascontiguousarray(dequantize(tensor.data, tensor.tensor_type).reshape(shape).astype(np.float32))
        writer.add_tensor(tensor.name, data, raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    dequantize_file(sys.argv[1], sys.argv[2])
