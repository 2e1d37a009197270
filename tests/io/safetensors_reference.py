"""Independent safetensors reference for Lathe's tests, written from the published format only
(8-byte little-endian header length, JSON header, data), with PyTorch for tensor bytes. The
`safetensors` Python package is not installed on the build machine, so this stands in for it.

  write DIR          DIR/reference.safetensors (tensors of every dtype, laid out as Hugging Face's
                     writer does) and DIR/expected.json (dtype, shape, bytes as hex, values)
  check FILE DIR     parses FILE (written by Lathe from expected.json) on its own, checks header
                     alignment, metadata and every value against the tensors regenerated here, and
                     that FILE is byte-identical to DIR/reference.safetensors
"""
import json
import struct
import sys

import torch

DTYPES = {  # safetensors name -> (torch dtype, element size)
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}
# Hugging Face's writer puts larger alignments first (its Dtype enum order, descending).
ALIGNMENT_ORDER = ["I64", "F64", "F32", "I32", "BF16", "F16", "I16", "I8", "U8", "BOOL"]


def reference_tensors():
    generator = torch.Generator().manual_seed(1234)
    tensors = {}
    for name, (dtype, _) in DTYPES.items():
        shape = (3, 5)
        if dtype.is_floating_point:
            values = torch.randn(shape, generator=generator, dtype=torch.float64) * 100
            values[0, 0] = -0.0
            values[0, 1] = float("inf")
            tensors[f"layer.{name.lower()}.weight"] = values.to(dtype)
        elif dtype == torch.bool:
            tensors[f"mask.{name.lower()}"] = torch.randint(0, 2, shape, generator=generator) == 1
        else:
            info = torch.iinfo(dtype)
            low, high = max(info.min, -(2**40)), min(info.max, 2**40)
            tensors[f"ids.{name.lower()}"] = torch.randint(low, high, shape, generator=generator,
                                                           dtype=torch.int64).to(dtype)
    tensors["scalar"] = torch.tensor(2.5, dtype=torch.float32)
    tensors["empty"] = torch.zeros((0, 4), dtype=torch.bfloat16)
    tensors["odd.bf16"] = torch.randn((3,), generator=generator).to(torch.bfloat16)
    tensors["z.f32.after.odd"] = torch.randn((2, 1, 3), generator=generator)
    tensors["unicode.é"] = torch.arange(4, dtype=torch.int16)
    return tensors


def dtype_name(tensor):
    return next(name for name, (dtype, _) in DTYPES.items() if dtype == tensor.dtype)


def raw_bytes(tensor):
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def serialize(tensors, metadata):
    names = sorted(tensors, key=lambda n: (ALIGNMENT_ORDER.index(dtype_name(tensors[n])), n.encode()))
    header, offset, chunks = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name in names:
        data = raw_bytes(tensors[name])
        header[name] = {"dtype": dtype_name(tensors[name]), "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        chunks.append(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write(folder):
    tensors = reference_tensors()
    with open(f"{folder}/reference.safetensors", "wb") as out:
        out.write(serialize(tensors, {"format": "pt"}))
    expected = {}
    for name, tensor in tensors.items():
        values = tensor.reshape(-1)
        values = values.double() if tensor.dtype.is_floating_point else values.long()
        expected[name] = {"dtype": dtype_name(tensor), "shape": list(tensor.shape),
                          "hex": raw_bytes(tensor).hex(),
                          "values": [repr(v) if isinstance(v, float) else v for v in values.tolist()]}
    with open(f"{folder}/expected.json", "w") as out:
        json.dump(expected, out, ensure_ascii=False)


def check(path, folder):
    blob = open(path, "rb").read()
    (length,) = struct.unpack("<Q", blob[:8])
    assert length % 8 == 0, f"header length {length} is not a multiple of 8"
    text = blob[8:8 + length].decode()
    assert text.rstrip(" ") == text.rstrip(), "header padding must be spaces"
    header = json.loads(text)
    assert header.pop("__metadata__") == {"format": "pt"}, "metadata must be {'format': 'pt'}"
    data = blob[8 + length:]
    tensors = reference_tensors()
    assert set(header) == set(tensors), f"names differ: {sorted(set(header) ^ set(tensors))}"
    covered = 0
    for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"]):
        begin, end = entry["data_offsets"]
        dtype, size = DTYPES[entry["dtype"]]
        assert begin == covered, f"{name}: data starts at {begin}, expected {covered}"
        assert (8 + length + begin) % size == 0, f"{name}: data not aligned to {size} bytes"
        got = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype) if end > begin else \
            torch.zeros(0, dtype=dtype)
        got = got.reshape(entry["shape"])
        want = tensors[name]
        assert got.dtype == want.dtype and got.shape == want.shape, f"{name}: dtype/shape differ"
        assert torch.equal(got.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8)), \
            f"{name}: values differ"
        covered = end
    assert covered == len(data), "tensors must cover the data buffer exactly"
    reference = open(f"{folder}/reference.safetensors", "rb").read()
    assert blob == reference, "Lathe's file is not byte-identical to the reference layout"
    print("ok")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        check(sys.argv[2], sys.argv[3])
