"""Where the time of a scale scenario's call chain goes (``benchmarks/run.py``'s rasterize +
interpolate + antialias, forward and backward): the chain's median time and the profiler's table
of device time per kernel, with ``RasterizeCudaContext``. ``--copies`` times the chain with the
interpolate backward's attribute gradient spread over each given number of copies instead of
:func:`diffrast.cuda_backend.atomic_copies`'s choice (to check that rule on a GPU).

    python benchmarks/profile_scale.py                                # scale_1k_64x512
    python benchmarks/profile_scale.py --scenarios scale_1M_4x4096 --copies 1 4 16 32
"""
from __future__ import annotations

import argparse

import torch

import diffrast as dr
from diffrast import cuda_backend
from profile_rasterize import kernel_table
from run import SCALE_SCENARIOS, scale_chain, timer


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="*", default=["scale_1k_64x512"],
                   choices=sorted(SCALE_SCENARIOS))
    p.add_argument("--copies", nargs="*", type=int, default=[],
                   help="also time the chain with these numbers of gradient copies")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    device = torch.device("cuda", torch.cuda.current_device())
    glctx = dr.RasterizeCudaContext(device=device)
    measure = timer(device, args.reps, 3)
    rule = cuda_backend.atomic_copies
    for name in args.scenarios:
        chain, _ = scale_chain(SCALE_SCENARIOS[name], device, glctx)
        print(f"{name}: chain {measure(chain)} ms (CUDA events)")
        print(kernel_table(chain, 5))
        try:
            for copies in args.copies:
                cuda_backend.atomic_copies = lambda pixels, rows, c=copies: c
                print(f"{name}, {copies} copies: chain {measure(chain)} ms")
        finally:
            cuda_backend.atomic_copies = rule


if __name__ == "__main__":
    main()
