// The CUDA rasterizer behind RasterizeCudaContext: a visibility buffer.
//
// 1. setup_and_raster_small: one thread per (image, triangle). It finds the pixels whose centres
//    the triangle may cover (after clipping against the near and far planes) and, when there are
//    at most kSmallArea (256) of them, tests them itself; larger triangles go to a list.
// 2. raster_big: blocks of 16 x 16 threads take contiguous runs of (big triangle, 16 x 16 tile)
//    pairs from that list, one pixel per thread.
//    A covered pixel takes the 64-bit atomicMin of (depth bits, triangle id): the nearest
//    surface wins, ties go to the lower id (as OpenGL's draw order does), and the result does not
//    depend on scheduling. Depth peeling keeps only depths strictly behind the previous layer's
//    (as the OpenGL path does: a coplanar duplicate never shows).
// 3. resolve: one thread per pixel computes (u, v, z/w, id + 1) and the barycentric derivatives
//    from the winning triangle, with exactly the formulas of shaders/rasterize.frag (double
//    precision from the float32 clip-space vertices, rounded once).
//
// Coverage follows the OpenGL rasterizer: window coordinates are snapped to 1/256 pixel
// (8 sub-pixel bits) and tested with exact integer edge functions at pixel centres, with a
// top-left fill rule in image (row-down) terms, so two triangles sharing an edge cover each pixel
// once. Triangles with a vertex at w <= 0 or far outside the viewport are tested in homogeneous
// coordinates (no division by w) instead, in double precision. Pixels whose depth z/w lies
// outside [-1, 1] are clipped, as by OpenGL's near and far planes.
#include "triangle_id.cuh"

namespace {

using namespace diffrast;

constexpr int kSmallArea = 256;
constexpr int kTile = 16;
constexpr unsigned long long kEmpty = ~0ull;
constexpr double kSnapLimit = 2097152.0;  // 2^21 pixels: snapped products stay within int64

struct Setup {
    float4 c[3];        // clip-space vertices
    long long X[3], Y[3];  // snapped window coordinates (1/256 pixel), exact mode
    int x0, y0, x1, y1;  // candidate pixel box, inclusive; empty when x0 > x1
    double n[3][3];      // e_i(q) = n[i] . (qx, qy, 1), the barycentric edge functions (unnormalized)
    double dz[3];        // depth plane: z/w = dz . (qx, qy, 1)
    double det;          // det(c_0, c_1, c_2) = sum_i w_i e_i(q) for every q
    int exact;           // 1: snapped integer edge test, 0: homogeneous test
    int flip;            // exact mode: 1 when the snapped triangle is clockwise
    int tri_id;          // global triangle index
    int vbase;           // first vertex of this image's vertex set
};

__device__ __forceinline__ void cross3(double ax, double ay, double aw, double bx, double by,
                                       double bw, double& x, double& y, double& w)
{
    x = ay * bw - aw * by;
    y = aw * bx - ax * bw;
    w = ax * by - ay * bx;
}

__device__ __forceinline__ bool finite4(float4 p)
{
    return isfinite(p.x) && isfinite(p.y) && isfinite(p.z) && isfinite(p.w);
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

// Fills s for triangle t of image b; returns false when nothing can be drawn.
__device__ bool setup_triangle(const float* __restrict__ pos, const int* __restrict__ tri,
                               int num_vertices, int vbase, int t, int width, int height, Setup& s)
{
    s.x0 = 1; s.x1 = 0;
    int vi[3];
    if (!triangle_vertices(tri, t, num_vertices, vi))
        return false;
    const float4* p4 = reinterpret_cast<const float4*>(pos);
    for (int i = 0; i < 3; ++i) {
        s.c[i] = p4[(long long)vbase + vi[i]];
        if (!finite4(s.c[i]))
            return false;
    }
    s.tri_id = t;
    s.vbase = vbase;
    const float hw = 0.5f * width, hh = 0.5f * height;
    // Entirely beyond one clip plane: nothing to draw.
    const float4 a = s.c[0], b = s.c[1], c = s.c[2];
    if ((a.z < -a.w && b.z < -b.w && c.z < -c.w) || (a.z > a.w && b.z > b.w && c.z > c.w) ||
        (a.x < -a.w && b.x < -b.w && c.x < -c.w) || (a.x > a.w && b.x > b.w && c.x > c.w) ||
        (a.y < -a.w && b.y < -b.w && c.y < -c.w) || (a.y > a.w && b.y > b.w && c.y > c.w))
        return false;
    float xmin = 1e30f, xmax = -1e30f, ymin = 1e30f, ymax = -1e30f;
    bool exact = a.w > 0.f && b.w > 0.f && c.w > 0.f;
    if (exact) {
        for (int i = 0; i < 3; ++i) {
            const float xw = (s.c[i].x / s.c[i].w) * hw + hw;
            const float yw = (s.c[i].y / s.c[i].w) * hh + hh;
            if (!(fabsf(xw) < kSnapLimit && fabsf(yw) < kSnapLimit)) {
                exact = false;
                break;
            }
            s.X[i] = __float2ll_rn(xw * 256.f);
            s.Y[i] = __float2ll_rn(yw * 256.f);
        }
    }
    if (exact) {
        const long long area = (s.X[1] - s.X[0]) * (s.Y[2] - s.Y[0]) - (s.Y[1] - s.Y[0]) * (s.X[2] - s.X[0]);
        if (area == 0)
            return false;  // zero area after snapping: OpenGL draws nothing
        s.flip = area < 0;
        for (int i = 0; i < 3; ++i) {
            const float x = s.X[i] * (1.f / 256.f), y = s.Y[i] * (1.f / 256.f);
            xmin = fminf(xmin, x); xmax = fmaxf(xmax, x);
            ymin = fminf(ymin, y); ymax = fmaxf(ymax, y);
        }
    } else {
        float4 p0[5] = {a, b, c}, p1[6];
        int n = clip_plane(p0, 3, p1, 1.f);
        n = clip_plane(p1, n, p0, -1.f);
        if (n < 3)
            return false;
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
        xmin -= 1.f; ymin -= 1.f; xmax += 1.f; ymax += 1.f;
    }
    s.exact = exact;
    // e_i = (c_j x c_k) . q; sum_i w_i e_i = det(c_0, c_1, c_2) for every q, so
    // z/w = sum_i z_i e_i / det is affine in q: the depth plane.
    for (int i = 0; i < 3; ++i) {
        const float4 cj = s.c[(i + 1) % 3], ck = s.c[(i + 2) % 3];
        cross3(cj.x, cj.y, cj.w, ck.x, ck.y, ck.w, s.n[i][0], s.n[i][1], s.n[i][2]);
    }
    const double det = s.n[0][2] * a.w + s.n[1][2] * b.w + s.n[2][2] * c.w;
    s.det = det;
    if (!(det != 0.0))
        return false;  // the triangle's plane passes through the eye: nothing visible
    for (int k = 0; k < 3; ++k)
        s.dz[k] = (s.n[0][k] * a.z + s.n[1][k] * b.z + s.n[2][k] * c.z) / det;
    s.x0 = max(0, (int)ceilf(fmaxf(xmin, -1.f) - 0.5f));
    s.y0 = max(0, (int)ceilf(fmaxf(ymin, -1.f) - 0.5f));
    s.x1 = min(width - 1, (int)floorf(fminf(xmax, (float)width + 1.f) - 0.5f));
    s.y1 = min(height - 1, (int)floorf(fminf(ymax, (float)height + 1.f) - 0.5f));
    return s.x0 <= s.x1 && s.y0 <= s.y1;
}

// Perspective-correct barycentrics at NDC point (qx, qy): e_i = (c_j x c_k) . (qx, qy, 1) with
// c_i = (x_i, y_i, w_i); u = e0 / s, v = e1 / s, s = e0 + e1 + e2. Also the derivatives of u and
// v with respect to qx, qy (quotient rule). Same formulas as shaders/rasterize.frag.
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

// Edge i -> j of a counter-clockwise snapped triangle covers a pixel centre exactly on it when
// the edge is a top or left edge in image terms (rows down): in window coordinates (y up) that
// is a bottom edge (dy == 0, dx > 0) or a left edge (dy < 0).
__device__ __forceinline__ bool edge_covers(long long e, long long dx, long long dy)
{
    return e > 0 || (e == 0 && (dy < 0 || (dy == 0 && dx > 0)));
}

// Whether the triangle covers pixel (x, y); on success its depth z/w (from the depth plane).
__device__ bool covers(const Setup& s, int x, int y, int width, int height, float& depth)
{
    const double qx = (x + 0.5) * 2.0 / width - 1.0, qy = (y + 0.5) * 2.0 / height - 1.0;
    if (s.exact) {
        const long long px = 256LL * x + 128, py = 256LL * y + 128;
        const int o1 = s.flip ? 2 : 1, o2 = s.flip ? 1 : 2;
        const long long X[3] = {s.X[0], s.X[o1], s.X[o2]}, Y[3] = {s.Y[0], s.Y[o1], s.Y[o2]};
        for (int i = 0; i < 3; ++i) {
            const int j = i == 2 ? 0 : i + 1;
            const long long dx = X[j] - X[i], dy = Y[j] - Y[i];
            const long long e = dx * (py - Y[i]) - dy * (px - X[i]);
            if (!edge_covers(e, dx, dy))
                return false;
        }
    } else {
        // The point of the triangle on the pixel's ray is sum_i b_i c_i = t (qx, qy, 1) with
        // b_i = e_i / sum and t = det / sum, its w. Inside iff every b_i >= 0, in front iff t > 0.
        double e[3];
        for (int i = 0; i < 3; ++i)
            e[i] = s.n[i][0] * qx + s.n[i][1] * qy + s.n[i][2];
        const double sum = e[0] + e[1] + e[2];
        if (!(e[0] * sum >= 0.0 && e[1] * sum >= 0.0 && e[2] * sum >= 0.0 && s.det * sum > 0.0))
            return false;
    }
    const double d = s.dz[0] * qx + s.dz[1] * qy + s.dz[2];
    if (!(d >= -1.0 && d <= 1.0))
        return false;
    depth = (float)d;
    return true;
}

__device__ __forceinline__ unsigned long long make_key(float depth, int tri_id)
{
    unsigned d = __float_as_uint(depth);
    d = (d & 0x80000000u) ? ~d : (d | 0x80000000u);  // order-preserving float -> uint
    return ((unsigned long long)d << 32) | (unsigned)tri_id;
}

__device__ __forceinline__ void write_pixel(const Setup& s, int x, int y, int width, int height,
                                            unsigned long long* __restrict__ keys,
                                            const unsigned long long* __restrict__ prev,
                                            long long image_offset)
{
    float depth;
    if (!covers(s, x, y, width, height, depth))
        return;
    const unsigned long long key = make_key(depth, s.tri_id);
    const long long p = image_offset + (long long)y * width + x;
    if (prev != nullptr && (key >> 32) <= (prev[p] >> 32))
        return;  // peeling, as OpenGL's: only surfaces strictly behind the previous layer's depth
    if (key < keys[p])
        atomicMin(keys + p, key);
}

// Work item w -> (image b, global triangle t, first vertex of the image's vertex set).
__device__ __forceinline__ void work_item(long long w, int num_triangles, int num_vertices,
                                          int instanced, const long long* __restrict__ range_offsets,
                                          const int* __restrict__ range_starts, int num_images,
                                          int& b, int& t, int& vbase)
{
    if (instanced) {
        b = (int)(w / num_triangles);
        t = (int)(w - (long long)b * num_triangles);
        vbase = b * num_vertices;
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

}  // namespace

extern "C" __global__ void setup_and_raster_small(
    const float* __restrict__ pos, const int* __restrict__ tri, int num_vertices, int num_triangles,
    int instanced, const long long* __restrict__ range_offsets, const int* __restrict__ range_starts,
    int num_images, long long num_items, int width, int height,
    unsigned long long* __restrict__ keys, const unsigned long long* __restrict__ prev, int use_prev,
    long long* __restrict__ big_items, long long* __restrict__ big_tiles,
    unsigned long long* __restrict__ big_count)
{
    const long long w = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (w >= num_items)
        return;
    int b, t, vbase;
    work_item(w, num_triangles, num_vertices, instanced, range_offsets, range_starts, num_images, b, t, vbase);
    Setup s;
    if (!setup_triangle(pos, tri, num_vertices, vbase, t, width, height, s))
        return;
    const long long image_offset = (long long)b * width * height;
    const long long area = (long long)(s.x1 - s.x0 + 1) * (s.y1 - s.y0 + 1);
    if (area <= kSmallArea) {
        for (int y = s.y0; y <= s.y1; ++y)
            for (int x = s.x0; x <= s.x1; ++x)
                write_pixel(s, x, y, width, height, keys, use_prev ? prev : nullptr, image_offset);
        return;
    }
    const unsigned long long slot = atomicAdd(big_count, 1ull);
    big_items[slot] = w;
    const long long tiles = (long long)((s.x1 - s.x0) / kTile + 1) * ((s.y1 - s.y0) / kTile + 1);
    big_tiles[slot] = tiles;
}

// big_tiles_end: inclusive prefix sums of big_tiles over the first big_count slots. Each block
// takes a contiguous run of (triangle, tile) items, so it sets a triangle up once for all of its
// tiles in the run and finds its first triangle with a single binary search.
extern "C" __global__ void raster_big(
    const float* __restrict__ pos, const int* __restrict__ tri, int num_vertices, int num_triangles,
    int instanced, const long long* __restrict__ range_offsets, const int* __restrict__ range_starts,
    int num_images, int width, int height,
    unsigned long long* __restrict__ keys, const unsigned long long* __restrict__ prev, int use_prev,
    const long long* __restrict__ big_items, const long long* __restrict__ big_tiles_end,
    const unsigned long long* __restrict__ big_count)
{
    __shared__ Setup s;
    __shared__ long long slot, slot_begin, slot_end;
    __shared__ int valid, image;
    const long long count = (long long)*big_count;
    if (count == 0)
        return;
    const long long total = big_tiles_end[count - 1];
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
            if (slot < 0) {  // first slot whose inclusive end exceeds item
                long long lo = 0, hi = count - 1;
                while (lo < hi) {
                    const long long mid = (lo + hi) >> 1;
                    if (big_tiles_end[mid] > item) hi = mid; else lo = mid + 1;
                }
                slot = lo;
            } else {
                do { ++slot; } while (big_tiles_end[slot] <= item);
            }
            slot_begin = slot > 0 ? big_tiles_end[slot - 1] : 0;
            slot_end = big_tiles_end[slot];
            int b, t, vbase;
            work_item(big_items[slot], num_triangles, num_vertices, instanced, range_offsets,
                      range_starts, num_images, b, t, vbase);
            Setup local;
            valid = setup_triangle(pos, tri, num_vertices, vbase, t, width, height, local);
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
                write_pixel(s, x, y, width, height, keys, use_prev ? prev : nullptr,
                            (long long)image * width * height);
        }
        __syncthreads();
    }
}

// rast[p] = (u, v, z/w, id + 1) and rast_db[p] = (du/dX, du/dY, dv/dX, dv/dY) from keys[p].
extern "C" __global__ void resolve(
    const float* __restrict__ pos, const int* __restrict__ tri, int num_vertices, int num_triangles,
    int instanced, const unsigned long long* __restrict__ keys, int num_images, int width, int height,
    float* __restrict__ rast, float* __restrict__ rast_db, int output_db)
{
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long pixels = (long long)width * height;
    if (p >= pixels * num_images)
        return;
    const unsigned long long key = keys[p];
    float4 out = make_float4(0.f, 0.f, 0.f, 0.f), db = make_float4(0.f, 0.f, 0.f, 0.f);
    int vi[3];
    const int t = (int)(key & 0xffffffffu);
    if (key != kEmpty && triangle_vertices(tri, t, num_vertices, vi)) {
        const int b = (int)(p / pixels);
        const long long rem = p - (long long)b * pixels;
        const int y = (int)(rem / width), x = (int)(rem - (long long)y * width);
        const long long vbase = instanced ? (long long)b * num_vertices : 0;
        const float4* p4 = reinterpret_cast<const float4*>(pos);
        float4 c[3];
        for (int i = 0; i < 3; ++i)
            c[i] = p4[vbase + vi[i]];
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
    reinterpret_cast<float4*>(rast)[p] = out;
    if (output_db)
        reinterpret_cast<float4*>(rast_db)[p] = db;
}
