#version 330 core
// diffrast.viewer: a full-screen quad drawn as a 4-vertex triangle strip from gl_VertexID alone
// (no vertex buffers; an empty vertex array object is bound). It covers the viewport, which the
// viewer sets to the image's (letterboxed) rectangle; v_uv runs over [0, 1]^2 with (0, 0) at the
// bottom-left corner, so texture row 0 (image row 0, diffrast's bottom row) lands at the bottom.

out vec2 v_uv;

void main()
{
    vec2 corner = vec2(float(gl_VertexID & 1), float((gl_VertexID >> 1) & 1));  // (0,0) (1,0) (0,1) (1,1)
    v_uv = corner;
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}
