#version 450 core
// Exact perspective-correct barycentrics at the pixel centre, computed in double precision from
// the triangle's unclipped clip-space vertices, and their screen-space derivatives.
//
// With c_i = (x_i, y_i, w_i) and q = (ndc_x, ndc_y, 1), the homogeneous point sum_i b_i c_i
// projects to the pixel centre when b is proportional to e_i = (c_j x c_k) . q for (i, j, k)
// cyclic. Normalising, u = e_0 / s and v = e_1 / s with s = e_0 + e_1 + e_2. Each e_i is affine in
// q, so the derivatives follow from the quotient rule; d(ndc)/d(pixel) is 2 / size.
flat in vec4 g_p0;
flat in vec4 g_p1;
flat in vec4 g_p2;
flat in int g_tri_id_plus_one;
flat in int g_layer;

uniform vec2 u_size;              // viewport width and height in pixels
uniform int u_peel;               // 1: drop fragments not behind the previous layer
uniform sampler2DArray u_prev_depth;  // the previous layer's depth buffer
uniform sampler2DArray u_prev_rast;   // and its rast output

layout(location = 0) out vec4 o_rast;
layout(location = 1) out vec4 o_rast_db;

float encode_id(int n)
{
    // nvdiffrast's float encoding of triangle_id + 1: exact floats up to 2^24, then a bit pattern.
    return n <= 16777216 ? float(n) : intBitsToFloat(0x4a800000 + n);
}

float previous_depth()
{
    return texelFetch(u_prev_depth, ivec3(ivec2(gl_FragCoord.xy), g_layer), 0).r;
}

void main()
{
    if (u_peel != 0 && gl_FragCoord.z <= previous_depth())
        discard;
    dvec2 size = dvec2(u_size);
    dvec3 q = dvec3(dvec2(gl_FragCoord.xy) * 2.0LF / size - 1.0LF, 1.0LF);
    dvec3 c0 = dvec3(g_p0.xyw), c1 = dvec3(g_p1.xyw), c2 = dvec3(g_p2.xyw);
    dvec3 n0 = cross(c1, c2), n1 = cross(c2, c0), n2 = cross(c0, c1);
    dvec3 ns = n0 + n1 + n2;
    double e0 = dot(n0, q), e1 = dot(n1, q), s = dot(ns, q);
    double u = e0 / s, v = e1 / s;
    double w = 1.0LF - u - v;
    double z = u * double(g_p0.z) + v * double(g_p1.z) + w * double(g_p2.z);
    double ww = u * double(g_p0.w) + v * double(g_p1.w) + w * double(g_p2.w);
    vec4 rast = vec4(float(u), float(v), float(z / ww), encode_id(g_tri_id_plus_one));

    // d(e/s)/dq = (n_e * s - e * n_s) / s^2, then chain through dq/dpixel = 2 / size.
    dvec2 sc = 2.0LF / size;
    double inv_s2 = 1.0LF / (s * s);
    dvec2 du = (n0.xy * s - e0 * ns.xy) * inv_s2 * sc;
    dvec2 dv = (n1.xy * s - e1 * ns.xy) * inv_s2 * sc;
    vec4 db = vec4(float(du.x), float(du.y), float(dv.x), float(dv.y));

    // A degenerate triangle can still cover pixels once GL has snapped its vertices to the
    // sub-pixel grid (exactly collinear corners: s == 0); it has no barycentrics there, so its
    // fragment is dropped, as if the triangle were not drawn. (Bit tests: immune to fast math.)
    uvec4 exp_r = floatBitsToUint(rast.xyz.xyzz) & 0x7f800000u;
    uvec4 exp_d = floatBitsToUint(db) & 0x7f800000u;
    if (any(equal(exp_r, uvec4(0x7f800000u))) || any(equal(exp_d, uvec4(0x7f800000u))))
        discard;
    // Peeling: also strictly behind the previous layer in the z/w reported in rast. GL's depth
    // (interpolated in float from the clipped, snapped vertices) orders all but nearly
    // degenerate triangles the same way; where snapping extends such a triangle its exact z/w
    // is extrapolated and may disagree, and this keeps every layer behind the one before in what
    // rasterize returns.
    if (u_peel != 0) {
        vec4 prev = texelFetch(u_prev_rast, ivec3(ivec2(gl_FragCoord.xy), g_layer), 0);
        if (prev.w > 0.0 && rast.z <= prev.z)
            discard;
    }
    o_rast = rast;
    o_rast_db = db;
}
