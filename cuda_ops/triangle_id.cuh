// Encoding and decoding of the triangle id stored in rast[..., 3], mirroring
// diffrast/triangle_id.py.
//
// rast[..., 3] holds triangle_id + 1 (0 for an empty pixel). Values up to 2^24 are the float of
// that integer; a larger value n is stored as the float whose bit pattern is 0x4a800000 + n.
#pragma once

namespace diffrast {

constexpr float kTriangleIdExactLimit = 16777216.0f;  // 2^24
constexpr long long kTriangleIdBias = 0x4a800000LL;

// The stored code of triangle_id + 1 (n >= 0; 0 for an empty pixel). n must not exceed
// MAX_TRIANGLES of triangle_id.py (the callers check the triangle count on the host).
__device__ __forceinline__ float encode_triangle(int id_plus_one)
{
    if (id_plus_one <= (1 << 24))
        return (float)id_plus_one;
    return __uint_as_float((unsigned)id_plus_one + (unsigned)kTriangleIdBias);
}

// The triangle index in [0, num_triangles) of a stored code, or -1 for an empty pixel and for
// anything corrupt: NaN, +-inf, values below 1, ids beyond the triangle count. Values up to 2^24
// are truncated toward zero, as torch's float -> int64 conversion does in the reference.
__device__ __forceinline__ int decode_triangle(float code, int num_triangles)
{
    const unsigned bits = __float_as_uint(code);
    if (!(code >= 1.0f) || (bits & 0x7f800000u) == 0x7f800000u)
        return -1;
    const long long n = code > kTriangleIdExactLimit ? (long long)bits - kTriangleIdBias
                                                     : (long long)code;
    return (n >= 1 && n <= (long long)num_triangles) ? (int)(n - 1) : -1;
}

// Looks up the vertex indices of triangle t (already in range). False when one of them lies
// outside [0, num_vertices): such a triangle is treated like an empty pixel, so that a corrupt
// index tensor can never lead to an out-of-bounds read or write.
__device__ __forceinline__ bool triangle_vertices(const int* __restrict__ tri, int t,
                                                  int num_vertices, int vi[3])
{
    const long long base = 3LL * t;
    bool ok = true;
    for (int c = 0; c < 3; ++c) {
        vi[c] = tri[base + c];
        ok = ok && vi[c] >= 0 && vi[c] < num_vertices;
    }
    return ok;
}

}  // namespace diffrast

namespace diffrast {

// A covered pixel's triangle and the rows of its three corners in a vertex array viewed as
// [rows, ...]: image * num_vertices + vertex when the array holds a vertex set per image
// (batched), else the vertex itself. False, with tri = -1 and rows 0, for an empty pixel, a
// corrupt code or a triangle with a vertex index out of range.
struct PixelTriangle {
    int tri;            // triangle index, or -1
    long long row[3];   // rows of the corners
};

__device__ __forceinline__ bool pixel_triangle(float code, int image, const int* __restrict__ tri,
                                               int num_triangles, int num_vertices, int batched,
                                               PixelTriangle& pt)
{
    pt.row[0] = pt.row[1] = pt.row[2] = 0;
    pt.tri = decode_triangle(code, num_triangles);
    int vi[3];
    if (pt.tri < 0 || !triangle_vertices(tri, pt.tri, num_vertices, vi)) {
        pt.tri = -1;
        return false;
    }
    const long long base = batched ? (long long)image * num_vertices : 0;
    for (int c = 0; c < 3; ++c)
        pt.row[c] = base + vi[c];
    return true;
}

}  // namespace diffrast
