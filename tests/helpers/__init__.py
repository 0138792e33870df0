"""Helpers shared by the test modules (and the long fuzz of ``benchmarks/``): rasterizer
contexts, the CPU emulator of the CUDA kernels, reference rasterization, kernel test cases,
antialias scenes and the fuzz strategies. Tests import them as ``from helpers import ...``
(pytest puts ``tests/`` on ``sys.path``); from the repository root they are
``tests.helpers``."""
