"""Native kernels: C++/OpenMP CPU kernels and CUDA kernels, each with a pure-torch twin."""
