#version 450 core
// Visibility only: the triangle id + 1 of the nearest fragment (GL's depth test decides which).
// The barycentrics, z/w and their derivatives are computed from these ids afterwards, by the
// same resolve pass that RasterizeCudaContext runs (cuda_ops/rasterize_resolve.cuh; the torch
// reference for CPU tensors), so that both contexts return bit-identical buffers for the same
// visible triangle and the fragment work here stays minimal.
//
// PEEL (the program of depth peeling's layers after the first): a fragment must lie strictly
// behind the previous layer both in GL's depth buffer and in the z/w that rasterize reported for
// it. GL's depth (interpolated in float from the clipped, snapped vertices) orders all but nearly
// degenerate triangles the same way; where snapping extends such a triangle, its exact z/w is
// extrapolated and may disagree, and the second test keeps every layer behind the one before in
// what rasterize returns. The exact z/w is resolve_pixel's formula, in double precision.
flat in int g_tri_id_plus_one;
flat in int g_layer;

layout(location = 0) out int o_id;

#ifdef PEEL
flat in vec4 g_p0;
flat in vec4 g_p1;
flat in vec4 g_p2;

uniform vec2 u_size;                  // viewport width and height in pixels
uniform sampler2DArray u_prev_depth;  // the previous layer's depth buffer
uniform sampler2DArray u_prev_z;      // and its z/w as rasterize returned it

// z/w of the triangle at this pixel centre: with c_i = (x_i, y_i, w_i) and q = (ndc_x, ndc_y, 1),
// e_i = (c_j x c_k) . q for (i, j, k) cyclic, u = e_0 / s, v = e_1 / s, s = e_0 + e_1 + e_2.
float exact_depth()
{
    dvec2 q = dvec2(gl_FragCoord.xy) * 2.0LF / dvec2(u_size) - 1.0LF;
    dvec3 c0 = dvec3(g_p0.xyw), c1 = dvec3(g_p1.xyw), c2 = dvec3(g_p2.xyw);
    dvec3 n0 = cross(c1, c2), n1 = cross(c2, c0), n2 = cross(c0, c1);
    dvec3 ns = n0 + n1 + n2;
    double e0 = n0.x * q.x + n0.y * q.y + n0.z;
    double e1 = n1.x * q.x + n1.y * q.y + n1.z;
    double s = ns.x * q.x + ns.y * q.y + ns.z;
    double u = e0 / s, v = e1 / s, w = 1.0LF - u - v;
    double z = u * double(g_p0.z) + v * double(g_p1.z) + w * double(g_p2.z);
    double ww = u * double(g_p0.w) + v * double(g_p1.w) + w * double(g_p2.w);
    return float(z / ww);
}
#endif

void main()
{
#ifdef PEEL
    ivec3 at = ivec3(ivec2(gl_FragCoord.xy), g_layer);
    if (gl_FragCoord.z <= texelFetch(u_prev_depth, at, 0).r
            || exact_depth() <= texelFetch(u_prev_z, at, 0).r)
        discard;
#endif
    o_id = g_tri_id_plus_one;
}
