"""Time `import diffrast` plus the first call (forward and backward) of every op on CUDA.

Run it twice with the same CUPY_CACHE_DIR: the first run compiles every kernel (cold cache), the
second loads them from CuPy's on-disk cache (warm). Prints one JSON line.

    CUPY_CACHE_DIR=/tmp/dr-cache python benchmarks/first_call.py   # cold, then again: warm
"""
import json
import time

t0 = time.perf_counter()
import torch  # noqa: E402

torch.zeros(1, device="cuda")  # CUDA initialisation is not diffrast's cost
t_torch = time.perf_counter()
import diffrast as dr  # noqa: E402
from diffrast import geometry  # noqa: E402

t_import = time.perf_counter()
pos, tri, uv = geometry.uv_sphere(16, 32, device="cuda")
clip = geometry.transform(pos, geometry.perspective() @ geometry.translate(0, 0, -3))[None].contiguous()
clip.requires_grad_(True)
tex = torch.rand(1, 64, 64, 3, device="cuda", requires_grad=True)
cube = torch.rand(1, 6, 16, 16, 3, device="cuda", requires_grad=True)
glctx = dr.RasterizeGLContext(device="cuda")
t_ctx = time.perf_counter()
rast, db = dr.rasterize(glctx, clip, tri, (128, 128))
texc, texd = dr.interpolate(uv, rast, tri, rast_db=db, diff_attrs="all")
c = dr.texture(tex, texc, texd, filter_mode="linear-mipmap-linear")
c = c + dr.texture(tex, texc, filter_mode="nearest") + dr.texture(tex, texc, filter_mode="linear")
n = torch.nn.functional.normalize(torch.cat([texc, torch.ones_like(texc[..., :1])], -1), dim=-1)
c = c + dr.texture(cube, n.contiguous(), boundary_mode="cube")
c = dr.antialias(c, rast, clip, tri)
c.sum().backward()
torch.cuda.synchronize()
t_ops = time.perf_counter()
print(json.dumps({
    "import_diffrast_s": round(t_import - t_torch, 3),
    "context_s": round(t_ctx - t_import, 3),
    "first_call_all_ops_fwd_bwd_s": round(t_ops - t_ctx, 3),
    "total_after_torch_s": round(t_ops - t_torch, 3),
}))
