// rasterize forward: the CUDA rasterizer behind RasterizeCudaContext, a visibility buffer (its
// backward pass, shared with the OpenGL path, is rasterize_backward.cu).
//
// 1. setup_and_raster_small: one thread per (image, triangle). It snaps the triangle to the
//    pixel grid and finds the pixel centres it may cover. A triangle whose candidate box holds at
//    most kThreadArea pixels is tested by its thread; one of up to big_area pixels by its whole
//    warp (32 pixels at a time, so a warp never waits for one thread's long loop); larger ones,
//    and those that must be clipped, go to a list. (setup_and_raster_by_warp: the same with a
//    warp per triangle, for small meshes.)
// 2. raster_big: blocks of 16 x 16 threads take contiguous runs of (big triangle, 16 x 16 tile)
//    pairs from that list, one pixel per thread.
//    A covered pixel takes the 64-bit atomicMin of (depth bits, triangle id): the nearest
//    surface wins, ties go to the lower id (as OpenGL's draw order does), and the result does not
//    depend on scheduling. Depth peeling keeps only depths strictly behind the previous layer's
//    (as the OpenGL path does: a coplanar duplicate never shows).
// 3. resolve: one thread per pixel computes (u, v, z/w, id + 1) and the barycentric derivatives
//    from the winning triangle (resolve_pixel of rasterize_resolve.cuh, which the OpenGL path's
//    resolve_ids shares), and zeroes the list counters for the next call.
//
// Coverage follows the OpenGL rasterizer: window coordinates are snapped to 1/256 pixel
// (8 sub-pixel bits) and tested with exact edge functions at pixel centres (integers, in int64
// or, for the small boxes of step 1, in doubles, which hold them exactly), with a top-left fill
// rule in image (row-down) terms, so two triangles sharing an edge cover each pixel once.
// A triangle with a vertex beyond the near or far plane is clipped as OpenGL clips it: the
// clipped polygon is snapped and drawn as a fan of triangles. Only when a clipped vertex lies at
// w = 0 or beyond the snapping range is the triangle tested in homogeneous coordinates instead
// (no division by w, double precision), its pixels clipped where their depth z/w leaves [-1, 1].
#include "common.cuh"
#include "triangle_id.cuh"
#include "rasterize_resolve.cuh"

namespace {

using namespace diffrast;

constexpr int kThreadArea = 16;  // candidate pixels a thread tests alone
constexpr int kWarpExtent = 1024;  // largest snapped extent (pixels) of a warp-tested triangle
constexpr int kTile = 16;
constexpr int kSetupThreads = 128;  // block size of setup_and_raster_small
constexpr unsigned long long kEmpty = ~0ull;
constexpr double kSnapLimit = 2097152.0;  // 2^21 pixels: snapped products stay within int64

enum { kHomogeneous = 0, kSnappedTriangle = 1, kSnappedPolygon = 2 };

struct Setup {
    float4 c[3];        // clip-space vertices
    long long X[5], Y[5];  // snapped window coordinates (1/256 pixel) of the triangle or polygon
    int num_points;     // kSnappedPolygon: vertices of the clipped polygon (3 to 5)
    int x0, y0, x1, y1;  // candidate pixel box, inclusive; empty when x0 > x1
    double n[3][3];      // e_i(q) = n[i] . (qx, qy, 1), the barycentric edge functions (unnormalized)
    double dz[3];        // depth plane in pixel units (depth_at)
    double det;          // det(c_0, c_1, c_2) = sum_i w_i e_i(q) for every q
    int mode;            // kSnappedTriangle, kSnappedPolygon (clipped by the near or far plane,
                         // as OpenGL clips, then snapped) or kHomogeneous (tested unprojected)
    int tri_id;          // global triangle index
};

__device__ __forceinline__ bool finite4(float4 p)
{
    return is_finite(p.x) && is_finite(p.y) && is_finite(p.z) && is_finite(p.w);
}

__device__ __forceinline__ float4 lerp4(float4 a, float4 b, float t)
{
    return make_float4(a.x + t * (b.x - a.x), a.y + t * (b.y - a.y), a.z + t * (b.z - a.z),
                       a.w + t * (b.w - a.w));
}

// Clips a convex polygon (n <= 5 vertices in, <= n + 1 out) against the half space
// d(p) = sz * p.z + p.w >= 0 (sz = 1: near plane z >= -w; sz = -1: far plane z <= w).
__device__ int clip_plane(const float4* in, int n, float4* out, float sz)
{
    int m = 0;
    for (int i = 0; i < n; ++i) {
        const float4 a = in[i], b = in[(i + 1) % n];
        const float da = sz * a.z + a.w, db = sz * b.z + b.w;
        if (da >= 0.f)
            out[m++] = a;
        if ((da >= 0.f) != (db >= 0.f))
            out[m++] = lerp4(a, b, da / (da - db));
    }
    return m;
}

// Loads the clip-space vertices of triangle t; false when an index is out of range, a coordinate
// is not finite or the triangle lies entirely beyond one clip plane (nothing to draw).
__device__ __forceinline__ bool load_triangle(const float* __restrict__ pos, const int* __restrict__ tri,
                                              int num_vertices, long long vbase, int t, float4 c[3])
{
    int vi[3];
    if (!triangle_vertices(tri, t, num_vertices, vi))
        return false;
    for (int i = 0; i < 3; ++i) {
        c[i] = load4(pos, vbase + vi[i]);
        if (!finite4(c[i]))
            return false;
    }
    const float4 a = c[0], b = c[1], d = c[2];
    return !((a.z < -a.w && b.z < -b.w && d.z < -d.w) || (a.z > a.w && b.z > b.w && d.z > d.w) ||
             (a.x < -a.w && b.x < -b.w && d.x < -d.w) || (a.x > a.w && b.x > b.w && d.x > d.w) ||
             (a.y < -a.w && b.y < -b.w && d.y < -d.w) || (a.y > a.w && b.y > b.w && d.y > d.w));
}

// Window coordinates of points c[0..n) snapped to 1/256 pixel, when every w > 0 and the points lie
// within the snapping range; false otherwise.
__device__ __forceinline__ bool snap(const float4* c, int n, int width, int height, long long* X, long long* Y)
{
    const float hw = 0.5f * width, hh = 0.5f * height;
    for (int i = 0; i < n; ++i) {
        if (!(c[i].w > 0.f))
            return false;
        const float xw = (c[i].x / c[i].w) * hw + hw;
        const float yw = (c[i].y / c[i].w) * hh + hh;
        if (!(fabsf(xw) < kSnapLimit && fabsf(yw) < kSnapLimit))
            return false;
        X[i] = __float2ll_rn(xw * 256.f);
        Y[i] = __float2ll_rn(yw * 256.f);
    }
    return true;
}

// Whether every vertex lies between the near and far planes (-w <= z <= w): OpenGL clips the
// triangle otherwise.
__device__ __forceinline__ bool within_depth_range(const float4 c[3])
{
    return c[0].z >= -c[0].w && c[0].z <= c[0].w && c[1].z >= -c[1].w && c[1].z <= c[1].w &&
           c[2].z >= -c[2].w && c[2].z <= c[2].w;
}

// The inclusive box of pixels whose centres lie within [xmin, xmax] x [ymin, ymax] (window
// coordinates), clamped to the viewport; empty when x0 > x1 or y0 > y1.
__device__ __forceinline__ void pixel_box(float xmin, float ymin, float xmax, float ymax, int width,
                                          int height, int& x0, int& y0, int& x1, int& y1)
{
    x0 = max(0, (int)ceilf(fmaxf(xmin, -1.f) - 0.5f));
    y0 = max(0, (int)ceilf(fmaxf(ymin, -1.f) - 0.5f));
    x1 = min(width - 1, (int)floorf(fminf(xmax, (float)width + 1.f) - 0.5f));
    y1 = min(height - 1, (int)floorf(fminf(ymax, (float)height + 1.f) - 0.5f));
}

// The box of snapped points X, Y [0, n).
__device__ __forceinline__ void snapped_box(const long long* X, const long long* Y, int n, int width,
                                            int height, int& x0, int& y0, int& x1, int& y1)
{
    float xmin = 1e30f, xmax = -1e30f, ymin = 1e30f, ymax = -1e30f;
    for (int i = 0; i < n; ++i) {
        const float x = X[i] * (1.f / 256.f), y = Y[i] * (1.f / 256.f);
        xmin = fminf(xmin, x); xmax = fmaxf(xmax, x);
        ymin = fminf(ymin, y); ymax = fmaxf(ymax, y);
    }
    pixel_box(xmin, ymin, xmax, ymax, width, height, x0, y0, x1, y1);
}

// e_i = (c_j x c_k) . q, the unnormalized barycentric edge functions of NDC point q = (qx, qy, 1);
// sum_i w_i e_i = det(c_0, c_1, c_2) for every q, so z/w = sum_i z_i e_i / det is affine in q:
// the depth plane, returned in pixel units (z/w = dz[0] x + dz[1] y + dz[2] at the centre of
// pixel (x, y), see depth_at). False when det = 0 (the triangle's plane passes through the eye).
__device__ __forceinline__ bool depth_plane(const float4 c[3], int width, int height, double n[3][3],
                                            double& det, double dz[3])
{
    for (int i = 0; i < 3; ++i) {
        const float4 cj = c[(i + 1) % 3], ck = c[(i + 2) % 3];
        cross3(cj.x, cj.y, cj.w, ck.x, ck.y, ck.w, n[i][0], n[i][1], n[i][2]);
    }
    det = n[0][2] * c[0].w + n[1][2] * c[1].w + n[2][2] * c[2].w;
    if (!(det != 0.0))
        return false;
    const double inv_det = 1.0 / det;
    double ndc[3];
    for (int k = 0; k < 3; ++k)
        ndc[k] = (n[0][k] * c[0].z + n[1][k] * c[1].z + n[2][k] * c[2].z) * inv_det;
    // qx = (x + 0.5) * 2 / width - 1 = x * (2 / width) + (1 / width - 1), likewise qy.
    const double sx = 2.0 / width, sy = 2.0 / height;
    dz[0] = ndc[0] * sx;
    dz[1] = ndc[1] * sy;
    dz[2] = ndc[0] * (0.5 * sx - 1.0) + ndc[1] * (0.5 * sy - 1.0) + ndc[2];
    return true;
}

// The depth z/w of a depth plane at the centre of pixel (x, y); every kernel computes the keys'
// depths with this one expression, so they agree to the bit.
__device__ __forceinline__ double depth_at(const double dz[3], int x, int y)
{
    return fma(dz[0], (double)x, fma(dz[1], (double)y, dz[2]));
}

// Fills s for triangle t of image b; returns false when nothing can be drawn.
__device__ bool setup_triangle(const float* __restrict__ pos, const int* __restrict__ tri,
                               int num_vertices, long long vbase, int t, int width, int height, Setup& s)
{
    s.x0 = 1; s.x1 = 0;
    if (!load_triangle(pos, tri, num_vertices, vbase, t, s.c))
        return false;
    s.tri_id = t;
    s.mode = kHomogeneous;
    if (within_depth_range(s.c) && snap(s.c, 3, width, height, s.X, s.Y)) {
        const long long area = (s.X[1] - s.X[0]) * (s.Y[2] - s.Y[0]) - (s.Y[1] - s.Y[0]) * (s.X[2] - s.X[0]);
        if (area == 0)
            return false;  // zero area after snapping: OpenGL draws nothing
        s.mode = kSnappedTriangle;
        s.num_points = 3;
        snapped_box(s.X, s.Y, 3, width, height, s.x0, s.y0, s.x1, s.y1);
    } else {
        // Clipped by the near and far planes as OpenGL clips: a convex polygon, drawn as a fan
        // of snapped triangles when all its vertices project (w > 0) within the snapping range.
        float4 p0[5] = {s.c[0], s.c[1], s.c[2]}, p1[6];
        int n = clip_plane(p0, 3, p1, 1.f);
        n = clip_plane(p1, n, p0, -1.f);
        if (n < 3)
            return false;
        if (snap(p0, n, width, height, s.X, s.Y)) {
            s.mode = kSnappedPolygon;
            s.num_points = n;
            snapped_box(s.X, s.Y, n, width, height, s.x0, s.y0, s.x1, s.y1);
        } else {
            const float hw = 0.5f * width, hh = 0.5f * height;
            float xmin = 1e30f, xmax = -1e30f, ymin = 1e30f, ymax = -1e30f;
            for (int i = 0; i < n; ++i) {
                if (!(p0[i].w > 0.f)) {  // touches w = 0: bound by the viewport
                    xmin = ymin = -1e30f; xmax = ymax = 1e30f;
                    break;
                }
                const float x = (p0[i].x / p0[i].w) * hw + hw, y = (p0[i].y / p0[i].w) * hh + hh;
                xmin = fminf(xmin, x); xmax = fmaxf(xmax, x);
                ymin = fminf(ymin, y); ymax = fmaxf(ymax, y);
            }
            // Float rounding of the projection: widen by a pixel; the test itself is exact.
            pixel_box(xmin - 1.f, ymin - 1.f, xmax + 1.f, ymax + 1.f, width, height, s.x0, s.y0, s.x1, s.y1);
        }
    }
    if (!depth_plane(s.c, width, height, s.n, s.det, s.dz))
        return false;  // the triangle's plane passes through the eye: nothing visible
    return s.x0 <= s.x1 && s.y0 <= s.y1;
}

// Edge i -> j of a counter-clockwise snapped triangle covers a pixel centre exactly on it when
// the edge is a top or left edge in image terms (rows down): in window coordinates (y up) that
// is a bottom edge (dy == 0, dx > 0) or a left edge (dy < 0).
__device__ __forceinline__ bool top_left(long long dx, long long dy)
{
    return dy < 0 || (dy == 0 && dx > 0);
}

__device__ __forceinline__ bool edge_covers(long long e, long long dx, long long dy)
{
    return e > 0 || (e == 0 && top_left(dx, dy));
}

// Whether the snapped triangle (X[i], Y[i]), either orientation, covers the pixel centre (px, py)
// (1/256 pixel units), with the fill rule; a zero-area triangle covers nothing.
__device__ __forceinline__ bool snapped_covers(long long X0, long long Y0, long long X1, long long Y1,
                                               long long X2, long long Y2, long long px, long long py)
{
    const long long area = (X1 - X0) * (Y2 - Y0) - (Y1 - Y0) * (X2 - X0);
    if (area == 0)
        return false;
    if (area < 0) {  // counter-clockwise order
        long long t = X1; X1 = X2; X2 = t;
        t = Y1; Y1 = Y2; Y2 = t;
    }
    const long long X[3] = {X0, X1, X2}, Y[3] = {Y0, Y1, Y2};
    for (int i = 0; i < 3; ++i) {
        const int j = i == 2 ? 0 : i + 1;
        const long long dx = X[j] - X[i], dy = Y[j] - Y[i];
        if (!edge_covers(dx * (py - Y[i]) - dy * (px - X[i]), dx, dy))
            return false;
    }
    return true;
}

// Whether the triangle covers pixel (x, y); on success its depth z/w (from the depth plane).
// Snapped, as OpenGL draws it after clipping, the depth of a covered pixel is clamped to the
// depth range (snapping may move a pixel a hair past the near or far plane).
__device__ bool covers(const Setup& s, int x, int y, int width, int height, float& depth)
{
    double d;
    if (s.mode != kHomogeneous) {
        const long long px = 256LL * x + 128, py = 256LL * y + 128;
        bool inside = false;
        for (int i = 1; i + 1 < s.num_points && !inside; ++i)  // a fan from the first vertex
            inside = snapped_covers(s.X[0], s.Y[0], s.X[i], s.Y[i], s.X[i + 1], s.Y[i + 1], px, py);
        if (!inside)
            return false;
        d = fmin(fmax(depth_at(s.dz, x, y), -1.0), 1.0);
    } else {
        const double qx = (x + 0.5) * 2.0 / width - 1.0, qy = (y + 0.5) * 2.0 / height - 1.0;
        // The point of the triangle on the pixel's ray is sum_i b_i c_i = t (qx, qy, 1) with
        // b_i = e_i / sum and t = det / sum, its w. Inside iff every b_i >= 0, in front iff t > 0.
        double e[3];
        for (int i = 0; i < 3; ++i)
            e[i] = s.n[i][0] * qx + s.n[i][1] * qy + s.n[i][2];
        const double sum = e[0] + e[1] + e[2];
        if (!(e[0] * sum >= 0.0 && e[1] * sum >= 0.0 && e[2] * sum >= 0.0 && s.det * sum > 0.0))
            return false;
        d = depth_at(s.dz, x, y);  // clipped here by the near and far planes
        if (!(d >= -1.0 && d <= 1.0))
            return false;
    }
    depth = (float)d;
    return true;
}

__device__ __forceinline__ unsigned long long make_key(float depth, int tri_id)
{
    unsigned d = __float_as_uint(depth);
    d = (d & 0x80000000u) ? ~d : (d | 0x80000000u);  // order-preserving float -> uint
    return ((unsigned long long)d << 32) | (unsigned)tri_id;
}

// Keeps key at pixel p when it is nearer than what is there (and, peeling, strictly behind the
// previous layer's depth, as OpenGL's peeling: a coplanar duplicate never shows). The atomicMin
// is a reduction the thread does not wait for; loading keys[p] first to skip it costs a round
// trip per pixel and measured 10-45% slower in every benchmark scene.
__device__ __forceinline__ void store_key(unsigned long long key, long long p,
                                          unsigned long long* __restrict__ keys,
                                          const unsigned long long* __restrict__ prev)
{
    if (prev != nullptr && (key >> 32) <= (prev[p] >> 32))
        return;
    atomicMin(keys + p, key);
}

__device__ __forceinline__ void write_pixel(const Setup& s, int x, int y, int width, int height,
                                            unsigned long long* __restrict__ keys,
                                            const unsigned long long* __restrict__ prev,
                                            long long image_offset)
{
    float depth;
    if (covers(s, x, y, width, height, depth))
        store_key(make_key(depth, s.tri_id), image_offset + (long long)y * width + x, keys, prev);
}

// A triangle whose box setup_and_raster_small tests itself: the snapped edge functions at the
// centre of the box's first pixel, less 1 on edges that are not top-left (so a pixel is covered
// iff all three are >= 0), and their steps per pixel. The values are integers below 2^40 (the
// snapped extent is at most kWarpExtent pixels), exact in double precision.
struct BoxRaster {
    double e0[3], ex[3], ey[3];
    double dz[3];       // depth plane in pixel units (depth_at)
    int x0, y0, w, h;   // the box
    int tri_id;
    long long image_offset;
};

// Tests pixels first, first + step, ... of the box (row by row).
__device__ __forceinline__ void raster_box(const BoxRaster& r, int first, int step, int width, int height,
                                           unsigned long long* __restrict__ keys,
                                           const unsigned long long* __restrict__ prev)
{
    const int area = r.w * r.h;
    for (int k = first; k < area; k += step) {
        const int j = k / r.w, i = k - j * r.w;
        const double fi = i, fj = j;
        if (r.e0[0] + r.ex[0] * fi + r.ey[0] * fj < 0.0 || r.e0[1] + r.ex[1] * fi + r.ey[1] * fj < 0.0 ||
            r.e0[2] + r.ex[2] * fi + r.ey[2] * fj < 0.0)
            continue;
        const int x = r.x0 + i, y = r.y0 + j;
        const double d = fmin(fmax(depth_at(r.dz, x, y), -1.0), 1.0);  // as covers()
        store_key(make_key((float)d, r.tri_id), r.image_offset + (long long)y * width + x, keys, prev);
    }
}

// Work item w -> (image b, global triangle t, first vertex of the image's vertex set).
__device__ __forceinline__ void work_item(long long w, int num_triangles, int num_vertices,
                                          int instanced, const long long* __restrict__ range_offsets,
                                          const int* __restrict__ range_starts, int num_images,
                                          int& b, int& t, long long& vbase)
{
    if (instanced) {
        b = (int)(w / num_triangles);
        t = (int)(w - (long long)b * num_triangles);
        vbase = (long long)b * num_vertices;
    } else {
        int lo = 0, hi = num_images - 1;  // last image whose offset <= w
        while (lo < hi) {
            const int mid = (lo + hi + 1) >> 1;
            if (range_offsets[mid] <= w) lo = mid; else hi = mid - 1;
        }
        b = lo;
        t = range_starts[b] + (int)(w - range_offsets[b]);
        vbase = 0;
    }
}

enum { kNothing = 0, kByThread = 1, kByWarp = 2, kBig = 3 };

// Sorts work item w (triangle t of image b): nothing to draw, a box for its thread or its warp
// (r filled), or a big triangle for raster_big (tiles: its number of 16 x 16 tiles).
__device__ __forceinline__ int classify(const float* __restrict__ pos, const int* __restrict__ tri,
                                        int num_vertices, int num_triangles, int instanced,
                                        const long long* __restrict__ range_offsets,
                                        const int* __restrict__ range_starts, int num_images,
                                        long long w, int width, int height, int big_area,
                                        BoxRaster& r, long long& tiles)
{
    if (!instanced && w >= range_offsets[num_images])
        return kNothing;  // past the last range (ranges on the GPU: the items are an upper bound)
    int b, t;
    long long vbase;
    work_item(w, num_triangles, num_vertices, instanced, range_offsets, range_starts, num_images, b, t, vbase);
    if (t < 0 || t >= num_triangles)
        return kNothing;
    float4 c[3];
    if (!load_triangle(pos, tri, num_vertices, vbase, t, c))
        return kNothing;
    long long X[3], Y[3];
    int x0, y0, x1, y1;
    if (!within_depth_range(c) || !snap(c, 3, width, height, X, Y)) {  // raster_big, whatever its size
        Setup s;
        if (!setup_triangle(pos, tri, num_vertices, vbase, t, width, height, s))
            return kNothing;
        tiles = (long long)((s.x1 - s.x0) / kTile + 1) * ((s.y1 - s.y0) / kTile + 1);
        return kBig;
    }
    const long long area2 = (X[1] - X[0]) * (Y[2] - Y[0]) - (Y[1] - Y[0]) * (X[2] - X[0]);
    if (area2 == 0)
        return kNothing;  // zero area after snapping: OpenGL draws nothing
    snapped_box(X, Y, 3, width, height, x0, y0, x1, y1);
    if (x0 > x1 || y0 > y1)
        return kNothing;
    const long long box = (long long)(x1 - x0 + 1) * (y1 - y0 + 1);
    const long long extent = 256LL * kWarpExtent;
    if (box > big_area || max(max(X[0], X[1]), X[2]) - min(min(X[0], X[1]), X[2]) > extent ||
        max(max(Y[0], Y[1]), Y[2]) - min(min(Y[0], Y[1]), Y[2]) > extent) {
        tiles = (long long)((x1 - x0) / kTile + 1) * ((y1 - y0) / kTile + 1);
        return kBig;  // raster_big sets it up again (a det = 0 triangle is dropped there)
    }
    double n[3][3], det;
    if (!depth_plane(c, width, height, n, det, r.dz))
        return kNothing;
    const int o1 = area2 < 0 ? 2 : 1, o2 = area2 < 0 ? 1 : 2;  // counter-clockwise order
    const long long XC[3] = {X[0], X[o1], X[o2]}, YC[3] = {Y[0], Y[o1], Y[o2]};
    const long long px0 = 256LL * x0 + 128, py0 = 256LL * y0 + 128;
    for (int i = 0; i < 3; ++i) {
        const int j = i == 2 ? 0 : i + 1;
        const long long dx = XC[j] - XC[i], dy = YC[j] - YC[i];
        const long long e = dx * (py0 - YC[i]) - dy * (px0 - XC[i]);
        r.e0[i] = (double)(top_left(dx, dy) ? e : e - 1);
        r.ex[i] = (double)(-256LL * dy);
        r.ey[i] = (double)(256LL * dx);
    }
    r.x0 = x0; r.y0 = y0; r.w = x1 - x0 + 1; r.h = y1 - y0 + 1;
    r.tri_id = t;
    r.image_offset = (long long)b * width * height;
    return box <= kThreadArea ? kByThread : kByWarp;
}

// Appends work item w, a big triangle of `tiles` tiles, to the list: one 64-bit counter,
// *big_state = (count << tile_bits) + tiles so far, so the list is in order of first tile.
__device__ __forceinline__ void push_big(long long w, long long tiles, int tile_bits,
                                         long long* __restrict__ big_items,
                                         long long* __restrict__ big_start,
                                         unsigned long long* __restrict__ big_state)
{
    const unsigned long long old = atomicAdd(big_state, (1ull << tile_bits) + (unsigned long long)tiles);
    const long long slot = (long long)(old >> tile_bits);
    big_items[slot] = w;
    big_start[slot] = (long long)(old & ((1ull << tile_bits) - 1));
}

}  // namespace

// Classifies work item w (classify) with the parameters of the launch.
__device__ __forceinline__ int classify_item(const RasterizeForwardParams& kp, long long w,
                                             BoxRaster& r, long long& tiles)
{
    return classify(kp.pos, kp.tri, kp.num_vertices, kp.num_triangles, kp.instanced,
                    kp.range_offsets, kp.range_starts, kp.num_images, w, kp.width, kp.height,
                    kp.big_area, r, tiles);
}

// setup_and_raster_small: work items item_offset .. item_offset + num_items - 1, one per
// thread; big triangles go to the list of push_big (big_items: work item, big_start: first
// tile).
__device__ __forceinline__ void setup_and_raster_small_impl(const RasterizeForwardParams& kp)
{
    __shared__ BoxRaster boxes[kSetupThreads];
    const int width = kp.width, height = kp.height;
    unsigned long long* __restrict__ keys = kp.keys;
    const long long local = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned long long* prev_keys = kp.use_prev ? kp.prev : nullptr;
    BoxRaster r;
    int kind = kNothing;
    if (local < kp.num_items) {
        const long long w = kp.item_offset + local;
        long long tiles = 0;
        kind = classify_item(kp, w, r, tiles);
        if (kind == kBig)
            push_big(w, tiles, kp.tile_bits, kp.big_items, kp.big_start, kp.big_state);
        else if (kind == kByThread) {
            raster_box(r, 0, 1, width, height, keys, prev_keys);
        }
    }
    // Boxes of up to big_area pixels: the warp tests them one after the other, 32 pixels at a time.
    unsigned pending = __ballot_sync(kFullWarp, kind == kByWarp);
    if (pending == 0)
        return;
    const int lane = lane_id();
    BoxRaster* warp_boxes = boxes + (threadIdx.x - lane);
    if (kind == kByWarp)
        warp_boxes[lane] = r;
    __syncwarp();
    while (pending) {
        const int src = __ffs(pending) - 1;
        pending &= pending - 1;
        raster_box(warp_boxes[src], lane, 32, width, height, keys, prev_keys);
    }
}

// setup_and_raster_by_warp: as setup_and_raster_small with a warp per work item instead of a
// thread: for few triangles, which would leave most of the GPU idle one per thread. Each lane
// sorts the triangle (all get the same answer); the warp tests boxes of up to big_area pixels 32
// at a time.
__device__ __forceinline__ void setup_and_raster_by_warp_impl(const RasterizeForwardParams& kp)
{
    const long long local = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = lane_id();
    if (local >= kp.num_items)
        return;
    const long long w = kp.item_offset + local;
    long long tiles = 0;
    BoxRaster r;
    const int kind = classify_item(kp, w, r, tiles);
    if (kind == kBig) {
        if (lane == 0)
            push_big(w, tiles, kp.tile_bits, kp.big_items, kp.big_start, kp.big_state);
    } else if (kind != kNothing) {
        raster_box(r, lane, 32, kp.width, kp.height, kp.keys, kp.use_prev ? kp.prev : nullptr);
    }
}

// raster_big: the list of setup_and_raster_small in tiles: each block takes a contiguous run of
// (triangle, tile) items, so it sets a triangle up once for all of its tiles in the run and
// finds its first triangle with a single binary search.
__device__ __forceinline__ void raster_big_impl(const RasterizeForwardParams& kp)
{
    const int width = kp.width, height = kp.height, tile_bits = kp.tile_bits;
    const long long* __restrict__ big_start = kp.big_start;
    __shared__ Setup s;
    __shared__ long long slot, slot_begin, slot_end;
    __shared__ int valid, image;
    const unsigned long long state = *kp.big_state;
    const long long count = (long long)(state >> tile_bits);
    const long long total = (long long)(state & ((1ull << tile_bits) - 1));
    if (count == 0)
        return;
    const long long per_block = (total + gridDim.x - 1) / gridDim.x;
    const long long first = (long long)blockIdx.x * per_block;
    const long long last = min(total, first + per_block);
    const bool lead = threadIdx.x == 0 && threadIdx.y == 0;
    if (lead) {
        slot = -1;
        slot_end = 0;
    }
    for (long long item = first; item < last; ++item) {
        if (lead && item >= slot_end) {
            if (slot < 0) {  // last slot whose first tile is at or before item
                long long lo = 0, hi = count - 1;
                while (lo < hi) {
                    const long long mid = (lo + hi + 1) >> 1;
                    if (big_start[mid] <= item) lo = mid; else hi = mid - 1;
                }
                slot = lo;
            } else {
                do { ++slot; } while (slot + 1 < count && big_start[slot + 1] <= item);
            }
            slot_begin = big_start[slot];
            slot_end = slot + 1 < count ? big_start[slot + 1] : total;
            int b, t;
            long long vbase;
            work_item(kp.big_items[slot], kp.num_triangles, kp.num_vertices, kp.instanced,
                      kp.range_offsets, kp.range_starts, kp.num_images, b, t, vbase);
            Setup local;
            valid = setup_triangle(kp.pos, kp.tri, kp.num_vertices, vbase, t, width, height, local);
            s = local;
            image = b;
        }
        __syncthreads();
        if (valid) {
            const long long tile = item - slot_begin;
            const int tiles_x = (s.x1 - s.x0) / kTile + 1;
            const int ty = (int)(tile / tiles_x), tx = (int)(tile - (long long)ty * tiles_x);
            const int x = s.x0 + tx * kTile + threadIdx.x, y = s.y0 + ty * kTile + threadIdx.y;
            if (x <= s.x1 && y <= s.y1)
                write_pixel(s, x, y, width, height, kp.keys, kp.use_prev ? kp.prev : nullptr,
                            (long long)image * width * height);
        }
        __syncthreads();
    }
}

// resolve: the outputs of every pixel from its key. The first num_states threads also zero the
// big-list counters for the next call.
__device__ __forceinline__ void resolve_impl(const RasterizeForwardParams& kp)
{
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p < kp.num_states)
        kp.big_states[p] = 0;
    if (p >= (long long)kp.width * kp.height * kp.num_images)
        return;
    const unsigned long long key = kp.keys[p];
    resolve_pixel(kp, p, key != kEmpty ? (int)(key & 0xffffffffu) : -1);
}
