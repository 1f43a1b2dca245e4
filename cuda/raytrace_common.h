// Ray tracing through 3D Gaussians over a BVH: the per-ray traversal, shared verbatim by the C++/OpenMP kernel
// (raytrace_cpu.cpp) and the CUDA kernel (raytrace_cuda.cu), so both give one meaning (recon/render/raytrace.py
// has the torch twin and the all-pairs reference).
//
// Rules (Relightable 3D Gaussians' visibility tracer): a Gaussian takes part where the ray crosses its 3-sigma
// box (the axis-aligned box of mean +- 3 s_k r_k) at some t >= 0; it is skipped when its opacity is below
// alpha_min, when it faces away (normal . direction > 0, if normals are given), or when its point of maximum density
// along the ray, t* = ((mu - o)^T Sigma^-1 d) / (d^T Sigma^-1 d), is closer than t_min (the ray's own Gaussian);
// otherwise alpha = opacity * exp(-mahalanobis^2(t*) / 2) and the transmittance is multiplied by (1 - alpha).
// The product does not depend on the order, so no sorting. With a cutoff, a ray whose transmittance falls below it
// stops and reports 0 (a hard shadow). The hit distance, when asked for, is the smallest t* of a Gaussian with
// alpha >= hit_alpha (every such Gaussian is visited: no cutoff then).
//
// Layout (float32 / int32, contiguous):
//   prims [N, 24]: mean (3), A = S^-1 R^T row-major (9: local = A (x - mean)), opacity, normal (3), box min (3),
//                  box max (3), 2 unused;
//   boxes [M, 6]:  node box min (3), max (3); node 0 is the root;
//   links [M, 2]:  internal node: left, right child; leaf: first index into order, -count;
//   order [N]:     primitive ids in leaf order.
#pragma once

#ifdef __CUDACC__
#define RECON_HD __host__ __device__ __forceinline__
#else
#define RECON_HD inline
#endif

namespace recon_rt {

constexpr int kPrimStride = 24;
constexpr int kStack = 128;

struct TraceOptions {
    float alpha_min;   // skip Gaussians less opaque than this
    float t_min;       // skip Gaussians whose t* is closer than this (self-hit)
    float cutoff;      // stop (and report 0) when the transmittance falls below this; <= 0: never
    float hit_alpha;   // > 0: also report the smallest t* of a Gaussian with alpha >= hit_alpha (disables cutoff)
    bool use_normals;  // facing test
};

// Entry distance of the ray into a box for t in [0, inf), or -1 if it misses. inv_d is finite (see trace_ray), so
// no NaN arises.
RECON_HD float box_entry(const float* o, const float* inv_d, const float* lo, const float* hi) {
    float t0 = 0.0f, t1 = 3.4e38f;
    for (int k = 0; k < 3; ++k) {
        const float a = (lo[k] - o[k]) * inv_d[k];
        const float b = (hi[k] - o[k]) * inv_d[k];
        // Plain comparisons (one minss / maxss each): fminf / fmaxf carry NaN rules that cost a call.
        const float near_k = a < b ? a : b;
        const float far_k = a < b ? b : a;
        t0 = near_k > t0 ? near_k : t0;
        t1 = far_k < t1 ? far_k : t1;
    }
    return t0 <= t1 ? t0 : -1.0f;
}

// 1 / d with a zero component taken as +1e-30 (a ray parallel to a slab: +-1e30 stands in for infinity, and
// 0 * 1e30 is 0 where infinity would give NaN).
RECON_HD float safe_inverse(float v) { return 1.0f / (v == 0.0f ? 1e-30f : v); }

// One Gaussian's factor (1 - alpha) on the ray, or 1 if it does not take part; *t_star and *alpha_out are set
// when it does.
RECON_HD float gaussian_factor(const float* g, const float* o, const float* d, const float* inv_d, const TraceOptions& opt,
                               float* t_star, float* alpha_out) {
    const float opacity = g[12];
    if (opacity < opt.alpha_min) return 1.0f;
    if (opt.use_normals && g[13] * d[0] + g[14] * d[1] + g[15] * d[2] > 0.0f) return 1.0f;
    if (box_entry(o, inv_d, g + 16, g + 19) < 0.0f) return 1.0f;
    float lo[3], ld[3];
    for (int r = 0; r < 3; ++r) {
        const float* a = g + 3 + 3 * r;
        lo[r] = a[0] * (o[0] - g[0]) + a[1] * (o[1] - g[1]) + a[2] * (o[2] - g[2]);
        ld[r] = a[0] * d[0] + a[1] * d[1] + a[2] * d[2];
    }
    const float dd = ld[0] * ld[0] + ld[1] * ld[1] + ld[2] * ld[2];
    if (!(dd > 0.0f)) return 1.0f;
    const float t = -(lo[0] * ld[0] + lo[1] * ld[1] + lo[2] * ld[2]) / dd;
    if (t < opt.t_min) return 1.0f;
    float m2 = 0.0f;
    for (int r = 0; r < 3; ++r) {
        const float p = lo[r] + t * ld[r];
        m2 += p * p;
    }
    const float alpha = opacity * expf(-0.5f * m2);
    *t_star = t;
    *alpha_out = alpha;
    return 1.0f - alpha;
}

// Trace one ray: transmittance (0 if it fell below the cutoff) and, if asked, the hit distance (-1: none).
RECON_HD void trace_ray(const float* o, const float* d, const float* prims, const float* boxes, const int* links,
                        const int* order, const TraceOptions& opt, float* out_transmittance, float* out_hit) {
    float inv_d[3];
    for (int k = 0; k < 3; ++k) inv_d[k] = safe_inverse(d[k]);
    const bool want_hit = opt.hit_alpha > 0.0f;
    const float cutoff = want_hit ? 0.0f : opt.cutoff;
    float transmittance = 1.0f;
    float hit = 3.4e38f;
    int stack[kStack];
    int sp = 0;
    if (box_entry(o, inv_d, boxes, boxes + 3) >= 0.0f) stack[sp++] = 0;
    while (sp > 0) {
        const int node = stack[--sp];
        const int a = links[2 * node], b = links[2 * node + 1];
        if (b < 0) {  // leaf: primitives order[a .. a - b)
            for (int i = a; i < a - b; ++i) {
                float t_star, alpha;
                const float f = gaussian_factor(prims + (long long)order[i] * kPrimStride, o, d, inv_d, opt, &t_star, &alpha);
                if (f == 1.0f) continue;
                transmittance *= f;
                if (want_hit && alpha >= opt.hit_alpha && t_star < hit) hit = t_star;
            }
            if (transmittance < cutoff) {
                transmittance = 0.0f;
                break;
            }
            continue;
        }
        // Nearer child first (pushed last); a child the ray misses is not pushed.
        const float ta = box_entry(o, inv_d, boxes + 6 * a, boxes + 6 * a + 3);
        const float tb = box_entry(o, inv_d, boxes + 6 * b, boxes + 6 * b + 3);
        if (ta >= 0.0f && tb >= 0.0f) {
            if (sp + 2 > kStack) break;  // cannot happen for trees built by build_bvh (depth < 64)
            if (ta <= tb) {
                stack[sp++] = b;
                stack[sp++] = a;
            } else {
                stack[sp++] = a;
                stack[sp++] = b;
            }
        } else if (ta >= 0.0f) {
            stack[sp++] = a;
        } else if (tb >= 0.0f) {
            stack[sp++] = b;
        }
    }
    *out_transmittance = transmittance;
    if (out_hit) *out_hit = (want_hit && hit < 3.4e38f) ? hit : -1.0f;
}

}  // namespace recon_rt
