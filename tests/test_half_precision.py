"""float16 and bfloat16 attributes (interpolate) and textures (texture): computed in float32,
outputs and gradients in the input's dtype, equal to the float32 computation rounded once."""
import pytest
import torch

import diffrast as dr

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
HALVES = [torch.float16, torch.bfloat16]


def rast_inputs(device, gen):
    B, H, W = 2, 6, 7
    rast = torch.rand(B, H, W, 4, generator=gen) * 0.5
    rast[..., 3] = torch.randint(0, 4, (B, H, W), generator=gen).float()  # 0: empty
    rast_db = torch.randn(B, H, W, 4, generator=gen)
    tri = torch.tensor([[0, 1, 2], [2, 3, 4], [1, 4, 0]], dtype=torch.int32)
    return rast.to(device), rast_db.to(device), tri.to(device)


def grads(fn, *inputs, weights_dtype):
    """``(outputs, input gradients)`` of a weighted sum of ``fn``'s outputs; the weights are
    representable in ``weights_dtype``, so a half and a float32 run get the same gradients."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    out = out if isinstance(out, tuple) else (out,)
    sum((o.float() * torch.linspace(-1, 1, o.numel(), device=o.device).reshape(o.shape)
         .to(weights_dtype).float()).sum() for o in out).backward()
    return out, [x.grad for x in leaves]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALVES)
def test_interpolate_half_attributes(device, dtype):
    gen = torch.Generator().manual_seed(0)
    rast, rast_db, tri = rast_inputs(device, gen)
    attr = torch.randn(2, 5, 3, generator=gen).to(device, dtype)

    def run(a):
        return dr.interpolate(a, rast, tri, rast_db=rast_db, diff_attrs=[0, 2])

    (out, out_da), (g,) = grads(run, attr, weights_dtype=dtype)
    assert out.dtype == out_da.dtype == g.dtype == dtype
    # The same as interpolating the float32 values, rounded once.
    (ref, ref_da), (ref_g,) = grads(run, attr.float(), weights_dtype=dtype)
    assert torch.equal(out, ref.to(dtype)) and torch.equal(out_da, ref_da.to(dtype))
    assert torch.equal(g, ref_g.to(dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("filter_mode,stack", [
    ("nearest", None), ("linear", None), ("linear-mipmap-nearest", None),
    ("linear-mipmap-linear", None), ("linear-mipmap-linear", "prebuilt"),
    ("linear-mipmap-linear", "list")])
def test_texture_half_textures(device, dtype, filter_mode, stack):
    gen = torch.Generator().manual_seed(1)
    tex = torch.rand(1, 8, 8, 3, generator=gen).to(device, dtype)
    uv = torch.rand(2, 5, 6, 2, generator=gen).to(device)
    uv_da = (torch.randn(2, 5, 6, 4, generator=gen) * 0.2).to(device)

    def run(t, uv):
        if stack == "prebuilt":
            mip = dr.texture_construct_mip(t)
        elif stack == "list":
            mip = [lvl.to(t.dtype) for lvl in dr.texture_construct_mip(t.detach()).levels]
        else:
            mip = None
        return dr.texture(t, uv, uv_da, mip=mip, filter_mode=filter_mode)

    (out,), (g_tex, g_uv) = grads(run, tex, uv, weights_dtype=dtype)
    assert out.dtype == g_tex.dtype == dtype
    assert (g_uv is None) == (filter_mode == "nearest")  # (nearest: no gradient to uv)
    assert g_uv is None or g_uv.dtype == torch.float32
    if stack != "list":  # (a half list is a different, rounded, stack)
        (ref,), (ref_tex, ref_uv) = grads(run, tex.float(), uv, weights_dtype=dtype)
        assert torch.equal(out, ref.to(dtype))
        if stack == "prebuilt":  # two paths to tex (stack, base), each gradient rounded to
            # tex's dtype before autograd adds them, as for any leaf used twice
            torch.testing.assert_close(g_tex, ref_tex.to(dtype), rtol=2e-2, atol=1e-3)
        else:
            assert torch.equal(g_tex, ref_tex.to(dtype))
        if device == "cpu" and g_uv is not None:  # (float atomics on the GPU)
            assert torch.equal(g_uv, ref_uv)


def test_half_stack_is_float32_and_half_coordinates_are_refused():
    tex = torch.rand(1, 8, 8, 3).half()
    mip = dr.texture_construct_mip(tex)
    assert all(lvl.dtype == torch.float32 for lvl in mip.levels)
    with pytest.raises(TypeError, match="uv must have dtype float32 or float64, got float16"):
        dr.texture(tex, torch.rand(1, 4, 4, 2).half())
    with pytest.raises(TypeError, match="rast must have dtype float32 or float64, got float16"):
        dr.interpolate(torch.rand(3, 2).half(), torch.zeros(1, 4, 4, 4).half(),
                       torch.tensor([[0, 1, 2]], dtype=torch.int32))


def test_half_inputs_compile():
    torch._dynamo.reset()
    tex = torch.rand(1, 8, 8, 3).bfloat16()
    uv = torch.rand(1, 4, 5, 2)
    fn = torch.compile(lambda t, uv: dr.texture(t, uv, filter_mode="linear"), fullgraph=True,
                       backend="aot_eager")
    assert torch.equal(fn(tex, uv), dr.texture(tex, uv, filter_mode="linear"))
    torch._dynamo.reset()
