// Ray tracing through 3D Gaussians over a BVH on CUDA: one thread per ray running raytrace_common.h's traversal,
// the one the C++ kernel runs (the BVH itself is built on the CPU by raytrace_cpu.cpp and copied over).
// Compiled on first use by recon/kernels/raytrace_cuda.py.

#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "raytrace_common.h"

namespace {

__global__ void trace_kernel(int64_t r, const float* prims, const float* boxes, const int* links, const int* order,
                             const float* origins, const float* dirs, recon_rt::TraceOptions opt, float* transmittance,
                             float* hit) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= r) return;
    recon_rt::trace_ray(origins + 3 * i, dirs + 3 * i, prims, boxes, links, order, opt, transmittance + i, hit + i);
}

}  // namespace

std::vector<torch::Tensor> raytrace_trace_cuda(torch::Tensor prims, torch::Tensor boxes, torch::Tensor links,
                                               torch::Tensor order, torch::Tensor origins, torch::Tensor dirs,
                                               double alpha_min, double t_min, double cutoff, double hit_alpha,
                                               bool use_normals) {
    TORCH_CHECK(prims.is_cuda() && origins.is_cuda(), "raytrace_trace_cuda needs CUDA tensors");
    TORCH_CHECK(prims.dim() == 2 && prims.size(1) == recon_rt::kPrimStride, "prims must be [N, 24]");
    TORCH_CHECK(origins.sizes() == dirs.sizes() && origins.dim() == 2 && origins.size(1) == 3, "origins/dirs must be [R, 3]");
    const c10::cuda::CUDAGuard guard(origins.device());
    auto dev = origins.device();
    auto p = prims.to(dev, torch::kFloat32).contiguous();
    auto bx = boxes.to(dev, torch::kFloat32).contiguous();
    auto ln = links.to(dev, torch::kInt32).contiguous();
    auto od = order.to(dev, torch::kInt32).contiguous();
    auto o = origins.to(torch::kFloat32).contiguous();
    auto d = dirs.to(dev, torch::kFloat32).contiguous();
    const int64_t r = o.size(0);
    auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(dev);
    auto transmittance = torch::empty({r}, opts);
    auto hit = torch::empty({r}, opts);
    if (r == 0) return {transmittance, hit};
    recon_rt::TraceOptions opt{(float)alpha_min, (float)t_min, (float)cutoff, (float)hit_alpha, use_normals};
    const int threads = 128;
    const int64_t blocks = (r + threads - 1) / threads;
    trace_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        r, p.data_ptr<float>(), bx.data_ptr<float>(), ln.data_ptr<int>(), od.data_ptr<int>(), o.data_ptr<float>(),
        d.data_ptr<float>(), opt, transmittance.data_ptr<float>(), hit.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {transmittance, hit};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("raytrace_trace_cuda", &raytrace_trace_cuda, "Transmittance of rays through Gaussians over a BVH (CUDA)");
}
