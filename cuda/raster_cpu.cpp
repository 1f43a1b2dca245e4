// CPU tile rasterizer for 3D Gaussian splatting: binning, forward compositing and a hand-written backward.
//
// Same maths as gsplat 1.5.3's `rasterize_to_pixels_3dgs_{fwd,bwd}` CUDA kernels:
//   sigma = 0.5 * (a dx^2 + c dy^2) + b dx dy          with delta = mean2d - pixel centre (pixel + 0.5)
//   alpha = min(0.999, opacity * exp(-sigma))          skipped when sigma < 0 or alpha < 1/255
//   a pixel stops *before* the Gaussian whose next transmittance would be <= 1e-4 (that one is excluded)
//   colour = sum_i c_i alpha_i T_i + T_final * background
// Gaussians are drawn front to back in (depth, element index) order; the index tie-break comes from a stable
// radix sort, so every backend (this one, the pure-torch twin, the dense test oracle) orders ties the same way.
//
// Why this is fast on a CPU even though it follows gsplat's maths:
//   * One OpenMP task per tile (dynamic schedule: tiles differ a lot in cost); binning (radix sort by depth,
//     per-tile lists) is in C++ too.
//   * Inside a tile the loop is Gaussian-major: each Gaussian visits only the pixels of its own footprint - the
//     rows of its opacity-aware radius box and, per row, the exact chord of the alpha = 1/255 ellipse - instead
//     of every Gaussian visiting all tile pixels as the CUDA kernel does. Outside that ellipse alpha < 1/255, so
//     the image is unchanged.
//   * Per row, 8 pixels at a time with explicit SIMD (GCC/Clang vector extensions, a vectorised exp), lanes
//     masked rather than branched; tile state is structure-of-arrays; rows and tiles whose pixels have all
//     terminated are skipped.
//   * The backward walks each tile's list back to front, reconstructing each pixel's transmittance by division
//     (as gsplat does) and carrying only one scalar per pixel for the colour of what lies behind; a Gaussian's
//     gradient is summed in registers over the pixels it covers and then added once into a per-thread buffer;
//     the buffers are summed at the end (no atomics).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

// Threads for the kernels: $RECON_CPU_THREADS if set (useful on machines shared with other jobs, where fewer
// threads than cores can be faster: OpenMP workers spin at barriers), else torch.get_num_threads().
int n_threads() {
    static const int from_env = [] {
        const char *v = std::getenv("RECON_CPU_THREADS");
        return v ? std::atoi(v) : 0;
    }();
    return std::max(1, from_env > 0 ? from_env : at::get_num_threads());
}

namespace {

constexpr double kAlphaMin = 1.0 / 255.0;
constexpr double kAlphaMax = 0.999;
constexpr double kTransMin = 1e-4;
constexpr int32_t kLanes = 8;  // pixels per SIMD chunk of the inner loops



// ----------------------------------------------------------------------------------------------------------------
// Sorting: stable LSD radix sort on order-preserving integer images of the float keys.
// ----------------------------------------------------------------------------------------------------------------
inline uint64_t sort_key(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return u;
}
inline uint64_t sort_key(double d) {
    uint64_t u;
    std::memcpy(&u, &d, 8);
    return (u >> 63) ? ~u : (u | (uint64_t(1) << 63));
}

// Sorts ids by keys, stably (ids arrive in increasing element order, so ties stay in index order).
void radix_sort(std::vector<int32_t> &ids, std::vector<uint64_t> &keys, int key_bytes) {
    const size_t n = ids.size();
    if (n < 2) return;
    std::vector<int32_t> ids2(n);
    std::vector<uint64_t> keys2(n);
    for (int pass = 0; pass < key_bytes; ++pass) {
        const int shift = pass * 8;
        size_t count[257] = {0};
        for (size_t i = 0; i < n; ++i) count[((keys[i] >> shift) & 0xff) + 1]++;
        if (count[((keys[0] >> shift) & 0xff) + 1] == n) continue;  // all keys share this digit
        for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
        for (size_t i = 0; i < n; ++i) {
            const size_t dst = count[(keys[i] >> shift) & 0xff]++;
            ids2[dst] = ids[i];
            keys2[dst] = keys[i];
        }
        ids.swap(ids2);
        keys.swap(keys2);
    }
}

struct Rect {
    int32_t x0, x1, y0, y1;  // tile range, [x0, x1) x [y0, y1)
};

// ----------------------------------------------------------------------------------------------------------------
// Binning: which (depth-sorted) Gaussians touch each tile.
// ----------------------------------------------------------------------------------------------------------------
template <typename T>
std::vector<torch::Tensor> bin_impl(
    const torch::Tensor &means2d, const torch::Tensor &radii, const torch::Tensor &depths,
    const torch::Tensor &image_ids, int64_t n_images, int64_t width, int64_t height, int64_t tile_size) {
    const int64_t M = means2d.size(0);
    const int64_t TW = (width + tile_size - 1) / tile_size;
    const int64_t TH = (height + tile_size - 1) / tile_size;
    const int64_t n_tiles = TW * TH;
    const T *xy = means2d.data_ptr<T>();
    const int32_t *rad = radii.data_ptr<int32_t>();
    const T *dep = depths.data_ptr<T>();
    const bool has_ids = image_ids.numel() > 0;
    const int32_t *img = has_ids ? image_ids.data_ptr<int32_t>() : nullptr;
    const int64_t per_image = has_ids ? 0 : M / std::max<int64_t>(n_images, 1);

    // Elements of each image, in index order (bucket sort when packed; contiguous ranges when unpacked).
    std::vector<std::vector<int32_t>> order(n_images);
    if (has_ids) {
        for (int64_t m = 0; m < M; ++m) {
            if (rad[2 * m] > 0 && rad[2 * m + 1] > 0) order[img[m]].push_back((int32_t)m);
        }
    }
    std::vector<std::vector<Rect>> rects(n_images);
    const int key_bytes = sizeof(T);

#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads())
    for (int64_t i = 0; i < n_images; ++i) {
        std::vector<int32_t> &ids = order[i];
        if (!has_ids) {
            for (int64_t m = i * per_image; m < (i + 1) * per_image; ++m) {
                if (rad[2 * m] > 0 && rad[2 * m + 1] > 0) ids.push_back((int32_t)m);
            }
        }
        std::vector<uint64_t> keys(ids.size());
        for (size_t k = 0; k < ids.size(); ++k) keys[k] = sort_key(dep[ids[k]]);
        radix_sort(ids, keys, key_bytes);
        // Tile rectangle of each Gaussian, exactly as gsplat's isect_tiles (min inclusive, max exclusive).
        std::vector<Rect> &r = rects[i];
        r.resize(ids.size());
        for (size_t k = 0; k < ids.size(); ++k) {
            const int32_t m = ids[k];
            const double tx = (double)xy[2 * m] / tile_size, ty = (double)xy[2 * m + 1] / tile_size;
            const double rx = (double)rad[2 * m] / tile_size, ry = (double)rad[2 * m + 1] / tile_size;
            auto clampi = [](double v, int64_t hi) {
                return (int32_t)std::min<double>(std::max<double>(0.0, v), (double)hi);
            };
            r[k] = {clampi(std::floor(tx - rx), TW), clampi(std::ceil(tx + rx), TW), clampi(std::floor(ty - ry), TH),
                    clampi(std::ceil(ty + ry), TH)};
        }
    }

    // Count per tile. Work is split into (image, band of tile rows) tasks so that one image still uses all
    // threads; each task scans the whole depth order but only touches its own rows, keeping the order.
    const int64_t n_bands = std::min<int64_t>(TH, std::max(1, n_threads()) * 2);
    auto band_rows = [&](int64_t b, int64_t &r0, int64_t &r1) {
        r0 = TH * b / n_bands;
        r1 = TH * (b + 1) / n_bands;
    };
    std::vector<int64_t> counts(n_images * n_tiles + 1, 0);
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads())
    for (int64_t task = 0; task < n_images * n_bands; ++task) {
        const int64_t i = task / n_bands, b = task % n_bands;
        int64_t r0, r1;
        band_rows(b, r0, r1);
        int64_t *cnt = counts.data() + i * n_tiles;
        for (const Rect &r : rects[i]) {
            const int32_t y0 = std::max<int32_t>(r.y0, r0), y1 = std::min<int32_t>(r.y1, r1);
            for (int32_t y = y0; y < y1; ++y)
                for (int32_t x = r.x0; x < r.x1; ++x) cnt[y * TW + x]++;
        }
    }
    // Exclusive prefix sum -> offsets [n_images * n_tiles + 1].
    auto offsets = torch::empty({n_images * n_tiles + 1}, torch::dtype(torch::kInt64));
    int64_t *off = offsets.data_ptr<int64_t>();
    int64_t total = 0;
    for (int64_t t = 0; t < n_images * n_tiles; ++t) {
        off[t] = total;
        total += counts[t];
    }
    off[n_images * n_tiles] = total;

    auto flatten_ids = torch::empty({total}, torch::dtype(torch::kInt32));
    int32_t *fid = flatten_ids.data_ptr<int32_t>();
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads())
    for (int64_t task = 0; task < n_images * n_bands; ++task) {
        const int64_t i = task / n_bands, b = task % n_bands;
        int64_t r0, r1;
        band_rows(b, r0, r1);
        const int64_t *base = off + i * n_tiles;
        std::vector<int64_t> cursor(base + r0 * TW, base + r1 * TW);
        const std::vector<int32_t> &ids = order[i];
        const std::vector<Rect> &rr = rects[i];
        for (size_t k = 0; k < ids.size(); ++k) {
            const Rect &r = rr[k];
            const int32_t y0 = std::max<int32_t>(r.y0, r0), y1 = std::min<int32_t>(r.y1, r1);
            for (int32_t y = y0; y < y1; ++y)
                for (int32_t x = r.x0; x < r.x1; ++x) fid[cursor[(y - r0) * TW + x]++] = ids[k];
        }
    }
    return {offsets, flatten_ids};
}

// ----------------------------------------------------------------------------------------------------------------
// 8-lane SIMD via GCC/Clang vector extensions. The inner loops process 8 pixels of a tile row at once; lanes
// are masked, never branched on. (Auto-vectorisation of these short, masked loops proved unreliable: GCC
// reports them vectorised and still emits scalar code.) Float lanes are 256-bit, double lanes 512-bit.
// ----------------------------------------------------------------------------------------------------------------
typedef float vf8 __attribute__((vector_size(32)));
typedef double vd8 __attribute__((vector_size(64)));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef int64_t vl8 __attribute__((vector_size(64)));

template <typename T>
struct Simd;
template <>
struct Simd<float> {
    using V = vf8;  // values
    using M = vi8;  // comparison masks (-1 / 0), same lane width as V
    using I = vi8;  // integer type of the same width (exponent bit tricks)
    static constexpr int kMant = 23, kBias = 127;
    static M from32(vi8 m) { return m; }
    static vi8 to32(M m) { return m; }
};
template <>
struct Simd<double> {
    using V = vd8;
    using M = vl8;
    using I = vl8;
    static constexpr int kMant = 52, kBias = 1023;
    static M from32(vi8 m) { return __builtin_convertvector(m, vl8); }
    static vi8 to32(M m) { return __builtin_convertvector(m, vi8); }
};

template <typename V>
inline V vload(const void *p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}
template <typename V>
inline void vstore(void *p, const V &v) {
    std::memcpy(p, &v, sizeof(V));
}
template <typename V>
using elem_t = std::remove_cvref_t<decltype(std::declval<V>()[0])>;
template <typename V, typename S>
inline V splat(S s) {
    return V{} + (elem_t<V>)s;
}
template <typename V>
inline auto hsum(const V &v) {
    auto s = v[0];
    for (int j = 1; j < 8; ++j) s += v[j];
    return s;
}
inline int32_t hsum_i(const vi8 &v) {
    int32_t s = 0;
    for (int j = 0; j < 8; ++j) s += v[j];
    return s;
}

// exp(x), vectorised: Cody-Waite range reduction + the Cephes polynomials (float <= 2 ulp, double <= 1 ulp).
inline vf8 vexp(vf8 x) {
    using S = Simd<float>;
    x = x < -87.0f ? splat<vf8>(-87.0f) : x;
    x = x > 88.0f ? splat<vf8>(88.0f) : x;
    const vf8 t = x * 1.44269504088896341f + 0.5f;
    vf8 n = __builtin_convertvector(__builtin_convertvector(t, vi8), vf8);  // trunc ...
    n = n > t ? n - 1.0f : n;                                             // ... -> floor
    vf8 r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf8 p = splat<vf8>(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    const vf8 y = p * (r * r) + r + 1.0f;
    const vi8 bits = (__builtin_convertvector(n, vi8) + S::kBias) << S::kMant;
    return y * (vf8)bits;
}
inline vd8 vexp(vd8 x) {
    using S = Simd<double>;
    x = x < -700.0 ? splat<vd8>(-700.0) : x;
    x = x > 700.0 ? splat<vd8>(700.0) : x;
    const vd8 t = x * 1.4426950408889634073599 + 0.5;
    vd8 n = __builtin_convertvector(__builtin_convertvector(t, vl8), vd8);
    n = n > t ? n - 1.0 : n;
    vd8 r = x - n * 6.93145751953125E-1;
    r = r - n * 1.42860682030941723212E-6;
    const vd8 rr = r * r;
    const vd8 px = r * ((1.26177193074810590878E-4 * rr + 3.02994407707441961300E-2) * rr + 9.99999999999999999910E-1);
    const vd8 qx = ((3.00198505138664455042E-6 * rr + 2.52448340349684104192E-3) * rr + 2.27265548208155028766E-1) * rr +
                   2.00000000000000000009E0;
    const vd8 y = 1.0 + 2.0 * (px / (qx - px));
    const vl8 bits = (__builtin_convertvector(n, vl8) + (int64_t)S::kBias) << (int64_t)S::kMant;
    return y * (vd8)bits;
}

// sigma = 0.5 (a dx^2 + c dy^2) + b dx dy for the 8 pixels of a chunk. Forward and backward share this exact
// code (and the build disables FMA contraction) so that the backward re-derives the forward's skip decisions.
template <typename V, typename T>
inline V eval_sigma(T ca, T cb, T cc, const V &dx, T dy) {
    return (T)0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy;
}
template <typename V>
inline V lane_centres(int32_t x) {  // pixel centres x + j + 0.5, j = 0..7
    V v;
    for (int j = 0; j < 8; ++j) v[j] = (elem_t<V>)(x + j) + (elem_t<V>)0.5;
    return v;
}

// Pixel rows of one Gaussian inside a tile (pixel centres within its radius, +1 px slack against rounding).
struct Box {
    int32_t x0, x1, y0, y1;  // inclusive local pixel coordinates
};
template <typename T>
inline bool pixel_box(T gx, T gy, int32_t rx, int32_t ry, int32_t px0, int32_t py0, int32_t tw, int32_t th,
                      Box &b) {
    b.x0 = std::max<int32_t>(0, (int32_t)std::floor(gx - rx - T(0.5)) - px0);
    b.x1 = std::min<int32_t>(tw - 1, (int32_t)std::ceil(gx + rx - T(0.5)) - px0);
    b.y0 = std::max<int32_t>(0, (int32_t)std::floor(gy - ry - T(0.5)) - py0);
    b.y1 = std::min<int32_t>(th - 1, (int32_t)std::ceil(gy + ry - T(0.5)) - py0);
    return b.x0 <= b.x1 && b.y0 <= b.y1;
}

// sigma above this cannot give alpha >= 1/255 (1e-3 of slack so the exact per-pixel test still decides).
template <typename T>
inline T sigma_cut(T opacity) {
    return opacity > T(0) ? std::log(opacity * T(255.0)) + T(1e-3) : T(-1);
}

// Columns of row `dy` where sigma <= cut (the exact chord of the ellipse, +1 px slack), clipped to [x0, x1] and
// widened to whole 8-lane chunks. Thin rotated Gaussians fill a small part of their box, so this skips most of
// it. With dx = gx - (px + 0.5):  sigma <= cut  <=>  (a dx + b dy)^2 <= 2 a cut - (a c - b^2) dy^2.
struct Chord {
    double gx, inv_a, b_over_a, two_a_cut, det;
    bool degenerate;
};
template <typename T>
inline Chord make_chord(T gx, T ca, T cb, T cc, T cut) {
    Chord ch;
    ch.gx = gx;
    ch.degenerate = !(ca > T(0));
    ch.inv_a = ch.degenerate ? 0.0 : 1.0 / ca;
    ch.b_over_a = (double)cb * ch.inv_a;
    ch.two_a_cut = 2.0 * ca * (double)cut;
    ch.det = (double)ca * cc - (double)cb * cb;
    return ch;
}
inline bool row_span(const Chord &ch, double dy, int32_t px0, int32_t x0, int32_t x1, int32_t &xs, int32_t &xe) {
    if (ch.degenerate) {  // keep the whole box, the per-pixel test decides
        xs = x0;
        xe = x1;
    } else {
        const double disc = ch.two_a_cut - ch.det * dy * dy;
        if (!(disc >= 0.0)) return false;  // the row misses the ellipse
        const double half = std::sqrt(disc) * ch.inv_a, mid = -ch.b_over_a * dy;
        // dx in [mid - half, mid + half]  ->  px + 0.5 in [gx - mid - half, gx - mid + half]
        xs = std::max<int32_t>(x0, (int32_t)std::floor(ch.gx - mid - half - 0.5) - px0 - 1);
        xe = std::min<int32_t>(x1, (int32_t)std::ceil(ch.gx - mid + half - 0.5) - px0 + 1);
    }
    if (xs > xe) return false;
    xs &= ~(kLanes - 1);
    xe |= (kLanes - 1);
    return true;
}

// ----------------------------------------------------------------------------------------------------------------
// Forward
// ----------------------------------------------------------------------------------------------------------------
// Tile-local state is structure-of-arrays with a row stride padded to whole 8-lane chunks; lanes outside the
// image start "done" so they never draw and never count towards the tile's early exit.
template <typename T, int CD>
void fwd_impl(const T *xy, const T *con, const T *col, const T *opa, const T *dep, const int32_t *rad, const T *bg,
              int64_t Dc, bool depth_ch, bool want_median, const int64_t *off, const int32_t *fid, int64_t I,
              int64_t W, int64_t H, int64_t ts, T *out, T *alpha_out, T *tfinal_out, int32_t *last_out,
              T *med_out, int32_t *med_id_out, T *maxw_out, int64_t n_elems) {
    using SD = Simd<T>;
    using V = typename SD::V;
    using M = typename SD::M;
    const int64_t D = CD >= 0 ? CD : Dc;  // colour channels (compile-time when CD >= 0)
    const int64_t Do = D + (depth_ch ? 1 : 0);
    const int64_t TW = (W + ts - 1) / ts, TH = (H + ts - 1) / ts;
    const int64_t n_tiles = TW * TH;
    const int64_t RS = (ts + kLanes - 1) / kLanes * kLanes;
    const int64_t S = RS * ts;
#pragma omp parallel num_threads(n_threads())
    {
        std::vector<T> Tr(S), acc(S * std::max<int64_t>(Do, 1)), med(S), wrow(RS);
        std::vector<int32_t> last(S), done(S), med_id(S), row_done(ts);
        // Per-thread running max of each element's weight α·T (merged after the loop; no atomics in the hot path).
        std::vector<T> maxw(maxw_out ? n_elems : 0, T(0));
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < I * n_tiles; ++task) {
            const int64_t i = task / n_tiles, tile = task % n_tiles;
            const int32_t px0 = (int32_t)((tile % TW) * ts), py0 = (int32_t)((tile / TW) * ts);
            const int32_t tw = (int32_t)std::min<int64_t>(ts, W - px0), th = (int32_t)std::min<int64_t>(ts, H - py0);
            const int32_t npix = tw * th;
            std::fill(Tr.begin(), Tr.end(), T(1));
            std::fill(acc.begin(), acc.end(), T(0));
            std::fill(med.begin(), med.end(), T(0));
            std::fill(last.begin(), last.end(), -1);
            std::fill(med_id.begin(), med_id.end(), -1);
            std::fill(row_done.begin(), row_done.end(), 0);
            for (int32_t ly = 0; ly < ts; ++ly)
                for (int32_t lx = 0; lx < RS; ++lx) done[ly * RS + lx] = (ly >= th || lx >= tw) ? 1 : 0;
            int32_t n_done = 0;
            const int64_t start = off[task], end = off[task + 1];
            for (int64_t k = start; k < end && n_done < npix; ++k) {
                const int32_t g = fid[k];
                const int32_t kl = (int32_t)(k - start);
                const T gx = xy[2 * g], gy = xy[2 * g + 1];
                Box b;
                if (!pixel_box<T>(gx, gy, rad[2 * g], rad[2 * g + 1], px0, py0, tw, th, b)) continue;
                const T ca = con[3 * g], cb = con[3 * g + 1], cc = con[3 * g + 2], op = opa[g];
                const Chord chord = make_chord(gx, ca, cb, cc, sigma_cut(op));
                const T *c = col + g * D;
                const T z = dep[g];
                V gmax = splat<V>(0);
                for (int32_t ly = b.y0; ly <= b.y1; ++ly) {
                    if (row_done[ly] == tw) continue;
                    const T dy = gy - ((T)(py0 + ly) + T(0.5));
                    int32_t xs, xe;
                    if (!row_span(chord, dy, px0, b.x0, b.x1, xs, xe)) continue;
                    const int64_t base = ly * RS;
                    int32_t nd = 0;
                    for (int32_t cx = xs; cx <= xe; cx += kLanes) {
                        const int64_t q = base + cx;
                        const V dx = gx - lane_centres<V>(px0 + cx);
                        const V sigma = eval_sigma(ca, cb, cc, dx, dy);
                        V alpha = op * vexp(-sigma);
                        alpha = alpha < T(kAlphaMax) ? alpha : splat<V>(kAlphaMax);
                        const V t = vload<V>(&Tr[q]);
                        const vi8 dn = vload<vi8>(&done[q]);
                        const M ok = SD::from32(dn == 0) & (sigma >= T(0)) & (alpha >= T(kAlphaMin));
                        const V next_T = t * (T(1) - alpha);
                        const M stop = ok & (next_T <= T(kTransMin));  // done; this Gaussian is excluded
                        const M draw = ok & ~stop;
                        const V w = draw ? alpha * t : splat<V>(0);
                        vstore(&wrow[cx], w);
                        if (maxw_out) gmax = gmax > w ? gmax : w;
                        const M mc = draw & (t > T(0.5));
                        vstore(&med[q], mc ? splat<V>(z) : vload<V>(&med[q]));
                        const vi8 mc32 = SD::to32(mc), draw32 = SD::to32(draw), stop32 = SD::to32(stop);
                        vstore(&med_id[q], mc32 ? splat<vi8>(g) : vload<vi8>(&med_id[q]));
                        vstore(&last[q], draw32 ? splat<vi8>(kl) : vload<vi8>(&last[q]));
                        vstore(&Tr[q], draw ? next_T : t);
                        vstore(&done[q], dn | (stop32 & 1));
                        nd += hsum_i(stop32 & 1);
                    }
                    for (int64_t ch = 0; ch < Do; ++ch) {
                        const T v = ch < D ? c[ch] : z;
                        T *arow = acc.data() + ch * S + base;
                        for (int32_t cx = xs; cx <= xe; cx += kLanes)
                            vstore(arow + cx, vload<V>(arow + cx) + vload<V>(&wrow[cx]) * v);
                    }
                    row_done[ly] += nd;
                    n_done += nd;
                }
                if (maxw_out) {
                    T m = gmax[0];
                    for (int j = 1; j < kLanes; ++j) m = std::max<T>(m, gmax[j]);
                    if (m > maxw[g]) maxw[g] = m;
                }
            }
            // Write the tile out.
            const T *bgi = bg ? bg + i * D : nullptr;
            for (int32_t ly = 0; ly < th; ++ly) {
                for (int32_t lx = 0; lx < tw; ++lx) {
                    const int32_t p = ly * RS + lx;
                    const int64_t pix = (i * H + py0 + ly) * W + px0 + lx;
                    T *o = out + pix * Do;
                    for (int64_t ch = 0; ch < D; ++ch) o[ch] = acc[ch * S + p] + (bgi ? Tr[p] * bgi[ch] : T(0));
                    if (depth_ch) o[D] = acc[D * S + p];
                    alpha_out[pix] = T(1) - Tr[p];
                    tfinal_out[pix] = Tr[p];
                    last_out[pix] = last[p];
                    if (want_median) {
                        med_out[pix] = med[p];
                        med_id_out[pix] = med_id[p];
                    }
                }
            }
        }
        if (maxw_out) {
#pragma omp critical
            for (int64_t g = 0; g < n_elems; ++g) maxw_out[g] = std::max(maxw_out[g], maxw[g]);
        }
    }
}

// ----------------------------------------------------------------------------------------------------------------
// Backward
// ----------------------------------------------------------------------------------------------------------------
// Per-element gradient record layout in the per-thread buffers.
enum : int64_t { kX = 0, kY, kA, kB, kC, kO, kAX, kAY, kCol };

// Per pixel, front-to-back weights w_i = alpha_i T_i give
//   dL/dalpha_i = T_i (c_i . v) - (sum_{j>i} w_j c_j . v) / (1 - alpha_i) + T_final (v_a - bg . v) / (1 - alpha_i),
// so besides T the backward only needs the scalar bv = (sum_{j>i} w_j c_j) . v per pixel, not a colour buffer.
template <typename T, int CD>
void bwd_impl(const T *xy, const T *con, const T *col, const T *opa, const T *dep, const int32_t *rad, const T *bg,
              int64_t Dc, bool depth_ch, bool absgrad, const int64_t *off, const int32_t *fid, int64_t I, int64_t M,
              int64_t W, int64_t H, int64_t ts, const T *tfinal, const int32_t *last_ids, const T *v_out,
              const T *v_alpha_out, T *v_xy, T *v_con, T *v_col, T *v_opa, T *v_dep, T *v_xy_abs) {
    using SD = Simd<T>;
    using V = typename SD::V;
    using Mk = typename SD::M;
    const int64_t D = CD >= 0 ? CD : Dc;
    const int64_t Do = D + (depth_ch ? 1 : 0);
    const int64_t K = kCol + Do;  // record size
    const int64_t TW = (W + ts - 1) / ts, TH = (H + ts - 1) / ts;
    const int64_t n_tiles = TW * TH;
    const int64_t RS = (ts + kLanes - 1) / kLanes * kLanes;
    const int64_t S = RS * ts;
    const int nt = n_threads();
    // One gradient buffer per thread, summed at the end in thread order: no atomics. Tiles are dealt round-robin
    // (static schedule) rather than dynamically so that each buffer sums the same tiles in the same order on every
    // run: gradients are bitwise reproducible for a given thread count, and a resumed run continues exactly.
    std::vector<std::vector<T>> bufs(nt);

#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num();
        std::vector<T> &gbuf = bufs[tid];
        gbuf.assign(M * K, T(0));
        std::vector<T> Tr(S), vtf(S), bv(S), vout(S * std::max<int64_t>(Do, 1));
        std::vector<T> cvrow(RS), frow(RS), gcol(std::max<int64_t>(Do, 1));
        std::vector<int32_t> last(S);
#pragma omp for schedule(static, 1)
        for (int64_t task = 0; task < I * n_tiles; ++task) {
            const int64_t start = off[task], end = off[task + 1];
            if (start == end) continue;
            const int64_t i = task / n_tiles, tile = task % n_tiles;
            const int32_t px0 = (int32_t)((tile % TW) * ts), py0 = (int32_t)((tile / TW) * ts);
            const int32_t tw = (int32_t)std::min<int64_t>(ts, W - px0), th = (int32_t)std::min<int64_t>(ts, H - py0);
            const T *bgi = bg ? bg + i * D : nullptr;
            int32_t max_last = -1;
            // Lanes outside the image keep last = -1 (never drawn) and zero state.
            std::fill(last.begin(), last.end(), -1);
            std::fill(Tr.begin(), Tr.end(), T(1));
            std::fill(vtf.begin(), vtf.end(), T(0));
            std::fill(bv.begin(), bv.end(), T(0));
            std::fill(vout.begin(), vout.end(), T(0));
            for (int32_t ly = 0; ly < th; ++ly) {
                for (int32_t lx = 0; lx < tw; ++lx) {
                    const int32_t p = ly * RS + lx;
                    const int64_t pix = (i * H + py0 + ly) * W + px0 + lx;
                    const T tf = tfinal[pix];
                    Tr[p] = tf;
                    last[p] = last_ids[pix];
                    max_last = std::max(max_last, last[p]);
                    T dot = 0;
                    for (int64_t ch = 0; ch < Do; ++ch) vout[ch * S + p] = v_out[pix * Do + ch];
                    if (bgi)
                        for (int64_t ch = 0; ch < D; ++ch) dot += bgi[ch] * v_out[pix * Do + ch];
                    vtf[p] = tf * (v_alpha_out[pix] - dot);
                }
            }
            for (int64_t k = start + max_last; k >= start; --k) {
                const int32_t kl = (int32_t)(k - start);
                const int32_t g = fid[k];
                const T gx = xy[2 * g], gy = xy[2 * g + 1];
                Box b;
                if (!pixel_box<T>(gx, gy, rad[2 * g], rad[2 * g + 1], px0, py0, tw, th, b)) continue;
                const T ca = con[3 * g], cb = con[3 * g + 1], cc = con[3 * g + 2], op = opa[g];
                const Chord chord = make_chord(gx, ca, cb, cc, sigma_cut(op));
                const T *c = col + g * D;
                const T z = dep[g];
                const V zero = splat<V>(0);
                V a_x = zero, a_y = zero, a_a = zero, a_b = zero, a_c = zero, a_o = zero, a_ax = zero, a_ay = zero;
                int32_t n_hit = 0;
                for (int64_t ch = 0; ch < Do; ++ch) gcol[ch] = 0;
                for (int32_t ly = b.y0; ly <= b.y1; ++ly) {
                    const T dy = gy - ((T)(py0 + ly) + T(0.5));
                    int32_t xs, xe;
                    if (!row_span(chord, dy, px0, b.x0, b.x1, xs, xe)) continue;
                    const int64_t base = ly * RS;
                    // c_i . v of this Gaussian at each pixel of the span
                    for (int32_t cx = xs; cx <= xe; cx += kLanes) {
                        V cv = zero;
                        for (int64_t ch = 0; ch < Do; ++ch)
                            cv += (ch < D ? c[ch] : z) * vload<V>(&vout[ch * S + base + cx]);
                        vstore(&cvrow[cx], cv);
                    }
                    int32_t nh = 0;
                    for (int32_t cx = xs; cx <= xe; cx += kLanes) {
                        const int64_t q = base + cx;
                        const V dx = gx - lane_centres<V>(px0 + cx);
                        const V sigma = eval_sigma(ca, cb, cc, dx, dy);
                        const V vis = vexp(-sigma);
                        V alpha = op * vis;
                        alpha = alpha < T(kAlphaMax) ? alpha : splat<V>(kAlphaMax);
                        const Mk ok = SD::from32(kl <= vload<vi8>(&last[q])) & (sigma >= T(0)) & (alpha >= T(kAlphaMin));
                        const V ra = T(1) / (T(1) - alpha);
                        const V t_old = vload<V>(&Tr[q]);
                        const V t = t_old * ra;  // transmittance in front of this Gaussian
                        const V cv = vload<V>(&cvrow[cx]);
                        const V bvv = vload<V>(&bv[q]);
                        const V v_alpha = cv * t + (vload<V>(&vtf[q]) - bvv) * ra;
                        const Mk unclamped = ok & (op * vis <= T(kAlphaMax));  // no gradient through the clamp
                        const V v_sigma = unclamped ? -op * vis * v_alpha : zero;
                        a_a += (T)0.5 * v_sigma * dx * dx;
                        a_b += v_sigma * dx * dy;
                        a_c += (T)0.5 * v_sigma * dy * dy;
                        const V vx = v_sigma * (ca * dx + cb * dy);
                        const V vy = v_sigma * (cb * dx + cc * dy);
                        a_x += vx;
                        a_y += vy;
                        a_ax += vx < T(0) ? -vx : vx;
                        a_ay += vy < T(0) ? -vy : vy;
                        a_o += unclamped ? vis * v_alpha : zero;
                        const V f = ok ? alpha * t : zero;
                        vstore(&frow[cx], f);
                        vstore(&bv[q], bvv + f * cv);
                        vstore(&Tr[q], ok ? t : t_old);
                        nh -= hsum_i(SD::to32(ok));
                    }
                    if (nh == 0) continue;
                    n_hit += nh;
                    for (int64_t ch = 0; ch < Do; ++ch) {
                        V s = zero;
                        for (int32_t cx = xs; cx <= xe; cx += kLanes)
                            s += vload<V>(&frow[cx]) * vload<V>(&vout[ch * S + base + cx]);
                        gcol[ch] += hsum(s);
                    }
                }
                if (n_hit == 0) continue;
                T *rec = gbuf.data() + (int64_t)g * K;
                rec[kX] += hsum(a_x);
                rec[kY] += hsum(a_y);
                rec[kA] += hsum(a_a);
                rec[kB] += hsum(a_b);
                rec[kC] += hsum(a_c);
                rec[kO] += hsum(a_o);
                rec[kAX] += hsum(a_ax);
                rec[kAY] += hsum(a_ay);
                for (int64_t ch = 0; ch < Do; ++ch) rec[kCol + ch] += gcol[ch];
            }
        }
#pragma omp barrier
        // Reduce the per-thread buffers, parallel over elements.
#pragma omp for schedule(static)
        for (int64_t m = 0; m < M; ++m) {
            T small[kCol + 32];
            std::vector<T> big;
            T *acc = small;
            if (K > kCol + 32) {  // many feature channels: fall back to the heap
                big.assign(K, T(0));
                acc = big.data();
            }
            for (int64_t q = 0; q < K; ++q) acc[q] = 0;
            for (int t = 0; t < nt; ++t) {
                const T *rec = bufs[t].data() + m * K;
                for (int64_t q = 0; q < K; ++q) acc[q] += rec[q];
            }
            v_xy[2 * m] = acc[kX];
            v_xy[2 * m + 1] = acc[kY];
            v_con[3 * m] = acc[kA];
            v_con[3 * m + 1] = acc[kB];
            v_con[3 * m + 2] = acc[kC];
            v_opa[m] = acc[kO];
            for (int64_t ch = 0; ch < D; ++ch) v_col[m * D + ch] = acc[kCol + ch];
            if (depth_ch) v_dep[m] = acc[kCol + D];
            if (absgrad) {
                v_xy_abs[2 * m] = acc[kAX];
                v_xy_abs[2 * m + 1] = acc[kAY];
            }
        }
    }
}


void check_cpu(const torch::Tensor &t, const char *name) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

}  // namespace

// ----------------------------------------------------------------------------------------------------------------
// Python bindings
// ----------------------------------------------------------------------------------------------------------------

// means2d [M,2], radii [M,2] int32, depths [M], image_ids [M] int32 or empty (then element m is in image
// m / (M / n_images)). Returns tile_offsets [n_images*TH*TW + 1] int64 and flatten_ids [n_isects] int32.
std::vector<torch::Tensor> bin_gaussians(torch::Tensor means2d, torch::Tensor radii, torch::Tensor depths,
                                         torch::Tensor image_ids, int64_t n_images, int64_t width, int64_t height,
                                         int64_t tile_size) {
    check_cpu(means2d, "means2d");
    check_cpu(radii, "radii");
    check_cpu(depths, "depths");
    TORCH_CHECK(radii.scalar_type() == torch::kInt32, "radii must be int32");
    if (image_ids.numel() > 0) {
        check_cpu(image_ids, "image_ids");
        TORCH_CHECK(image_ids.scalar_type() == torch::kInt32, "image_ids must be int32");
    }
    std::vector<torch::Tensor> res;
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "bin_gaussians", [&] {
        res = bin_impl<scalar_t>(means2d, radii, depths, image_ids, n_images, width, height, tile_size);
    });
    return res;
}

// Returns render [I,H,W,Do], alphas [I,H,W,1], T_final [I,H,W], last_ids [I,H,W] int32,
// median depth [I,H,W,1] and median element ids [I,H,W] int32 (empty unless want_median).
std::vector<torch::Tensor> rasterize_fwd(torch::Tensor means2d, torch::Tensor conics, torch::Tensor colors,
                                         torch::Tensor opacities, torch::Tensor depths, torch::Tensor radii,
                                         c10::optional<torch::Tensor> backgrounds, bool depth_channel,
                                         bool want_median, torch::Tensor tile_offsets, torch::Tensor flatten_ids,
                                         int64_t n_images, int64_t width, int64_t height, int64_t tile_size,
                                         bool want_max_weight) {
    for (auto *t : {&means2d, &conics, &colors, &opacities, &depths, &radii, &tile_offsets, &flatten_ids})
        check_cpu(*t, "input");
    const int64_t Dc = colors.size(1);
    const int64_t Do = Dc + (depth_channel ? 1 : 0);
    auto opts = means2d.options();
    auto out = torch::empty({n_images, height, width, Do}, opts);
    auto alphas = torch::empty({n_images, height, width, 1}, opts);
    auto tfinal = torch::empty({n_images, height, width}, opts);
    auto last = torch::empty({n_images, height, width}, opts.dtype(torch::kInt32));
    auto med = want_median ? torch::empty({n_images, height, width, 1}, opts) : torch::empty({0}, opts);
    const int64_t M = conics.size(0);
    auto maxw = want_max_weight ? torch::zeros({M}, opts) : torch::empty({0}, opts);
    auto med_id = want_median ? torch::empty({n_images, height, width}, opts.dtype(torch::kInt32))
                              : torch::empty({0}, opts.dtype(torch::kInt32));
    torch::Tensor bg;
    if (backgrounds.has_value() && backgrounds->defined()) {
        bg = backgrounds->contiguous();
        TORCH_CHECK(bg.size(0) == n_images && bg.size(1) == Dc, "backgrounds must be [n_images, D]");
    }
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_fwd", [&] {
        using T = scalar_t;
        const T *bgp = bg.defined() ? bg.data_ptr<T>() : nullptr;
        T *medp = want_median ? med.data_ptr<T>() : nullptr;
        int32_t *medip = want_median ? med_id.data_ptr<int32_t>() : nullptr;
        T *maxwp = want_max_weight ? maxw.data_ptr<T>() : nullptr;
        auto run = [&](auto cd) {
            fwd_impl<T, decltype(cd)::value>(
                means2d.data_ptr<T>(), conics.data_ptr<T>(), colors.data_ptr<T>(), opacities.data_ptr<T>(),
                depths.data_ptr<T>(), radii.data_ptr<int32_t>(), bgp, Dc, depth_channel, want_median,
                tile_offsets.data_ptr<int64_t>(), flatten_ids.data_ptr<int32_t>(), n_images, width, height, tile_size,
                out.data_ptr<T>(), alphas.data_ptr<T>(), tfinal.data_ptr<T>(), last.data_ptr<int32_t>(), medp, medip,
                maxwp, M);
        };
        switch (Dc) {  // specialise the common channel counts so the channel loops unroll
            case 0: run(std::integral_constant<int, 0>{}); break;
            case 1: run(std::integral_constant<int, 1>{}); break;
            case 3: run(std::integral_constant<int, 3>{}); break;
            default: run(std::integral_constant<int, -1>{}); break;
        }
    });
    return {out, alphas, tfinal, last, med, med_id, maxw};
}

// Returns v_means2d [M,2], v_conics [M,3], v_colors [M,Dc], v_opacities [M], v_depths [M] (zeros unless
// depth_channel), v_means2d_abs [M,2] (empty unless absgrad).
std::vector<torch::Tensor> rasterize_bwd(torch::Tensor means2d, torch::Tensor conics, torch::Tensor colors,
                                         torch::Tensor opacities, torch::Tensor depths, torch::Tensor radii,
                                         c10::optional<torch::Tensor> backgrounds, bool depth_channel, bool absgrad,
                                         torch::Tensor tile_offsets, torch::Tensor flatten_ids,
                                         torch::Tensor tfinal, torch::Tensor last_ids, torch::Tensor v_render,
                                         torch::Tensor v_alphas, int64_t n_images, int64_t width, int64_t height,
                                         int64_t tile_size) {
    for (auto *t : {&means2d, &conics, &colors, &opacities, &depths, &radii, &tile_offsets, &flatten_ids, &tfinal,
                    &last_ids, &v_render, &v_alphas})
        check_cpu(*t, "input");
    const int64_t M = means2d.size(0);
    const int64_t Dc = colors.size(1);
    auto opts = means2d.options();
    auto v_xy = torch::empty({M, 2}, opts);
    auto v_con = torch::empty({M, 3}, opts);
    auto v_col = torch::empty({M, Dc}, opts);
    auto v_opa = torch::empty({M}, opts);
    auto v_dep = depth_channel ? torch::empty({M}, opts) : torch::zeros({M}, opts);
    auto v_abs = absgrad ? torch::empty({M, 2}, opts) : torch::empty({0}, opts);
    torch::Tensor bg;
    if (backgrounds.has_value() && backgrounds->defined()) bg = backgrounds->contiguous();
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_bwd", [&] {
        using T = scalar_t;
        const T *bgp = bg.defined() ? bg.data_ptr<T>() : nullptr;
        auto run = [&](auto cd) {
            bwd_impl<T, decltype(cd)::value>(
                means2d.data_ptr<T>(), conics.data_ptr<T>(), colors.data_ptr<T>(), opacities.data_ptr<T>(),
                depths.data_ptr<T>(), radii.data_ptr<int32_t>(), bgp, Dc, depth_channel, absgrad,
                tile_offsets.data_ptr<int64_t>(), flatten_ids.data_ptr<int32_t>(), n_images, M, width, height,
                tile_size, tfinal.data_ptr<T>(), last_ids.data_ptr<int32_t>(), v_render.data_ptr<T>(),
                v_alphas.data_ptr<T>(), v_xy.data_ptr<T>(), v_con.data_ptr<T>(), v_col.data_ptr<T>(),
                v_opa.data_ptr<T>(), v_dep.data_ptr<T>(), absgrad ? v_abs.data_ptr<T>() : nullptr);
        };
        switch (Dc) {
            case 0: run(std::integral_constant<int, 0>{}); break;
            case 1: run(std::integral_constant<int, 1>{}); break;
            case 3: run(std::integral_constant<int, 3>{}); break;
            default: run(std::integral_constant<int, -1>{}); break;
        }
    });
    return {v_xy, v_con, v_col, v_opa, v_dep, v_abs};
}

// project_cpu.cpp
std::vector<torch::Tensor> project_fwd(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                       torch::Tensor opacities, torch::Tensor viewmats, torch::Tensor Ks,
                                       int64_t width, int64_t height, double eps2d, double near_plane,
                                       double far_plane, double radius_clip, bool antialiased);
std::vector<torch::Tensor> project_bwd(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                       torch::Tensor opacities, torch::Tensor viewmats, torch::Tensor Ks,
                                       int64_t width, int64_t height, double eps2d, bool antialiased,
                                       torch::Tensor radii, torch::Tensor v_means2d, torch::Tensor v_depths,
                                       torch::Tensor v_conics, torch::Tensor v_opac);

// hashgrid_cpu.cpp
torch::Tensor hashgrid_fwd(torch::Tensor x, torch::Tensor table, torch::Tensor res, torch::Tensor mult,
                           torch::Tensor offsets, torch::Tensor hashed, int64_t mask);
std::vector<torch::Tensor> hashgrid_bwd(torch::Tensor x, torch::Tensor table, torch::Tensor grad, torch::Tensor res,
                                        torch::Tensor mult, torch::Tensor offsets, torch::Tensor hashed, int64_t mask,
                                        bool need_table, bool need_x);

// raytrace_cpu.cpp
std::vector<torch::Tensor> raytrace_build(torch::Tensor prim_boxes, int64_t leaf_size);
std::vector<torch::Tensor> raytrace_trace(torch::Tensor prims, torch::Tensor boxes, torch::Tensor links, torch::Tensor order,
                                          torch::Tensor origins, torch::Tensor dirs, double alpha_min, double t_min,
                                          double cutoff, double hit_alpha, bool use_normals);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("project_fwd", &project_fwd, "Fused EWA projection forward (CPU, OpenMP)");
    m.def("project_bwd", &project_bwd, "Fused EWA projection backward (CPU, OpenMP)");
    m.def("bin_gaussians", &bin_gaussians, "Depth-sorted per-tile Gaussian lists (CPU)");
    m.def("rasterize_fwd", &rasterize_fwd, "Tile rasterization forward (CPU, OpenMP)");
    m.def("rasterize_bwd", &rasterize_bwd, "Tile rasterization backward (CPU, OpenMP)");
    m.def("hashgrid_fwd", &hashgrid_fwd, "Multi-resolution hash-grid encoding forward (CPU, OpenMP)");
    m.def("hashgrid_bwd", &hashgrid_bwd, "Hash-grid encoding backward: table and input gradients (CPU, OpenMP)");
    m.def("raytrace_build", &raytrace_build, "Linear BVH over 3-sigma boxes of Gaussians (CPU)");
    m.def("raytrace_trace", &raytrace_trace, "Transmittance of rays through Gaussians over a BVH (CPU, OpenMP)");
    m.def("num_threads", &n_threads, "Threads the kernels use (torch.get_num_threads())");
}
