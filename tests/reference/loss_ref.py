#!/usr/bin/python3
"""Reference for Lathe's chunked token cross entropy (tests/plugin/loss_test.cpp).

Usage: loss_ref.py INPUT OUTPUT. INPUT is a dict saved by torch::pickle_save with hidden [N, H],
weight [V, H], targets [N] (int64, -100 ignored) and upstream [N] (the gradient flowing into each
per-token loss). OUTPUT gets losses [N], grad_hidden and grad_weight, computed by PyTorch's own
F.cross_entropy over the full logits. float32 and float64 inputs are computed in their dtype;
when either is bfloat16 both are upcast to float64, giving the exact value the kernel approximates.
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
    torch.save({"losses": losses.detach(), "grad_hidden": hidden.grad, "grad_weight": weight.grad}, output_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
