# Source this on the GPU machine (the device tool): unpacks the EGL/GL loader packages carried in
# .gl, installs the carried wheels of .whl, installs diffrast, and points glvnd at NVIDIA's EGL.
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
export PYOPENGL_PLATFORM=egl PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null || return 1
