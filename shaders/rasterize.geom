#version 450 core
// Passes each triangle on unchanged (GL clips it), routes it to its output layer, and hands the
// fragment shader the triangle's three unclipped clip-space vertices and its id. Triangles with a
// non-finite coordinate are dropped.
layout(triangles) in;
layout(triangle_strip, max_vertices = 3) out;

uniform int u_layer;        // range mode: the layer of this draw; instance mode: 0
uniform int u_tri_offset;   // id of the first triangle of this draw

flat in int v_instance[];

flat out vec4 g_p0;
flat out vec4 g_p1;
flat out vec4 g_p2;
flat out int g_tri_id_plus_one;
flat out int g_layer;

bool finite4(vec4 p) { return !any(isnan(p)) && !any(isinf(p)); }

void main()
{
    vec4 p0 = gl_in[0].gl_Position, p1 = gl_in[1].gl_Position, p2 = gl_in[2].gl_Position;
    if (!finite4(p0) || !finite4(p1) || !finite4(p2))
        return;
    int layer = u_layer + v_instance[0];
    int id_plus_one = u_tri_offset + gl_PrimitiveIDIn + 1;
    for (int i = 0; i < 3; ++i) {
        gl_Position = gl_in[i].gl_Position;
        gl_Layer = layer;
        g_p0 = p0; g_p1 = p1; g_p2 = p2;
        g_tri_id_plus_one = id_plus_one;
        g_layer = layer;
        EmitVertex();
    }
    EndPrimitive();
}
