#version 330 core
// diffrast.viewer: shows the frame texture (RGBA8, one texel per image pixel). Magnification is
// nearest-neighbour, so at an integer scale every screen pixel is exactly one image pixel; the
// alpha channel is not shown (the window is opaque).

uniform sampler2D u_image;

in vec2 v_uv;
out vec4 o_color;

void main()
{
    o_color = vec4(texture(u_image, v_uv).rgb, 1.0);
}
