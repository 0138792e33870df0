// The resolve step shared by both rasterizers: from the triangle a pixel shows to rast[p] =
// (u, v, z/w, id + 1) and rast_db[p] = (du/dX, du/dY, dv/dX, dv/dY), computed in double
// precision from the float32 clip-space vertices and rounded once. RasterizeCudaContext's
// resolve (rasterize_forward.cu) and RasterizeGLContext's resolve_ids (rasterize_resolve.cu)
// both call resolve_pixel, so the two contexts return the same bits for the same visible
// triangle; diffrast/reference/rasterize.py (resolve) is the torch reference.
#pragma once
#include "common.cuh"
#include "triangle_id.cuh"

namespace diffrast {

__device__ __forceinline__ void cross3(double ax, double ay, double aw, double bx, double by,
                                       double bw, double& x, double& y, double& w)
{
    x = ay * bw - aw * by;
    y = aw * bx - ax * bw;
    w = ax * by - ay * bx;
}

// Perspective-correct barycentrics at NDC point (qx, qy): e_i = (c_j x c_k) . (qx, qy, 1) with
// c_i = (x_i, y_i, w_i); u = e0 / s, v = e1 / s, s = e0 + e1 + e2. Also the derivatives of u and
// v with respect to qx, qy (quotient rule).
struct Bary {
    double e0, e1, e2, s, u, v;
    double n0x, n0y, n1x, n1y, nsx, nsy;
};

__device__ __forceinline__ Bary barycentrics(const float4* c, double qx, double qy)
{
    Bary r;
    double n0x, n0y, n0w, n1x, n1y, n1w, n2x, n2y, n2w;
    cross3(c[1].x, c[1].y, c[1].w, c[2].x, c[2].y, c[2].w, n0x, n0y, n0w);
    cross3(c[2].x, c[2].y, c[2].w, c[0].x, c[0].y, c[0].w, n1x, n1y, n1w);
    cross3(c[0].x, c[0].y, c[0].w, c[1].x, c[1].y, c[1].w, n2x, n2y, n2w);
    const double nsx = n0x + n1x + n2x, nsy = n0y + n1y + n2y, nsw = n0w + n1w + n2w;
    r.e0 = n0x * qx + n0y * qy + n0w;
    r.e1 = n1x * qx + n1y * qy + n1w;
    r.e2 = n2x * qx + n2y * qy + n2w;
    r.s = nsx * qx + nsy * qy + nsw;
    r.u = r.e0 / r.s;
    r.v = r.e1 / r.s;
    r.n0x = n0x; r.n0y = n0y; r.n1x = n1x; r.n1y = n1y; r.nsx = nsx; r.nsy = nsy;
    return r;
}

__device__ __forceinline__ double depth_of(const float4* c, const Bary& r)
{
    const double w2 = 1.0 - r.u - r.v;
    const double z = r.u * c[0].z + r.v * c[1].z + w2 * c[2].z;
    const double w = r.u * c[0].w + r.v * c[1].w + w2 * c[2].w;
    return z / w;
}

// rast[p] = (u, v, z/w, t + 1) and rast_db[p] = (du/dX, du/dY, dv/dX, dv/dY) for triangle t at
// pixel p; zeros where t < 0 (no triangle) or its indices are out of range.
__device__ __forceinline__ void resolve_pixel(const RasterizeForwardParams& kp, long long p, int t)
{
    const int width = kp.width, height = kp.height, num_vertices = kp.num_vertices;
    const bool output_db = kp.output_db;
    const long long pixels = (long long)width * height;
    float4 out = make_float4(0.f, 0.f, 0.f, 0.f), db = make_float4(0.f, 0.f, 0.f, 0.f);
    int vi[3];
    if (t >= 0 && triangle_vertices(kp.tri, t, num_vertices, vi)) {
        const int b = (int)(p / pixels);
        const long long rem = p - (long long)b * pixels;
        const int y = (int)(rem / width), x = (int)(rem - (long long)y * width);
        const long long vbase = kp.instanced ? (long long)b * num_vertices : 0;
        float4 c[3];
        for (int i = 0; i < 3; ++i)
            c[i] = load4(kp.pos, vbase + vi[i]);
        const double sx = 2.0 / width, sy = 2.0 / height;
        const Bary r = barycentrics(c, (x + 0.5) * 2.0 / width - 1.0, (y + 0.5) * 2.0 / height - 1.0);
        out = make_float4((float)r.u, (float)r.v, (float)depth_of(c, r), encode_triangle(t + 1));
        if (output_db) {
            const double inv_s2 = 1.0 / (r.s * r.s);
            db = make_float4((float)((r.n0x * r.s - r.e0 * r.nsx) * inv_s2 * sx),
                             (float)((r.n0y * r.s - r.e0 * r.nsy) * inv_s2 * sy),
                             (float)((r.n1x * r.s - r.e1 * r.nsx) * inv_s2 * sx),
                             (float)((r.n1y * r.s - r.e1 * r.nsy) * inv_s2 * sy));
        }
    }
    reinterpret_cast<float4*>(kp.rast)[p] = out;
    if (output_db)
        reinterpret_cast<float4*>(kp.rast_db)[p] = db;
}

}  // namespace diffrast
