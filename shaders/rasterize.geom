#version 450 core
// Passes each triangle on unchanged (GL clips it), routes it to its output layer and hands the
// fragment shader its id. Dropped, as RasterizeCudaContext drops them: triangles with a
// non-finite coordinate, and those whose plane passes through the eye (det(c_0, c_1, c_2) = 0
// for c_i = (x_i, y_i, w_i): seen edge-on, a line with no barycentrics, which GL would still
// draw once it has snapped the corners to its sub-pixel grid). PEEL: the depth peeling variant
// (see rasterize.frag).
layout(triangles) in;
layout(triangle_strip, max_vertices = 3) out;

uniform int u_layer;        // range mode: the layer of this draw; instance mode: 0
uniform int u_tri_offset;   // id of the first triangle of this draw

flat in int v_instance[];

flat out int g_tri_id_plus_one;
flat out int g_layer;
#ifdef PEEL
flat out vec4 g_p0;  // the unclipped clip-space vertices, for the exact z/w (rasterize.frag)
flat out vec4 g_p1;
flat out vec4 g_p2;
#endif

bool finite4(vec4 p) { return !any(isnan(p)) && !any(isinf(p)); }

// The w component of c_j x c_k in double precision (each product of two floats is exact).
double cross_w(vec4 a, vec4 b) { return double(a.x) * double(b.y) - double(a.y) * double(b.x); }

void main()
{
    vec4 p0 = gl_in[0].gl_Position, p1 = gl_in[1].gl_Position, p2 = gl_in[2].gl_Position;
    if (!finite4(p0) || !finite4(p1) || !finite4(p2))
        return;
    double det = cross_w(p1, p2) * double(p0.w) + cross_w(p2, p0) * double(p1.w)
               + cross_w(p0, p1) * double(p2.w);
    if (det == 0.0LF)
        return;
    int layer = u_layer + v_instance[0];
    int id_plus_one = u_tri_offset + gl_PrimitiveIDIn + 1;
    for (int i = 0; i < 3; ++i) {
        gl_Position = gl_in[i].gl_Position;
        gl_Layer = layer;
        g_tri_id_plus_one = id_plus_one;
        g_layer = layer;
#ifdef PEEL
        g_p0 = p0; g_p1 = p1; g_p2 = p2;
#endif
        EmitVertex();
    }
    EndPrimitive();
}
