"""Plain PyTorch implementations of every op: diffrast's CPU backend and the oracle the CUDA
kernels are tested against. Inputs here are already validated by the public functions."""
