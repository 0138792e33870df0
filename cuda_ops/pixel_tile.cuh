// Kernels launched a block per tile of kTileWidth x kTileHeight output pixels of one image, a
// thread per pixel and a warp per row (PixelTile in cuda_ops/params.py; the launch in Python is
// diffrast.cuda_backend.launch_tiles): the antialias forward, which shares pair evaluations
// between a tile's pixels.
#pragma once

namespace diffrast {

// The place of the calling thread: image b of a batch of images of height x width pixels, the
// tile's first pixel (x0, y0), the thread's pixel (x, y) = (x0 + lx, y0 + ly) and whether it lies
// in the image (partial tiles at the right and top), and its index p = (b * height + y) * width
// + x in the batch (meaningful where inside).
struct TilePixel {
    int b, x0, y0, lx, ly, x, y;
    bool inside;
    long long p;
};

__device__ __forceinline__ TilePixel tile_pixel(int width, int height)
{
    TilePixel t;
    const int tiles_x = (width + kTileWidth - 1) / kTileWidth;
    const int tiles_per_image = tiles_x * ((height + kTileHeight - 1) / kTileHeight);
    const int tile = (int)blockIdx.x;
    t.b = tile / tiles_per_image;
    const int tile_in_image = tile - t.b * tiles_per_image;
    const int tile_y = tile_in_image / tiles_x;
    t.x0 = (tile_in_image - tile_y * tiles_x) * kTileWidth;
    t.y0 = tile_y * kTileHeight;
    t.lx = (int)threadIdx.x % kTileWidth;
    t.ly = (int)threadIdx.x / kTileWidth;
    t.x = t.x0 + t.lx;
    t.y = t.y0 + t.ly;
    t.inside = t.x < width && t.y < height;
    t.p = ((long long)t.b * height + t.y) * width + t.x;
    return t;
}

}  // namespace diffrast
