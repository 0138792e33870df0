#version 450 core
// Positions come from a shader storage buffer: [num_instances or 1, num_vertices] clip-space vec4.
// gl_VertexID is the index read from the element buffer; indices out of range produce a
// non-finite position, which the geometry shader drops.
layout(std430, binding = 0) readonly buffer Positions { vec4 positions[]; };

uniform int u_num_vertices;   // vertices per instance
uniform int u_instance_base;  // first instance of this draw (batches split over the layer limit)
uniform int u_instanced;      // 1: instance mode (a vertex set per instance), 0: range mode

flat out int v_instance;

void main()
{
    int instance = u_instanced != 0 ? gl_InstanceID + u_instance_base : 0;
    if (gl_VertexID < 0 || gl_VertexID >= u_num_vertices)
        gl_Position = vec4(uintBitsToFloat(0x7fc00000u));
    else
        gl_Position = positions[instance * u_num_vertices + gl_VertexID];
    v_instance = gl_InstanceID;
}
