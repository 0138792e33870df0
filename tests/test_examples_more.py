"""The other example programs (triangle, earth, envphong, pose, render) and the OBJ loader run end
to end on the CPU at toy sizes: the fitting examples lower their error in a few steps, the
rendering examples write valid PNGs, and every program answers --help."""
import os
import subprocess
import sys

import pytest
import torch

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
sys.path.insert(0, EXAMPLES)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    from PIL import Image
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    with Image.open(path) as im:
        im.load()
        return im.copy()


def _option_help(out, option):
    """The help text of ``option`` in ``--help`` output (argparse wraps it over lines)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option))
    text = [lines[start]]
    for line in lines[start + 1:]:
        if line.strip().startswith("-") or not line.startswith(" "):
            break
        text.append(line)
    return " ".join(" ".join(text).split())


def test_help_works_for_every_example():
    names = ["triangle", "cube", "earth", "envphong", "pose", "render", "ddp_fit", "cuda_graph"]
    # In parallel: each process spends most of its time importing torch.
    procs = {n: subprocess.Popen([sys.executable, os.path.join(EXAMPLES, f"{n}.py"), "--help"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in names}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name} --help failed: {err}"
        assert out.startswith("usage:") and "--device" in out and "--outdir" in out, name
        assert "--resolution" in out and "--display" in out and "--hold" in out, name
        assert "default: " in _option_help(out, "--resolution"), name
        if name not in ("triangle", "render"):
            assert "default: " in _option_help(out, "--iterations"), name


def test_triangle_writes_the_image(tmp_path):
    import triangle
    m = triangle.main(["--resolution", "48", "--device", "cpu", "--outdir", str(tmp_path)])
    im = read_png(tmp_path / "triangle.png")
    assert im.size == (48, 48) and im.mode == "RGB"
    assert abs(m["coverage"] - 0.32) < 0.03       # the triangle's area is 0.32 of the frame
    # Row 0 of the file is the top: the blue corner (clip y = 0.8) is near the top, red and green
    # at the bottom left and right.
    px = im.load()
    r, g, b = px[24, 8]
    assert b > 150 and r < 100 and g < 100
    r, g, b = px[7, 41]
    assert r > 150 and b < 100
    r, g, b = px[40, 41]
    assert g > 150 and b < 100


def test_earth_texture_fit_lowers_the_error(tmp_path):
    import earth
    m = earth.main(["--iterations", "5", "--resolution", "32", "--texture-size", "64", "--device", "cpu",
                    "--batch", "2", "--outdir", str(tmp_path)])
    assert m["loss1"] < m["loss0"]
    assert m["texture_error1"] < m["texture_error0"]
    for name in ("target.png", "initial.png", "final.png", "texture.png"):
        read_png(tmp_path / name)


def test_earth_no_mip_trains_too(tmp_path):
    import earth
    m = earth.main(["--iterations", "3", "--resolution", "24", "--texture-size", "32", "--device", "cpu",
                    "--batch", "1", "--no-mip", "--outdir", str(tmp_path)])
    assert m["loss1"] < m["loss0"]


def test_earth_texture_is_seamless_and_in_range():
    import earth
    tex = earth.earth_texture(64)
    assert tex.shape == (1, 64, 64, 3) and tex.min() >= 0 and tex.max() <= 1
    # The noise lives on the sphere: the columns either side of the u = 0 seam are close.
    assert (tex[0, :, 0] - tex[0, :, -1]).abs().mean() < 0.1


def test_envphong_fit_lowers_the_error(tmp_path):
    import envphong
    m = envphong.main(["--iterations", "5", "--resolution", "32", "--env-size", "8", "--device", "cpu",
                       "--batch", "2", "--outdir", str(tmp_path)])
    assert m["loss1"] < m["loss0"]
    assert m["env_error1"] < m["env_error0"]
    assert m["exponent1"] > m["exponent0"]         # from 4 toward the true 40
    read_png(tmp_path / "environment.png")


def test_envphong_cube_directions_select_their_own_face():
    import envphong
    from diffrast.reference import cube
    d = envphong.cube_directions(4, "cpu")
    face = cube.select_face(d.reshape(-1, 3)).reshape(6, 4, 4)
    assert torch.equal(face, torch.arange(6)[:, None, None].expand(6, 4, 4))
    # Looking up a cube map at its own texel directions returns the texels.
    env = torch.rand(1, 6, 4, 4, 3)
    import diffrast as dr
    out = dr.texture(env, d.reshape(1, 6 * 4, 4, 3), filter_mode="nearest", boundary_mode="cube")
    assert torch.allclose(out.reshape(6, 4, 4, 3), env[0])


def test_pose_fit_lowers_the_error(tmp_path):
    import pose
    m = pose.main(["--iterations", "5", "--resolution", "32", "--restarts", "2", "--device", "cpu",
                   "--outdir", str(tmp_path)])
    assert m["loss1"] < m["loss0"]
    assert 0 <= m["angle1"] <= 180


def test_render_writes_batched_views(tmp_path):
    import render
    m = render.main(["--views", "3", "--batch", "2", "--resolution", "32", "--device", "cpu",
                     "--outdir", str(tmp_path)])
    assert len(m["paths"]) == 3 and m["ms_per_frame"] > 0
    assert 0.05 < m["coverage"] < 0.9
    for k in range(3):
        im = read_png(tmp_path / f"view_{k:03d}.png")
        assert im.size == (32, 32) and im.mode == "RGBA"
    read_png(tmp_path / "sheet.png")


def test_render_builtin_cube(tmp_path):
    import render
    m = render.main(["--mesh", "cube", "--views", "2", "--batch", "2", "--resolution", "24",
                     "--device", "cpu", "--outdir", str(tmp_path)])
    assert m["coverage"] > 0.1


OBJ_TEXT = """# a unit square as one quad, then a triangle with negative indices
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
vn 0 0 1
f 1/1/1 2/2/1 3/3/1 4/4/1
v 2 0 0
f -3//1 -1//1 -2//1
"""


def test_obj_loader_triangulates_and_keeps_separate_indices(tmp_path):
    import objload
    path = tmp_path / "m.obj"
    path.write_text(OBJ_TEXT)
    m = objload.load_obj(str(path))
    assert m.pos.shape == (5, 3)
    assert m.tri_pos.tolist() == [[0, 1, 2], [0, 2, 3], [2, 4, 3]]
    assert m.uv is None                 # the last face has no texture coordinates
    assert m.normals.shape == (1, 3) and m.tri_nrm.tolist() == [[0, 0, 0]] * 3
    path.write_text(OBJ_TEXT.rsplit("v 2", 1)[0])
    m = objload.load_obj(str(path))
    assert m.tri_uv.tolist() == [[0, 1, 2], [0, 2, 3]] and m.uv.shape == (4, 2)


def test_obj_loader_round_trip_and_errors(tmp_path):
    import objload
    from diffrast import geometry
    pos, tri, uv = geometry.uv_sphere(4, 6)
    path = tmp_path / "s.obj"
    objload.save_obj(str(path), pos, tri, uv=uv, tri_uv=tri, decimals=6)
    m = objload.load_obj(str(path))
    assert torch.equal(m.tri_pos, tri) and torch.allclose(m.pos, pos, atol=1e-6)
    assert torch.allclose(m.uv, uv, atol=1e-6) and m.normals is None
    path.write_text("v 0 0 0\nv 1 0 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="line 3"):
        objload.load_obj(str(path))
    path.write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match="no faces"):
        objload.load_obj(str(path))


def test_shipped_knot_mesh_is_small_and_loads():
    import objload
    import render
    assert os.path.getsize(render.DEFAULT_MESH) < 150_000
    m = objload.load_obj(render.DEFAULT_MESH)
    assert m.tri_pos.shape == (1800, 3) and m.uv is not None and m.normals is not None


def test_geometry_helpers():
    from diffrast import geometry
    q = geometry.random_quaternion(5, torch.Generator().manual_seed(0))
    r = geometry.quaternion_to_matrix(q)
    eye = torch.eye(3).expand(5, 3, 3)
    assert torch.allclose(r[:, :3, :3] @ r[:, :3, :3].transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(r[:, :3, :3]), torch.ones(5), atol=1e-5)
    assert torch.allclose(geometry.quaternion_to_matrix(-3 * q), r, atol=1e-6)
    assert geometry.quaternion_angle(q, -q).max() < 0.05
    half_turn = torch.tensor([0.0, 0.0, 1.0, 0.0])             # 180 degrees about y
    assert abs(geometry.quaternion_angle(torch.tensor([1.0, 0, 0, 0]), half_turn).item() - 180) < 1e-3
    v = geometry.look_at((3.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    assert torch.allclose(v @ torch.tensor([3.0, 1.0, 2.0, 1.0]), torch.tensor([0.0, 0, 0, 1]), atol=1e-6)
    centre = v @ torch.tensor([0.0, 0, 0, 1])
    assert abs(centre[0]) < 1e-6 and abs(centre[1]) < 1e-6 and centre[2] < 0   # straight ahead
