#!/usr/bin/python3
"""The reference Ferret implementation's projection and reconstruction, in PyTorch.

Mirrors what the public reference code does per (seed, block): reseed PyTorch's
generator, generate a d_l-sized basis with trunc_normal_(0, 1, -a, a), a = 1/sqrt(d_l),
then dot it with the update (projection) or scale, clip to norm 10 and subtract it
(reconstruction). Same synthetic ~10M-parameter transformer layout and reference block
plan as tests/bench/ferret_bench.cc, K = 200 seeds per block.

Every (seed, block) costs the same whatever the seed, so by default only --seeds of the
K seeds are timed over all blocks and the time is scaled to K (printed as such);
--seeds 200 runs everything. Prints one JSON object on stdout.

Run with Debian's Python, which has python3-torch: /usr/bin/python3.
"""

import argparse
import json
import time

import numpy as np
import torch


def transformer_sizes(width=256, vocab=8192, layers=7):
    """Tensor sizes in model order: the layout of ferret_bench.cc's TransformerLayout."""
    sizes = [vocab * width, 1024 * width]
    for _ in range(layers):
        sizes += [width, width, 3 * width * width, 3 * width, width * width, width,
                  width, width, 4 * width * width, 4 * width, 4 * width * width, width]
    sizes += [width, width, vocab * width]
    return sizes


def reference_blocks(sizes):
    """The reference's grouping: target int(0.9 * median); close a group when the next
    tensor would exceed it. Returns block sizes."""
    target = int(0.9 * np.median(sizes))
    blocks, current, open_group = [], 0, False
    for size in sizes:
        if open_group and current + size > target:
            blocks.append(current)
            current = 0
        current += size
        open_group = True
    if open_group:
        blocks.append(current)
    return [b for b in blocks if b > 0]


def basis(seed, block, size):
    # The reference reseeds per seed; reseeding per (seed, block) costs the same.
    torch.manual_seed(seed * 1000003 + block)
    a = size ** -0.5
    v = torch.empty(size)
    return torch.nn.init.trunc_normal_(v, mean=0.0, std=1.0, a=-a, b=a)


def project(delta_blocks, seeds, k_total):
    coefficients = []
    for block, delta in enumerate(delta_blocks):
        coefficient = torch.zeros(k_total)
        for idx, seed in enumerate(seeds):
            coefficient[idx] = torch.sum(delta * basis(seed, block, delta.numel()))
        coefficient *= delta.numel() / k_total
        coefficients.append(coefficient)
    return coefficients


def reconstruct(param_blocks, seeds, coefficients, server_lr=1.0, max_norm=10.0):
    for idx, seed in enumerate(seeds):
        for block, param in enumerate(param_blocks):
            b = basis(seed, block, param.numel())
            b.mul_(coefficients[block][idx])
            if torch.isfinite(b).all():
                norm = torch.linalg.norm(b)
                if torch.isfinite(norm):
                    clip = max_norm / (norm + 1e-8)
                    if clip < 1:
                        b.mul_(clip)
                    param.sub_(server_lr * b)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=200, help="seeds per block (K)")
    parser.add_argument("--seeds", type=int, default=8,
                        help="seeds actually timed; the time is scaled to K")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    measured = max(1, min(args.seeds, args.k))

    sizes = transformer_sizes()
    blocks = reference_blocks(sizes)
    d = sum(blocks)
    generator = torch.Generator().manual_seed(1)
    delta = torch.randn(d, generator=generator) * 1e-3
    params = torch.full((d,), 0.01)
    delta_blocks = list(torch.split(delta, blocks))
    param_blocks = list(torch.split(params, blocks))
    seeds = list(range(1, measured + 1))

    start = time.perf_counter()
    coefficients = project(delta_blocks, seeds, args.k)
    project_s = time.perf_counter() - start
    start = time.perf_counter()
    reconstruct(param_blocks, seeds, coefficients)
    reconstruct_s = time.perf_counter() - start

    scale = args.k / measured
    elems = d * args.k  # basis entries per full pass: every block uses all K seeds
    result = {
        "d": d,
        "blocks": len(blocks),
        "k": args.k,
        "seeds_timed": measured,
        "threads": args.threads,
        "torch": torch.__version__,
        "project_s": project_s * scale,
        "reconstruct_s": reconstruct_s * scale,
        "project_elems_per_s": elems / (project_s * scale),
        "reconstruct_elems_per_s": elems / (reconstruct_s * scale),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
