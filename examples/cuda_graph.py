"""A whole training step captured in a CUDA graph and replayed: fit a sphere's texture.

The step — rasterize with `RasterizeCudaContext`, interpolate with derivatives, mipmapped
texture, antialias with a prebuilt topology hash, L2 loss, backward, Adam — is captured once with
`torch.cuda.graph` and replayed every iteration with the next view's positions copied into the
same input tensor. A replay launches the recorded kernels with no Python, autograd or launch
overhead, which is most of the cost of a small step. The OpenGL context cannot be captured (GL
work cannot enter a CUDA graph); nvdiffrast's rasterizers cannot either (they read counters back
to the host). Needs a CUDA GPU.

    python examples/cuda_graph.py --outdir out/cuda_graph
    python examples/cuda_graph.py --outdir out/cuda_graph --eager    # the same, without a graph

Prints the texture error before and after, and the time per iteration; with --compare, also runs
the eager step and checks that the captured one computes the same losses.
"""
from __future__ import annotations

import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffrast as dr  # noqa: E402
from diffrast import geometry  # noqa: E402
from common import base_parser, save_png  # noqa: E402


def views(count, gen, device):
    """Clip-space transforms ``[count, 4, 4]`` of random orientations at distance 3."""
    proj = geometry.perspective(45.0) @ geometry.translate(0, 0, -3.0)
    angles = torch.rand(count, 2, generator=gen)
    return torch.stack([proj @ geometry.rotate_x((a - 0.5) * 2.0)
                        @ geometry.rotate_y(b * 2 * math.pi)
                        for a, b in angles.tolist()]).to(device)


class Step:
    """One training step on fixed tensors: ``run()`` renders the views whose clip-space
    positions are in ``self.clip``, compares them with ``self.target`` and updates the texture."""

    def __init__(self, glctx, tri, uv, tex, resolution, lr):
        self.glctx, self.tri, self.uv, self.res = glctx, tri, uv, resolution
        self.topology = dr.antialias_construct_topology_hash(tri)
        self.tex = torch.nn.Parameter(tex)
        self.opt = torch.optim.Adam([self.tex], lr=lr, capturable=True)
        self.clip = None
        self.target = None

    def render(self, clip, tex):
        rast, rast_db = dr.rasterize(self.glctx, clip, self.tri, self.res)
        t, t_da = dr.interpolate(self.uv, rast, self.tri, rast_db=rast_db, diff_attrs="all")
        c = dr.texture(tex, t, t_da, filter_mode="linear-mipmap-linear")
        c = torch.where(rast[..., 3:] > 0, c, torch.zeros_like(c))
        return dr.antialias(c, rast, clip, self.tri, topology_hash=self.topology)

    def run(self):
        self.opt.zero_grad(set_to_none=False)  # the gradient buffer stays where the graph has it
        loss = (self.render(self.clip, self.tex) - self.target).square().mean()
        loss.backward()
        self.opt.step()
        return loss


def capture(step, warmup=3):
    """``(graph, loss)``: ``step.run`` captured in a CUDA graph after ``warmup`` eager runs on a
    side stream (they compile the kernels, fill the caches and allocate the scratch)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step.run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step.run()
    return graph, loss


def main():
    p = base_parser(__doc__, resolution=256, iterations=300)
    p.add_argument("--views", type=int, default=4, help="images per step")
    p.add_argument("--eager", action="store_true", help="run the step eagerly, no graph")
    p.add_argument("--compare", action="store_true",
                   help="also run eagerly and check that both give the same losses")
    args = p.parse_args()
    if not torch.cuda.is_available() or args.device == "cpu":
        print("examples/cuda_graph.py needs a CUDA GPU (CUDA graphs); none is available"
              if not torch.cuda.is_available() else "examples/cuda_graph.py runs on CUDA only")
        return 2
    if args.display:
        print("--display: this example shows no window (its replay loop runs no Python per step)")
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    pos, tri, uv = geometry.uv_sphere(32, 64)
    pos, tri, uv = pos.to(device), tri.to(device), uv.to(device)
    true_tex = torch.rand(1, 8, 16, 3, generator=gen)
    true_tex = torch.nn.functional.interpolate(true_tex.permute(0, 3, 1, 2), size=(128, 256),
                                               mode="bicubic", align_corners=False)
    true_tex = true_tex.permute(0, 2, 3, 1).clamp(0, 1).contiguous().to(device)
    glctx = dr.RasterizeCudaContext(device=device)
    res = (args.resolution, args.resolution)
    sets = 16  # view sets, cycled through: targets rendered once, before the timing
    mvps = views(sets * args.views, gen, device)
    clips = geometry.transform(pos, mvps).reshape(sets, args.views, -1, 4)

    def make_step():
        step = Step(glctx, tri, uv, torch.full_like(true_tex, 0.5), res, lr=0.03)
        with torch.no_grad():
            step.targets = torch.stack([step.render(c, true_tex) for c in clips])
        step.clip, step.target = clips[0].clone(), step.targets[0].clone()
        return step

    def fit(step, use_graph):
        losses = torch.empty(args.iterations, device=device)
        if use_graph:
            graph, loss = capture(step)
        else:
            for _ in range(3):  # the same warm-up steps as capture() takes
                step.run()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(args.iterations):
            step.clip.copy_(clips[i % sets])
            step.target.copy_(step.targets[i % sets])
            if use_graph:
                graph.replay()
            else:
                loss = step.run()
            losses[i] = loss.detach()
        torch.cuda.synchronize()
        return losses, (time.perf_counter() - t0) / args.iterations * 1e3

    step = make_step()
    err0 = (step.tex.detach() - true_tex).abs().mean().item()
    losses, ms = fit(step, not args.eager)
    err1 = (step.tex.detach() - true_tex).abs().mean().item()
    if args.outdir:
        with torch.no_grad():
            save_png(os.path.join(args.outdir, "target.png"), step.render(clips[0], true_tex)[0])
            save_png(os.path.join(args.outdir, "final.png"), step.render(clips[0], step.tex)[0])
    mode = "eager" if args.eager else "CUDA graph"
    if args.compare and not args.eager:
        ref = make_step()
        ref_losses, ref_ms = fit(ref, False)
        diff = (losses - ref_losses).abs().max().item()
        print(f"eager: {ref_ms:.3f} ms/iteration; "
              f"largest loss difference graph vs eager {diff:.3e}")
    print(f"{mode}: {ms:.3f} ms/iteration; "
          f"texture error {err0:.4f} -> {err1:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
