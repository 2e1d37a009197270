#!/usr/bin/python3
"""Reference logits for Lathe's transformer, written in PyTorch from the published equations of
Llama / Mistral (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU), Qwen2 (q/k/v biases)
and Qwen3 (RMSNorm on each head's queries and keys), with default, linear and Llama-3 rotary
scaling and an optional tied output head. It shares no code with Lathe: it reads config.json and
the safetensors file itself.

Every sequence is run alone with plain causal attention; padded and packed batches are split
into their sequences here, so the reference never depends on a mask construction.

usage: model_ref.py MODEL_DIR CASES_JSON OUT_DIR [DTYPES]   (DTYPES: float32,bfloat16 or one of them)

CASES_JSON: [{"name": str, "input_ids": [[int]], "attention_mask": [[0|1]] (optional, padding),
              "sequence_lengths": [int] (optional, one packed row)}]
For each case and dtype OUT_DIR/<name>.<dtype>.f32 receives the logits as little-endian float32, shaped like
[batch, seq, vocab]; positions that are padding hold zeros.
"""
import json
import math
import os
import struct
import sys

import torch

SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    body = data[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        raw = bytearray(body[begin:end])
        tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(info["shape"]) if raw else \
            torch.zeros(info["shape"], dtype=dtype)
    return tensors


def read_weights(model_dir):
    index_path = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    weights = {}
    for name in files:
        weights.update(read_safetensors(os.path.join(model_dir, name)))
    return weights


def rotary_inverse_frequencies(config, head_dim):
    # transformers 5 writes theta and scaling together as rope_parameters; older ones as rope_theta
    # and rope_scaling.
    parameters = config.get("rope_parameters") or {}
    theta = parameters.get("rope_theta", config.get("rope_theta", 10000.0))
    # float32, as the published implementations compute it
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    scaling = parameters or config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        # Llama 3.1: frequencies whose wavelength exceeds original_context / low_freq_factor are
        # divided by factor, those below original_context / high_freq_factor kept, and the band
        # between interpolated linearly in original_context / wavelength.
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        context = scaling["original_max_position_embeddings"]
        out = []
        for f in inv_freq.tolist():
            wavelength = 2 * math.pi / f
            if wavelength < context / high:
                out.append(f)
            elif wavelength > context / low:
                out.append(f / factor)
            else:
                t = (context / wavelength - low) / (high - low)
                out.append((1 - t) * f / factor + t * f)
        return torch.tensor(out, dtype=torch.float32)
    assert kind == "default", kind
    return inv_freq


def rms_norm(x, weight, eps):
    variance = x.float().square().mean(dim=-1, keepdim=True)
    return weight * (x.float() / torch.sqrt(variance + eps)).to(x.dtype)


def rotate(x, cos, sin):
    # pairs (i, i + d/2) rotate together
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
    return rotated


class Reference:
    def __init__(self, model_dir, dtype):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.config = json.load(f)
        c = self.config
        self.dtype = dtype
        self.w = {k: v.to(dtype) for k, v in read_weights(model_dir).items()}
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads") or self.heads
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.heads
        self.eps = c["rms_norm_eps"]
        self.layers = c["num_hidden_layers"]
        self.qkv_bias = c["model_type"] == "qwen2" or c.get("attention_bias", False)
        self.o_bias = c["model_type"] != "qwen2" and c.get("attention_bias", False)
        self.qk_norm = c["model_type"] == "qwen3"
        self.inv_freq = rotary_inverse_frequencies(c, self.head_dim)
        head = "model.embed_tokens.weight" if c.get("tie_word_embeddings", False) else "lm_head.weight"
        self.head = self.w[head]

    def linear(self, x, name, bias):
        y = x @ self.w[name + ".weight"].T
        if bias:
            y = y + self.w[name + ".bias"]
        return y

    def attention(self, x, p, cos, sin):
        n, d = x.shape[0], self.head_dim
        q = self.linear(x, p + "q_proj", self.qkv_bias).view(n, self.heads, d).transpose(0, 1)
        k = self.linear(x, p + "k_proj", self.qkv_bias).view(n, self.kv_heads, d).transpose(0, 1)
        v = self.linear(x, p + "v_proj", self.qkv_bias).view(n, self.kv_heads, d).transpose(0, 1)
        if self.qk_norm:
            q = rms_norm(q, self.w[p + "q_norm.weight"], self.eps)
            k = rms_norm(k, self.w[p + "k_norm.weight"], self.eps)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        # each group of heads // kv_heads consecutive query heads reads one key/value head
        k = k.repeat_interleave(self.heads // self.kv_heads, dim=0)
        v = v.repeat_interleave(self.heads // self.kv_heads, dim=0)
        scores = (q @ k.transpose(1, 2)) / math.sqrt(d)
        future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
        scores = scores.float().masked_fill(future, float("-inf"))
        attention = torch.softmax(scores, dim=-1).to(self.dtype)
        out = (attention @ v).transpose(0, 1).reshape(n, self.heads * d)
        return self.linear(out, p + "o_proj", self.o_bias)

    def logits(self, ids):
        """One sequence (list of ints) -> [seq, vocab] float32."""
        ids = torch.tensor(ids, dtype=torch.long)
        x = self.w["model.embed_tokens.weight"][ids]
        angles = torch.arange(len(ids), dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        cos, sin = angles.cos().to(self.dtype), angles.sin().to(self.dtype)
        for i in range(self.layers):
            p = f"model.layers.{i}."
            x = x + self.attention(rms_norm(x, self.w[p + "input_layernorm.weight"], self.eps), p + "self_attn.", cos, sin)
            h = rms_norm(x, self.w[p + "post_attention_layernorm.weight"], self.eps)
            gate = self.linear(h, p + "mlp.gate_proj", False)
            up = self.linear(h, p + "mlp.up_proj", False)
            x = x + self.linear(torch.nn.functional.silu(gate) * up, p + "mlp.down_proj", False)
        x = rms_norm(x, self.w["model.norm.weight"], self.eps)
        return (x @ self.head.T).float()


def run_case(model, case):
    rows = case["input_ids"]
    vocab = model.head.shape[0]
    out = torch.zeros(len(rows), len(rows[0]), vocab, dtype=torch.float32)
    if "sequence_lengths" in case:
        start = 0
        for length in case["sequence_lengths"]:
            out[0, start:start + length] = model.logits(rows[0][start:start + length])
            start += length
        return out
    masks = case.get("attention_mask") or [[1] * len(r) for r in rows]
    for b, (row, mask) in enumerate(zip(rows, masks)):
        real = [i for i, m in enumerate(mask) if m]
        out[b, real] = model.logits([row[i] for i in real])
    return out


def main():
    model_dir, cases_path, out_dir = sys.argv[1:4]
    dtypes = (sys.argv[4] if len(sys.argv) > 4 else "float32").split(",")
    torch.set_num_threads(1)
    with open(cases_path) as f:
        cases = json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    for dtype in dtypes:
        model = Reference(model_dir, {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype])
        with torch.no_grad():
            for case in cases:
                logits = run_case(model, case)
                logits.numpy().astype("<f4").tofile(os.path.join(out_dir, f"{case['name']}.{dtype}.f32"))


if __name__ == "__main__":
    main()
