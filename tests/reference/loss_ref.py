#!/usr/bin/python3
"""Reference for Lathe's chunked token cross entropy (tests/plugin/loss_test.cpp).

Usage: loss_ref.py INPUT OUTPUT. INPUT is a dict saved by torch::pickle_save with hidden [N, H],
weight [V, H], targets [N] (int64, -100 ignored) and upstream [N] (the gradient flowing into each
per-token loss). OUTPUT gets losses [N], grad_hidden and grad_weight, computed by PyTorch's own
F.cross_entropy over the full logits. float32 and float64 inputs are computed in their dtype;
when either is bfloat16 both are upcast to float64, giving the exact value the kernel approximates,
and OUTPUT also gets torch_losses, torch_grad_hidden and torch_grad_weight: what PyTorch itself
computes in bfloat16 on this CPU (the logits' matmul in bfloat16, the loss in float32, autograd's
bfloat16 matmuls back). The rounding of bfloat16 matrix products differs between CPUs (libtorch
1.13 sums them in float32 with AVX512-BF16 but in bfloat16 on AVX2-only CPUs), so this is the
yardstick for what bfloat16 can achieve here.
"""
import sys

import torch
import torch.nn.functional as F


def main(input_path, output_path):
    inputs = torch.load(input_path)
    dtype = inputs["hidden"].dtype
    if torch.bfloat16 in (dtype, inputs["weight"].dtype):
        dtype = torch.float64
    hidden = inputs["hidden"].to(dtype).requires_grad_(True)
    weight = inputs["weight"].to(dtype).requires_grad_(True)
    logits = hidden @ weight.T
    losses = F.cross_entropy(logits, inputs["targets"], reduction="none", ignore_index=-100)
    (losses * inputs["upstream"].to(dtype)).sum().backward()
    outputs = {"losses": losses.detach(), "grad_hidden": hidden.grad, "grad_weight": weight.grad}
    if dtype == torch.float64 and inputs["hidden"].dtype != torch.float64:
        outputs.update(in_bfloat16(inputs))
    torch.save(outputs, output_path)


def in_bfloat16(inputs):
    hidden = inputs["hidden"].detach().clone().requires_grad_(True)
    weight = inputs["weight"].detach().clone().requires_grad_(inputs["weight"].dtype == hidden.dtype)
    logits = (hidden.to(weight.dtype) @ weight.T).float()
    losses = F.cross_entropy(logits, inputs["targets"], reduction="none", ignore_index=-100)
    (losses * inputs["upstream"].float()).sum().backward()
    result = {"torch_losses": losses.detach(), "torch_grad_hidden": hidden.grad}
    if weight.grad is not None:
        result["torch_grad_weight"] = weight.grad
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
