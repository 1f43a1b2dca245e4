// Multi-resolution hash-grid encoding on the CPU (C++/OpenMP): forward, table gradient and input gradient.
//
// The twin of recon/fields/hashgrid.py's pure-torch fused path and bit-for-bit the same conventions (see that
// module's docstring): per level l and axis i, pos = x_i * R[l,i], lower corner min(floor(pos), R - 1), fraction
// pos - corner; corner c has bit i at position D-1-i (axis 0 most significant) and weight
// ((w_0 * w_1) * w_2) * w_3 in that order; dense levels index sum_i corner_i * stride_i, hashed levels
// xor_i(corner_i * prime_i) & mask; every level's rows start at offsets[l] of one flat table [P, F].
//
// Why a kernel: the torch path materialises [N*L, 2^D] index and weight blocks and scatters through index_add_;
// here each (point, level) keeps its 2^D corners on the stack, and the gathers of several points are in flight
// at once (see kGroup). Work split:
//   forward and input gradient: over blocks of points (each writes only its own rows);
//   table gradient: over levels (levels own disjoint table rows), so there are no atomics, and every row sums
//   its contributions in point order whatever the thread count (deterministic results).
// Inputs must already be clamped to [0, 1] (the Python side does it and zeroes the clamped coordinates' gradient).

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

int n_threads();  // raster_cpu.cpp: RECON_CPU_THREADS or torch's thread count

namespace {

constexpr int kMaxDims = 4;

// Per-level constants, read once into plain arrays.
struct Level {
    int64_t res[kMaxDims];
    int64_t mult[kMaxDims];  // dense strides or hash primes
    int64_t offset;
    bool hashed;
};

std::vector<Level> read_levels(const torch::Tensor& res, const torch::Tensor& mult, const torch::Tensor& offsets,
                               const torch::Tensor& hashed) {
    const int64_t L = res.size(0), D = res.size(1);
    auto r = res.accessor<int64_t, 2>();
    auto m = mult.accessor<int64_t, 2>();
    auto o = offsets.accessor<int64_t, 1>();
    auto h = hashed.accessor<bool, 1>();
    std::vector<Level> levels(L);
    for (int64_t l = 0; l < L; ++l) {
        for (int64_t i = 0; i < D; ++i) {
            levels[l].res[i] = r[l][i];
            levels[l].mult[i] = m[l][i];
        }
        levels[l].offset = o[l];
        levels[l].hashed = h[l];
    }
    return levels;
}

// The 2^D corner rows and weights of one point on one level, plus the per-axis linear weights (1 - f, f) that the
// input gradient needs.
template <int D, typename scalar_t>
struct Corners {
    int64_t row[1 << D];
    scalar_t w[1 << D];
    scalar_t axis_w[D][2];

    inline void compute(const scalar_t* x, const Level& lv, int64_t mask) {
        int64_t lo[D];
        for (int i = 0; i < D; ++i) {
            const scalar_t r = static_cast<scalar_t>(lv.res[i]);
            const scalar_t pos = x[i] * r;
            const scalar_t c = std::min(std::floor(pos), r - scalar_t(1));
            const scalar_t f = pos - c;
            lo[i] = static_cast<int64_t>(c);
            axis_w[i][0] = scalar_t(1) - f;
            axis_w[i][1] = f;
        }
        // Corners by axis expansion, axis 0 first (most significant bit), as the torch path's _outer.
        if (lv.hashed) {
            expand<true>(lo, lv);
            for (int k = 0; k < (1 << D); ++k) row[k] = (row[k] & mask) + lv.offset;
        } else {
            expand<false>(lo, lv);
            for (int k = 0; k < (1 << D); ++k) row[k] += lv.offset;
        }
    }

    template <bool kHashed>
    inline void expand(const int64_t* lo, const Level& lv) {
        row[0] = lo[0] * lv.mult[0];
        row[1] = row[0] + lv.mult[0];
        w[0] = axis_w[0][0];
        w[1] = axis_w[0][1];
        int n = 2;
        for (int i = 1; i < D; ++i) {
            const int64_t t0 = lo[i] * lv.mult[i], t1 = t0 + lv.mult[i];
            for (int k = n - 1; k >= 0; --k) {
                const int64_t a = row[k];
                const scalar_t wk = w[k];
                row[2 * k] = kHashed ? (a ^ t0) : (a + t0);
                row[2 * k + 1] = kHashed ? (a ^ t1) : (a + t1);
                w[2 * k] = wk * axis_w[i][0];
                w[2 * k + 1] = wk * axis_w[i][1];
            }
            n *= 2;
        }
    }
};

// Points are processed in blocks, level by level inside a block: one level's table rows stay in cache while the
// block's points gather from them, and the block's output rows (L * F values each, written one level at a time)
// stay in L2 instead of streaming the whole [N, L * F] output through memory once per level.
constexpr int64_t kBlock = 1024;
// Corners of kGroup points at a time: first all their rows (prefetched), then the gathers or updates, so that the
// cache misses of a group overlap instead of each point waiting for its own (large hashed tables: 3-7x faster
// forward than without at 2^15-2^19 rows).
constexpr int kGroup = 16;

template <int D, int kF, typename scalar_t>
void forward_impl(const scalar_t* x, const scalar_t* table, scalar_t* out, int64_t N, int64_t F,
                  const std::vector<Level>& levels, int64_t mask) {
    if (kF > 0) F = kF;  // compile-time feature count: unrolled, vectorised inner loops
    constexpr int kLocal = kF > 0 ? kF : 16;  // features accumulated in registers at a time
    const int64_t L = static_cast<int64_t>(levels.size());
    const int64_t n_blocks = (N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads())
    for (int64_t b = 0; b < n_blocks; ++b) {
        Corners<D, scalar_t> cr[kGroup];
        const int64_t end = std::min(N, (b + 1) * kBlock);
        for (int64_t l = 0; l < L; ++l) {
            for (int64_t n0 = b * kBlock; n0 < end; n0 += kGroup) {
                const int64_t m = std::min<int64_t>(kGroup, end - n0);
                for (int64_t j = 0; j < m; ++j) {
                    cr[j].compute(x + (n0 + j) * D, levels[l], mask);
                    for (int k = 0; k < (1 << D); ++k) __builtin_prefetch(table + cr[j].row[k] * F);
                }
                for (int64_t j = 0; j < m; ++j) {
                    scalar_t* o = out + ((n0 + j) * L + l) * F;
                    // Accumulate in registers: summing into `o` directly (which may alias `table`) would make
                    // every corner's loads wait for the previous corner's stores.
                    for (int64_t f0 = 0; f0 < F; f0 += kLocal) {
                        const int64_t nf = std::min<int64_t>(kLocal, F - f0);
                        scalar_t acc[kLocal] = {};
                        for (int k = 0; k < (1 << D); ++k) {
                            const scalar_t* t = table + cr[j].row[k] * F + f0;
                            const scalar_t wk = cr[j].w[k];
                            for (int64_t f = 0; f < nf; ++f) acc[f] += wk * t[f];
                        }
                        for (int64_t f = 0; f < nf; ++f) o[f0 + f] = acc[f];
                    }
                }
            }
        }
    }
}

template <int D, int kF, typename scalar_t>
void grad_table_impl(const scalar_t* x, const scalar_t* grad, scalar_t* grad_table, int64_t N, int64_t F,
                     const std::vector<Level>& levels, int64_t mask) {
    if (kF > 0) F = kF;  // compile-time feature count: unrolled, vectorised inner loops
    constexpr int kLocal = kF > 0 ? kF : 16;
    const int64_t L = static_cast<int64_t>(levels.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads())
    for (int64_t l = 0; l < L; ++l) {
        Corners<D, scalar_t> cr[kGroup];
        for (int64_t n0 = 0; n0 < N; n0 += kGroup) {
            const int64_t m = std::min<int64_t>(kGroup, N - n0);
            for (int64_t j = 0; j < m; ++j) {
                cr[j].compute(x + (n0 + j) * D, levels[l], mask);
                for (int k = 0; k < (1 << D); ++k) __builtin_prefetch(grad_table + cr[j].row[k] * F, 1);
            }
            for (int64_t j = 0; j < m; ++j) {
                const scalar_t* g = grad + ((n0 + j) * L + l) * F;
                for (int64_t f0 = 0; f0 < F; f0 += kLocal) {
                    const int64_t nf = std::min<int64_t>(kLocal, F - f0);
                    scalar_t gl[kLocal];  // a register copy: the stores below cannot alias it
                    for (int64_t f = 0; f < nf; ++f) gl[f] = g[f0 + f];
                    for (int k = 0; k < (1 << D); ++k) {
                        scalar_t* t = grad_table + cr[j].row[k] * F + f0;
                        const scalar_t wk = cr[j].w[k];
                        for (int64_t f = 0; f < nf; ++f) t[f] += wk * gl[f];
                    }
                }
            }
        }
    }
}

template <int D, int kF, typename scalar_t>
void grad_x_impl(const scalar_t* x, const scalar_t* table, const scalar_t* grad, scalar_t* grad_x, int64_t N,
                 int64_t F, const std::vector<Level>& levels, int64_t mask) {
    if (kF > 0) F = kF;  // compile-time feature count: unrolled, vectorised inner loops
    const int64_t L = static_cast<int64_t>(levels.size());
    const int64_t n_blocks = (N + kBlock - 1) / kBlock;
    // Same traversal as the forward: blocks of points, level by level, groups of prefetched corners.
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads())
    for (int64_t b = 0; b < n_blocks; ++b) {
        Corners<D, scalar_t> cr[kGroup];
        const int64_t start = b * kBlock, end = std::min(N, (b + 1) * kBlock);
        for (int64_t n = start; n < end; ++n)
            for (int i = 0; i < D; ++i) grad_x[n * D + i] = scalar_t(0);
        for (int64_t l = 0; l < L; ++l) {
            for (int64_t n0 = start; n0 < end; n0 += kGroup) {
                const int64_t m = std::min<int64_t>(kGroup, end - n0);
                for (int64_t j = 0; j < m; ++j) {
                    cr[j].compute(x + (n0 + j) * D, levels[l], mask);
                    for (int k = 0; k < (1 << D); ++k) __builtin_prefetch(table + cr[j].row[k] * F);
                }
                for (int64_t j = 0; j < m; ++j) {
                    const scalar_t* g = grad + ((n0 + j) * L + l) * F;
                    // s[c] = <grad, table[corner c]>: the loss' sensitivity to corner c's weight.
                    scalar_t s[1 << D];
                    for (int k = 0; k < (1 << D); ++k) {
                        const scalar_t* t = table + cr[j].row[k] * F;
                        scalar_t acc = 0;
                        for (int64_t f = 0; f < F; ++f) acc += t[f] * g[f];
                        s[k] = acc;
                    }
                    // d w_c / d f_i = (bit_i(c) ? +1 : -1) * prod_{j != i} w_j(bit_j(c)); d f_i / d x_i = R_i.
                    for (int i = 0; i < D; ++i) {
                        const int bit = D - 1 - i;
                        scalar_t acc = 0;
                        for (int k = 0; k < (1 << D); ++k) {
                            scalar_t others = scalar_t(1);
                            for (int a = 0; a < D; ++a)
                                if (a != i) others *= cr[j].axis_w[a][(k >> (D - 1 - a)) & 1];
                            acc += ((k >> bit) & 1 ? s[k] : -s[k]) * others;
                        }
                        grad_x[(n0 + j) * D + i] += acc * static_cast<scalar_t>(levels[l].res[i]);
                    }
                }
            }
        }
    }
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& table) {
    TORCH_CHECK(x.device().is_cpu() && table.device().is_cpu(), "hashgrid_cpu: tensors must be on the CPU");
    TORCH_CHECK(x.dim() == 2 && x.size(1) >= 1 && x.size(1) <= kMaxDims, "hashgrid_cpu: x must be [N, 1..4]");
    TORCH_CHECK(table.dim() == 2, "hashgrid_cpu: table must be [P, F]");
    TORCH_CHECK(x.scalar_type() == table.scalar_type(), "hashgrid_cpu: x and table must share a dtype");
}

// Calls fn(integral_constant<D>, integral_constant<kF>) with kF = F for the usual feature counts, else 0 (runtime).
template <typename Fn>
void dispatch(int64_t D, int64_t F, Fn&& fn) {
    auto with_f = [&](auto dims) {
        switch (F) {
            case 1: fn(dims, std::integral_constant<int, 1>()); break;
            case 2: fn(dims, std::integral_constant<int, 2>()); break;
            case 4: fn(dims, std::integral_constant<int, 4>()); break;
            case 8: fn(dims, std::integral_constant<int, 8>()); break;
            default: fn(dims, std::integral_constant<int, 0>()); break;
        }
    };
    switch (D) {
        case 1: with_f(std::integral_constant<int, 1>()); break;
        case 2: with_f(std::integral_constant<int, 2>()); break;
        case 3: with_f(std::integral_constant<int, 3>()); break;
        case 4: with_f(std::integral_constant<int, 4>()); break;
        default: TORCH_CHECK(false, "hashgrid_cpu: 1..4 input dimensions");
    }
}

}  // namespace

// x [N, D] clamped to [0, 1]; table [P, F]; res, mult [L, D] int64; offsets [L] int64; hashed [L] bool.
// Returns [N, L * F], level-major.
torch::Tensor hashgrid_fwd(torch::Tensor x, torch::Tensor table, torch::Tensor res, torch::Tensor mult,
                           torch::Tensor offsets, torch::Tensor hashed, int64_t mask) {
    check_inputs(x, table);
    x = x.contiguous();
    table = table.contiguous();
    const auto levels = read_levels(res, mult, offsets, hashed);
    const int64_t N = x.size(0), F = table.size(1), L = static_cast<int64_t>(levels.size());
    auto out = torch::empty({N, L * F}, table.options());
    AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "hashgrid_fwd", [&] {
        dispatch(x.size(1), F, [&](auto dims, auto feats) {
            forward_impl<decltype(dims)::value, decltype(feats)::value, scalar_t>(x.data_ptr<scalar_t>(), table.data_ptr<scalar_t>(),
                                                          out.data_ptr<scalar_t>(), N, F, levels, mask);
        });
    });
    return out;
}

// grad [N, L * F] -> {d loss / d table [P, F] (undefined unless need_table), d loss / d x [N, D] (undefined
// unless need_x)}.
std::vector<torch::Tensor> hashgrid_bwd(torch::Tensor x, torch::Tensor table, torch::Tensor grad, torch::Tensor res,
                                        torch::Tensor mult, torch::Tensor offsets, torch::Tensor hashed, int64_t mask,
                                        bool need_table, bool need_x) {
    check_inputs(x, table);
    x = x.contiguous();
    table = table.contiguous();
    grad = grad.to(table.scalar_type()).contiguous();
    const auto levels = read_levels(res, mult, offsets, hashed);
    const int64_t N = x.size(0), F = table.size(1);
    TORCH_CHECK(grad.numel() == N * static_cast<int64_t>(levels.size()) * F, "hashgrid_cpu: grad has the wrong size");
    torch::Tensor grad_table, grad_x;
    if (need_table) grad_table = torch::zeros_like(table);
    if (need_x) grad_x = torch::empty_like(x);
    AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "hashgrid_bwd", [&] {
        dispatch(x.size(1), F, [&](auto dims, auto feats) {
            constexpr int D = decltype(dims)::value, kF = decltype(feats)::value;
            if (need_table)
                grad_table_impl<D, kF, scalar_t>(x.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                                             grad_table.data_ptr<scalar_t>(), N, F, levels, mask);
            if (need_x)
                grad_x_impl<D, kF, scalar_t>(x.data_ptr<scalar_t>(), table.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                                         grad_x.data_ptr<scalar_t>(), N, F, levels, mask);
        });
    });
    return {grad_table, grad_x};
}
