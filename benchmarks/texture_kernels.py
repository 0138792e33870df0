"""Texture kernel timings on coherent UVs like the DESIGN.md mid scenario's (2048² RGB texture,
4 x 1024² lookups): medians of CUDA-event timings in ms, one JSON line (targets on an H100:
linear fwd+bwd 1.1, trilinear fwd 0.22, trilinear fwd+bwd 1.6). The uv are coherent, as a
rasterized surface's: a disc covering 57% of each image maps smoothly onto the texture (about 2
texels per pixel), the background has uv = 0 and no derivatives, as interpolate leaves it.
benchmarks/run.py measures the whole scenario.

    python benchmarks/texture_kernels.py
"""
import json
import math

import torch

import diffrast as dr

from run import timer


def main():
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    tex = torch.rand(1, 2048, 2048, 3, device=dev, generator=g)
    n = 1024
    yy, xx = torch.meshgrid(torch.arange(n, device=dev, dtype=torch.float32),
                            torch.arange(n, device=dev, dtype=torch.float32), indexing="ij")
    px, py = (xx + 0.5) / n * 2 - 1, (yy + 0.5) / n * 2 - 1
    inside = (px * px + py * py < 0.73).float()
    uvs, das = [], []
    for b in range(4):
        a = 0.3 + 0.4 * b
        u = 0.5 + 0.45 * (px * math.cos(a) - py * math.sin(a)) + 0.02 * torch.sin(3 * py)
        v = 0.5 + 0.45 * (px * math.sin(a) + py * math.cos(a))
        s = 0.9 / n
        du = torch.stack([torch.full_like(u, s * math.cos(a)), torch.full_like(u, -s * math.sin(a)),
                          torch.full_like(u, s * math.sin(a)), torch.full_like(u, s * math.cos(a))], -1)
        uvs.append(torch.stack([u, v], -1) * inside[..., None])
        das.append(du * inside[..., None])
    uv = torch.stack(uvs).contiguous()
    da = torch.stack(das).contiguous()
    tex_g = tex.clone().requires_grad_(True)
    uv_g = uv.clone().requires_grad_(True)
    measure = timer(dev, reps=20, warmup=3)

    res = {
        "linear_fwd": measure(lambda: dr.texture(tex, uv, filter_mode="linear")),
        "linear_fwd_bwd": measure(
            lambda: dr.texture(tex_g, uv_g, filter_mode="linear").sum().backward()),
        "mip_fwd": measure(lambda: dr.texture(tex, uv, da, filter_mode="linear-mipmap-linear")),
        "mip_fwd_bwd": measure(lambda: dr.texture(
            tex_g, uv_g, da, filter_mode="linear-mipmap-linear").sum().backward()),
        "construct_mip": measure(lambda: dr.texture_construct_mip(tex)),
    }
    dr.set_deterministic(True)
    try:
        res["mip_fwd_bwd_deterministic"] = measure(lambda: dr.texture(
            tex_g, uv_g, da, filter_mode="linear-mipmap-linear").sum().backward())
    finally:
        dr.set_deterministic(False)
    res["device"] = torch.cuda.get_device_name(dev)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
