"""GLSL programs built from the shader files shipped in ``diffrast.shaders``."""
from __future__ import annotations

from importlib import resources

from OpenGL import GL

_STAGES = {
    ".vert": GL.GL_VERTEX_SHADER,
    ".geom": GL.GL_GEOMETRY_SHADER,
    ".frag": GL.GL_FRAGMENT_SHADER,
}


def shader_source(filename: str) -> str:
    """The text of a shader file of the package ``diffrast.shaders``."""
    return resources.files("diffrast.shaders").joinpath(filename).read_text()


class Program:
    """A linked GL program. Owns its GL name; ``release()`` deletes it (context current).

    Args:
        filenames: shader files of ``diffrast.shaders``, one per stage, e.g. ``["a.vert", "a.frag"]``.
        defines: names to ``#define`` in every stage (after its ``#version`` line), selecting a
            variant of the shaders.
    """

    def __init__(self, filenames, defines=()):
        shaders = []
        self.name = GL.glCreateProgram()
        try:
            for fn in filenames:
                stage = _STAGES[fn[fn.rfind("."):]]
                sh = GL.glCreateShader(stage)
                version, _, body = shader_source(fn).partition("\n")
                lines = [version] + [f"#define {d}" for d in defines] + ["#line 2", body]
                GL.glShaderSource(sh, "\n".join(lines))
                GL.glCompileShader(sh)
                if not GL.glGetShaderiv(sh, GL.GL_COMPILE_STATUS):
                    log = GL.glGetShaderInfoLog(sh)
                    raise RuntimeError(f"compiling {fn} failed:\n{log.decode(errors='replace')}")
                GL.glAttachShader(self.name, sh)
                shaders.append(sh)
            GL.glLinkProgram(self.name)
            if not GL.glGetProgramiv(self.name, GL.GL_LINK_STATUS):
                log = GL.glGetProgramInfoLog(self.name)
                raise RuntimeError(f"linking {filenames} failed:\n{log.decode(errors='replace')}")
        finally:
            for sh in shaders:
                GL.glDeleteShader(sh)
        self._locations = {}

    def use(self) -> None:
        GL.glUseProgram(self.name)

    def location(self, uniform: str) -> int:
        loc = self._locations.get(uniform)
        if loc is None:
            loc = self._locations[uniform] = GL.glGetUniformLocation(self.name, uniform)
        return loc

    def set_int(self, uniform: str, value: int) -> None:
        GL.glProgramUniform1i(self.name, self.location(uniform), int(value))

    def set_vec2(self, uniform: str, x: float, y: float) -> None:
        GL.glProgramUniform2f(self.name, self.location(uniform), float(x), float(y))

    def release(self) -> None:
        if self.name:
            GL.glDeleteProgram(self.name)
            self.name = 0
