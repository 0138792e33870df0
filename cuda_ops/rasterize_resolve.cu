// resolve_ids: RasterizeGLContext's resolve. OpenGL renders only the id + 1 of the triangle each
// pixel shows (shaders/rasterize.frag); one thread per pixel turns it into rast and rast_db with
// resolve_pixel, exactly as RasterizeCudaContext resolves its visibility buffer.
#include "rasterize_resolve.cuh"

using namespace diffrast;

// ids[p] = triangle id + 1, 0 where no triangle is drawn.
__device__ __forceinline__ void resolve_ids_impl(const RasterizeForwardParams& kp)
{
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (long long)kp.width * kp.height * kp.num_images)
        return;
    resolve_pixel(kp, p, kp.ids[p] - 1);
}
