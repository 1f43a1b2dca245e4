// BVH over 3D Gaussians and ray tracing through them on the CPU (C++/OpenMP). The traversal is raytrace_common.h's,
// shared with the CUDA kernel; recon/render/raytrace.py documents the meaning and has the torch twin.
//
// Build: a linear BVH (Karras 2012's tree): 30-bit Morton codes of the box centres (10 bits an axis in the
// centres' bounding box), sorted; each node's range is split where its codes' highest differing bit changes (the
// middle of the range when all codes are equal), down to leaves of at most `leaf_size` primitives; then boxes are
// merged bottom-up. Serial and O(N log N): at 100k Gaussians it costs a small fraction of tracing their 6.4M
// visibility rays, and the same arrays serve the CPU, CUDA and torch traversals.
// Trace: one ray per loop iteration, OpenMP dynamic schedule (rays that stop early make the work uneven).

#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "raytrace_common.h"

int n_threads();  // raster_cpu.cpp: RECON_CPU_THREADS or torch's thread count

namespace {

uint32_t expand_bits(uint32_t v) {  // 10 bits -> every third bit of 30
    v = (v * 0x00010001u) & 0xFF0000FFu;
    v = (v * 0x00000101u) & 0x0F00F00Fu;
    v = (v * 0x00000011u) & 0xC30C30C3u;
    v = (v * 0x00000005u) & 0x49249249u;
    return v;
}

uint32_t morton3(float x, float y, float z) {  // inputs in [0, 1]
    auto q = [](float v) { return (uint32_t)std::min(std::max(v * 1024.0f, 0.0f), 1023.0f); };
    return (expand_bits(q(x)) << 2) | (expand_bits(q(y)) << 1) | expand_bits(q(z));
}

// Last index of [first, last] whose code shares the range's common prefix plus a 0 at the first differing bit.
int64_t find_split(const std::vector<uint32_t>& codes, int64_t first, int64_t last) {
    const uint32_t a = codes[first], b = codes[last];
    if (a == b) return (first + last) / 2;
    const int prefix = __builtin_clz(a ^ b);
    int64_t split = first, step = last - first;
    do {
        step = (step + 1) / 2;
        const int64_t mid = split + step;
        if (mid < last && __builtin_clz(a ^ codes[mid]) > prefix) split = mid;
    } while (step > 1);
    return split;
}

}  // namespace

// prim_boxes [N, 6] (min, max) float32 -> boxes [M, 6], links [M, 2] int32, order [N] int32 (see raytrace_common.h).
std::vector<torch::Tensor> raytrace_build(torch::Tensor prim_boxes, int64_t leaf_size) {
    TORCH_CHECK(prim_boxes.dim() == 2 && prim_boxes.size(1) == 6, "prim_boxes must be [N, 6]");
    TORCH_CHECK(leaf_size >= 1, "leaf_size must be >= 1");
    auto pb = prim_boxes.to(torch::kFloat32).contiguous();
    const int64_t n = pb.size(0);
    TORCH_CHECK(n > 0 && n < (int64_t(1) << 30), "need 1 .. 2^30 primitives");
    const float* box = pb.data_ptr<float>();
    float lo[3] = {3.4e38f, 3.4e38f, 3.4e38f}, hi[3] = {-3.4e38f, -3.4e38f, -3.4e38f};
    std::vector<float> centre(3 * n);
    for (int64_t i = 0; i < n; ++i)
        for (int k = 0; k < 3; ++k) {
            centre[3 * i + k] = 0.5f * (box[6 * i + k] + box[6 * i + 3 + k]);
            lo[k] = std::min(lo[k], centre[3 * i + k]);
            hi[k] = std::max(hi[k], centre[3 * i + k]);
        }
    std::vector<uint32_t> key(n);
    for (int64_t i = 0; i < n; ++i) {
        float u[3];
        for (int k = 0; k < 3; ++k) u[k] = hi[k] > lo[k] ? (centre[3 * i + k] - lo[k]) / (hi[k] - lo[k]) : 0.5f;
        key[i] = morton3(u[0], u[1], u[2]);
    }
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return key[a] < key[b]; });
    std::vector<uint32_t> codes(n);
    for (int64_t i = 0; i < n; ++i) codes[i] = key[order[i]];

    // Top-down over sorted ranges; nodes are numbered in creation order, so children follow their parent.
    std::vector<int32_t> links;
    std::vector<std::pair<int64_t, int64_t>> range;
    links.reserve(4 * n / leaf_size + 2);
    range.reserve(2 * n / leaf_size + 2);
    range.push_back({0, n - 1});
    links.push_back(0);
    links.push_back(0);
    std::vector<int64_t> todo = {0};
    while (!todo.empty()) {
        const int64_t node = todo.back();
        todo.pop_back();
        const auto [first, last] = range[node];
        if (last - first + 1 <= leaf_size) {
            links[2 * node] = (int32_t)first;
            links[2 * node + 1] = -(int32_t)(last - first + 1);
            continue;
        }
        const int64_t split = find_split(codes, first, last);
        const int64_t left = (int64_t)range.size(), right = left + 1;
        range.push_back({first, split});
        range.push_back({split + 1, last});
        links.insert(links.end(), {0, 0, 0, 0});
        links[2 * node] = (int32_t)left;
        links[2 * node + 1] = (int32_t)right;
        todo.push_back(right);
        todo.push_back(left);
    }
    const int64_t m = (int64_t)range.size();
    auto boxes = torch::empty({m, 6}, torch::kFloat32);
    float* nb = boxes.data_ptr<float>();
    for (int64_t node = m - 1; node >= 0; --node) {  // children have larger numbers: bottom-up in reverse
        float* out = nb + 6 * node;
        for (int k = 0; k < 3; ++k) {
            out[k] = 3.4e38f;
            out[3 + k] = -3.4e38f;
        }
        const int32_t a = links[2 * node], b = links[2 * node + 1];
        if (b < 0) {
            for (int32_t i = a; i < a - b; ++i) {
                const float* pbox = box + 6 * (int64_t)order[i];
                for (int k = 0; k < 3; ++k) {
                    out[k] = std::min(out[k], pbox[k]);
                    out[3 + k] = std::max(out[3 + k], pbox[3 + k]);
                }
            }
        } else {
            for (int32_t c : {a, b})
                for (int k = 0; k < 3; ++k) {
                    out[k] = std::min(out[k], nb[6 * c + k]);
                    out[3 + k] = std::max(out[3 + k], nb[6 * c + 3 + k]);
                }
        }
    }
    auto links_t = torch::from_blob(links.data(), {m, 2}, torch::kInt32).clone();
    auto order_t = torch::from_blob(order.data(), {n}, torch::kInt32).clone();
    return {boxes, links_t, order_t};
}

// Trace rays [R, 3] (origins, unit or not directions) through prims/boxes/links/order; returns transmittance [R]
// and hit distance [R] (-1 where none or not asked for).
std::vector<torch::Tensor> raytrace_trace(torch::Tensor prims, torch::Tensor boxes, torch::Tensor links, torch::Tensor order,
                                          torch::Tensor origins, torch::Tensor dirs, double alpha_min, double t_min,
                                          double cutoff, double hit_alpha, bool use_normals) {
    TORCH_CHECK(prims.dim() == 2 && prims.size(1) == recon_rt::kPrimStride, "prims must be [N, 24]");
    TORCH_CHECK(origins.sizes() == dirs.sizes() && origins.dim() == 2 && origins.size(1) == 3, "origins/dirs must be [R, 3]");
    auto p = prims.to(torch::kFloat32).contiguous();
    auto bx = boxes.to(torch::kFloat32).contiguous();
    auto ln = links.to(torch::kInt32).contiguous();
    auto od = order.to(torch::kInt32).contiguous();
    auto o = origins.to(torch::kFloat32).contiguous();
    auto d = dirs.to(torch::kFloat32).contiguous();
    const int64_t r = o.size(0);
    auto transmittance = torch::empty({r}, torch::kFloat32);
    auto hit = torch::empty({r}, torch::kFloat32);
    recon_rt::TraceOptions opt{(float)alpha_min, (float)t_min, (float)cutoff, (float)hit_alpha, use_normals};
    const float* pp = p.data_ptr<float>();
    const float* bp = bx.data_ptr<float>();
    const int* lp = ln.data_ptr<int>();
    const int* op = od.data_ptr<int>();
    const float* orp = o.data_ptr<float>();
    const float* dp = d.data_ptr<float>();
    float* tp = transmittance.data_ptr<float>();
    float* hp = hit.data_ptr<float>();
#pragma omp parallel for schedule(dynamic, 256) num_threads(n_threads())
    for (int64_t i = 0; i < r; ++i) recon_rt::trace_ray(orp + 3 * i, dp + 3 * i, pp, bp, lp, op, opt, tp + i, hp + i);
    return {transmittance, hit};
}
