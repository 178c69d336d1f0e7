"""CUDA backend: launchers for the kernels in ``kernels/*.cu`` (CuPy is imported lazily).

Each module mirrors its :mod:`fastconv.cpu` counterpart function for function, over
CUDA tensors; :mod:`fastconv.cuda._runtime` holds the shared plumbing.
"""
