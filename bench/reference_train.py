#!/usr/bin/python3
"""The reference for bench/train_bench.cpp and bench/inference_bench.cpp: the same work
done the way Hugging Face's modeling code, Trainer and PEFT do it in eager PyTorch.

Qwen2-style model with HF's eager attention (torch 1.13 has no scaled_dot_product_attention, so
transformers uses its eager path: matmul, additive float mask, softmax in float32, matmul),
RMSNorm computed in float32, rotate-half RoPE, repeat_kv for grouped-query attention, SwiGLU MLP.
Training: right-padded batches (pad to the longest), full float32 logits + F.cross_entropy summed
over the batch's trained tokens, AdamW, gradient clipping 1.0, zero_grad as Trainer does. LoRA as
PEFT: frozen base, A/B adapters on every Linear except lm_head, dropout 0.05, scaling alpha/r.

  reference_train.py train --model a|b --train lora|full --plan PLAN.json [--warmup 1] [--threads N]
  reference_train.py infer [--prompt 256] [--new 32] [--repeats 3] [--threads N]
Each prints JSON lines with the same fields as the C++ benchmarks.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

CONFIGS = {
    "a": dict(vocab=151936, hidden=512, intermediate=1408, layers=8, heads=8, kv_heads=2, tied=True),
    "b": dict(vocab=4096, hidden=256, intermediate=704, layers=4, heads=4, kv_heads=2, tied=False),
}
HEAD_DIM = 64
ROPE_THETA = 10000.0


class RMSNorm(nn.Module):
    def __init__(self, size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class LoraLinear(nn.Module):
    """PEFT's lora.Linear: base(x) + B(A(dropout(x))) * alpha / r."""

    def __init__(self, base, r=8, alpha=32, dropout=0.05):
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.lora_dropout = nn.Dropout(dropout)
        self.scaling = alpha / r

    def forward(self, x):
        result = self.base_layer(x)
        x = x.to(self.lora_A.weight.dtype)
        return result + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary(position_ids, dtype):
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float32) / HEAD_DIM))
    freqs = position_ids[:, :, None].float() * inv_freq[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.kv_heads = c["heads"], c["kv_heads"]
        self.q_proj = nn.Linear(c["hidden"], self.heads * HEAD_DIM, bias=True)
        self.k_proj = nn.Linear(c["hidden"], self.kv_heads * HEAD_DIM, bias=True)
        self.v_proj = nn.Linear(c["hidden"], self.kv_heads * HEAD_DIM, bias=True)
        self.o_proj = nn.Linear(self.heads * HEAD_DIM, c["hidden"], bias=False)

    def forward(self, x, cos, sin, mask, cache=None):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, HEAD_DIM).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, HEAD_DIM).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, HEAD_DIM).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if cache is not None:  # DynamicCache: concatenate along the sequence
            if cache[0] is not None:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[0], cache[1] = k, v
        groups = self.heads // self.kv_heads
        k = k[:, :, None].expand(b, self.kv_heads, groups, k.shape[2], HEAD_DIM).reshape(b, self.heads, -1, HEAD_DIM)
        v = v[:, :, None].expand(b, self.kv_heads, groups, v.shape[2], HEAD_DIM).reshape(b, self.heads, -1, HEAD_DIM)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(HEAD_DIM)
        if mask is not None:
            scores = scores + mask
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["hidden"], c["intermediate"], bias=False)
        self.up_proj = nn.Linear(c["hidden"], c["intermediate"], bias=False)
        self.down_proj = nn.Linear(c["intermediate"], c["hidden"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(c["hidden"]), RMSNorm(c["hidden"])
        self.self_attn, self.mlp = Attention(c), MLP(c)

    def forward(self, x, cos, sin, mask, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class CausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab"], c["hidden"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["hidden"])
        self.lm_head = nn.Linear(c["hidden"], c["vocab"], bias=False)
        for module in self.modules():  # HF's _init_weights
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.data.normal_(0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
        if c["tied"]:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, input_ids, attention_mask=None, caches=None, past=0, last_only=False):
        b, t = input_ids.shape
        x = self.embed_tokens(input_ids)
        positions = torch.arange(past, past + t)[None].expand(b, t)
        cos, sin = rotary(positions, x.dtype)
        mask = None
        if t > 1:  # causal + padding, additive, as _prepare_4d_causal_attention_mask builds it
            allowed = torch.ones(t, past + t, dtype=torch.bool).tril(past)[None, None].expand(b, 1, t, past + t)
            if attention_mask is not None:
                allowed = allowed & attention_mask[:, None, None, :].bool()
            mask = torch.zeros(b, 1, t, past + t, dtype=x.dtype).masked_fill(~allowed, torch.finfo(x.dtype).min)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, None if caches is None else caches[i])
        x = self.norm(x)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(x).float()


def add_lora(model):
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for layer in model.layers:
        for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                              (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for name in names:
                setattr(parent, name, LoraLinear(getattr(parent, name)))


def resident_peak_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def gemm_peak_flops(dtype, n=2048):
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    c = torch.mm(a, b)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        best = max(best, 2.0 * n ** 3 / (time.perf_counter() - start))
    return best


def step_model_flops(c, lengths, full):
    """The formula of train_bench.cpp's step_model_flops."""
    q, kv, h = c["heads"] * HEAD_DIM, c["kv_heads"] * HEAD_DIM, c["hidden"]
    per_layer = h * (q + 2 * kv) + (q + 2 * kv) + q * h + 3 * h * c["intermediate"] + 2 * h
    n = c["layers"] * per_layer + h + c["vocab"] * h
    return sum((6 if full else 4) * n * l + 3 * c["layers"] * 2 * q * l * l for l in lengths)


def padded_batch(lengths, vocab, generator):
    longest = max(length for length, _ in lengths)
    input_ids = torch.zeros(len(lengths), longest, dtype=torch.long)
    labels = torch.full((len(lengths), longest), -100, dtype=torch.long)
    attention_mask = torch.zeros(len(lengths), longest, dtype=torch.long)
    for row, (length, prompt) in enumerate(lengths):
        ids = torch.randint(0, vocab, (length,), generator=generator)
        input_ids[row, :length] = ids
        labels[row, prompt:length] = ids[prompt:]
        attention_mask[row, :length] = 1
    return input_ids, labels, attention_mask


def train(args):
    c = CONFIGS[args.model]
    plan = json.load(open(args.plan))
    torch.manual_seed(42)
    model = CausalLM(c)
    full = args.train == "full"
    if not full:
        add_lora(model)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5 if full else 1e-4, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / len(plan))
    generator = torch.Generator().manual_seed(0)
    batches = [padded_batch(step, c["vocab"], generator) for step in plan]
    times, cpu_times = [], []
    for input_ids, labels, attention_mask in batches:
        start, cpu_start = time.perf_counter(), time.process_time()
        logits = model(input_ids, attention_mask)
        shift_logits = logits[:, :-1].reshape(-1, c["vocab"])
        shift_labels = labels[:, 1:].reshape(-1)
        items = (shift_labels != -100).sum()
        loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum") / items
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        model.zero_grad()
        loss.item()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    peak = resident_peak_mib()
    del batches, logits, loss
    measured = range(args.warmup, len(plan))
    seconds = sum(times[i] for i in measured)
    cpu_seconds = sum(cpu_times[i] for i in measured)
    tokens = sum(length for i in measured for length, _ in plan[i])
    flops = sum(step_model_flops(c, [length for length, _ in plan[i]], full) for i in measured)
    gemm = gemm_peak_flops(torch.float32)
    print(json.dumps(dict(impl="reference", model=args.model, train=args.train, dtype="float32",
                          batch=len(plan[0]), threads=torch.get_num_threads(), steps=len(measured),
                          tokens_per_s=tokens / seconds, tokens_per_cpu_s=tokens / cpu_seconds, ms_per_step=1000 * seconds / len(measured),
                          peak_rss_mib=peak, model_tflops_per_s=flops / seconds / 1e12,
                          gemm_peak_tflops_per_s=gemm / 1e12, mfu=flops / seconds / gemm)), flush=True)


@torch.no_grad()
def generate(model, prompts, new_tokens):
    """Greedy decoding with a per-layer concatenating KV cache, logits of the last position only."""
    caches = [[None, None] for _ in model.layers]
    logits = model(prompts, caches=caches, last_only=True)
    token = logits[:, -1].argmax(-1, keepdim=True)
    past = prompts.shape[1]
    for _ in range(new_tokens - 1):
        logits = model(token, caches=caches, past=past, last_only=True)
        token = logits[:, -1].argmax(-1, keepdim=True)
        past += 1
    return token


def infer(args):
    c = CONFIGS["a"]
    torch.manual_seed(42)
    model = CausalLM(c).eval()
    for batch in (1, 8):
        prompts = torch.tensor([[(r * 7919 + t * 104729) % c["vocab"] for t in range(args.prompt)]
                                for r in range(batch)])
        prefill, decode = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            generate(model, prompts, 1)
            prefill_seconds = time.perf_counter() - start
            start = time.perf_counter()
            generate(model, prompts, args.new)
            total = time.perf_counter() - start
            prefill.append(batch * args.prompt / prefill_seconds)
            decode.append(batch * (args.new - 1) / max(1e-9, total - prefill_seconds))
        print(json.dumps(dict(impl="reference", batch=batch, prefill_tokens_per_s=sorted(prefill)[len(prefill) // 2],
                              decode_tokens_per_s=sorted(decode)[len(decode) // 2])), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["train", "infer"])
    parser.add_argument("--model", default="a", choices=sorted(CONFIGS))
    parser.add_argument("--train", default="lora", choices=["lora", "full"])
    parser.add_argument("--plan")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train(args) if args.mode == "train" else infer(args)


if __name__ == "__main__":
    main()
