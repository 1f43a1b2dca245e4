// Fused EWA projection of 3D Gaussians on the CPU (forward + hand-written backward), OpenMP over Gaussians.
//
// Same maths as gsplat 1.5.3's fully_fused_projection (pinhole, unpacked) and as the torch twin
// `recon.render.gaussians.project_gaussians`:
//   p = R mu + t;  means2d = (fx x/z + cx, fy y/z + cy);  J uses x/z, y/z clamped to 1.3x the half field of view
//   cov2d = (J R M)(J R M)^T + eps2d I with M = R_q diag(s);  conic = cov2d^-1 (upper triangle a, b, c)
//   compensation = sqrt(det(cov2d - eps2d I) / det(cov2d)) (antialiased), opacity *= compensation
//   radius = ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(diag cov2d)) per axis; culled -> radius 0
// The backward returns gradients for means, quats, scales and opacities (not for the cameras: when viewmats
// need gradients the caller uses the torch projection). One thread owns one Gaussian across all cameras, so the
// per-Gaussian gradients are accumulated without races.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

int n_threads();  // raster_cpu.cpp ($RECON_CPU_THREADS or torch.get_num_threads())

namespace {

constexpr double kAlphaMinP = 1.0 / 255.0;

struct Cam {
    double R[9], t[3], fx, fy, cx, cy, lxn, lxp, lyn, lyp;
};

inline Cam load_cam(const double *vm, const double *K, int64_t W, int64_t H) {
    Cam c;
    for (int r = 0; r < 3; ++r) {
        for (int k = 0; k < 3; ++k) c.R[3 * r + k] = vm[4 * r + k];
        c.t[r] = vm[4 * r + 3];
    }
    c.fx = K[0];
    c.fy = K[4];
    c.cx = K[2];
    c.cy = K[5];
    const double tx = 0.5 * W / c.fx, ty = 0.5 * H / c.fy;
    c.lxp = (W - c.cx) / c.fx + 0.3 * tx;
    c.lxn = c.cx / c.fx + 0.3 * tx;
    c.lyp = (H - c.cy) / c.fy + 0.3 * ty;
    c.lyn = c.cy / c.fy + 0.3 * ty;
    return c;
}

// Rotation matrix (row-major) of a normalised wxyz quaternion.
template <typename T>
inline void quat_to_rot(const T q[4], T R[9]) {
    const T w = q[0], x = q[1], y = q[2], z = q[3];
    R[0] = 1 - 2 * (y * y + z * z), R[1] = 2 * (x * y - w * z), R[2] = 2 * (x * z + w * y);
    R[3] = 2 * (x * y + w * z), R[4] = 1 - 2 * (x * x + z * z), R[5] = 2 * (y * z - w * x);
    R[6] = 2 * (x * z - w * y), R[7] = 2 * (y * z + w * x), R[8] = 1 - 2 * (x * x + y * y);
}

// Everything the forward computes for one (camera, Gaussian), kept so the backward can reuse it.
template <typename T>
struct Proj {
    T p[3], rz, u, v, uc, vc, A0[3], A1[3], B0[3], B1[3], a, b, c, det, det_orig, comp;
    bool ucl, vcl;  // u / v inside the clamp range (gradient passes)
};

template <typename T>
inline void project_one(const Cam &cam, const T mu[3], const T M[9], T eps2d, Proj<T> &P) {
    for (int r = 0; r < 3; ++r)
        P.p[r] = (T)cam.R[3 * r] * mu[0] + (T)cam.R[3 * r + 1] * mu[1] + (T)cam.R[3 * r + 2] * mu[2] + (T)cam.t[r];
    const T z = P.p[2];
    P.rz = T(1) / z;
    P.u = P.p[0] * P.rz;
    P.v = P.p[1] * P.rz;
    P.uc = std::min((T)cam.lxp, std::max(-(T)cam.lxn, P.u));
    P.vc = std::min((T)cam.lyp, std::max(-(T)cam.lyn, P.v));
    P.ucl = P.u >= -(T)cam.lxn && P.u <= (T)cam.lxp;
    P.vcl = P.v >= -(T)cam.lyn && P.v <= (T)cam.lyp;
    const T fr = (T)cam.fx * P.rz, gr = (T)cam.fy * P.rz;
    for (int k = 0; k < 3; ++k) {
        P.A0[k] = fr * ((T)cam.R[k] - P.uc * (T)cam.R[6 + k]);
        P.A1[k] = gr * ((T)cam.R[3 + k] - P.vc * (T)cam.R[6 + k]);
    }
    for (int j = 0; j < 3; ++j) {
        P.B0[j] = P.A0[0] * M[j] + P.A0[1] * M[3 + j] + P.A0[2] * M[6 + j];
        P.B1[j] = P.A1[0] * M[j] + P.A1[1] * M[3 + j] + P.A1[2] * M[6 + j];
    }
    const T a0 = P.B0[0] * P.B0[0] + P.B0[1] * P.B0[1] + P.B0[2] * P.B0[2];
    const T c0 = P.B1[0] * P.B1[0] + P.B1[1] * P.B1[1] + P.B1[2] * P.B1[2];
    P.b = P.B0[0] * P.B1[0] + P.B0[1] * P.B1[1] + P.B0[2] * P.B1[2];
    P.det_orig = a0 * c0 - P.b * P.b;
    P.a = a0 + eps2d;
    P.c = c0 + eps2d;
    P.det = P.a * P.c - P.b * P.b;
    P.comp = P.det > 0 ? std::sqrt(std::max(T(0), P.det_orig / P.det)) : T(0);
}

template <typename T>
inline void gaussian_setup(const T *quat, const T *scale, T qn[4], T &qnorm, T Rq[9], T M[9]) {
    qnorm = std::sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
    const T inv = T(1) / std::max(qnorm, T(1e-12));  // as F.normalize
    for (int k = 0; k < 4; ++k) qn[k] = quat[k] * inv;
    quat_to_rot(qn, Rq);
    for (int r = 0; r < 3; ++r)
        for (int j = 0; j < 3; ++j) M[3 * r + j] = Rq[3 * r + j] * scale[j];
}

template <typename T>
void fwd(const T *means, const T *quats, const T *scales, const T *opac, const double *vms, const double *Ks,
         int64_t C, int64_t N, int64_t W, int64_t H, double eps2d, double near, double far, double radius_clip,
         bool antialiased, int32_t *radii, T *means2d, T *depths, T *conics, T *opac_out) {
    std::vector<Cam> cams(C);
    for (int64_t c = 0; c < C; ++c) cams[c] = load_cam(vms + 16 * c, Ks + 9 * c, W, H);
#pragma omp parallel for schedule(static) num_threads(n_threads())
    for (int64_t n = 0; n < N; ++n) {
        T qn[4], qnorm, Rq[9], M[9];
        gaussian_setup(quats + 4 * n, scales + 3 * n, qn, qnorm, Rq, M);
        for (int64_t c = 0; c < C; ++c) {
            const int64_t e = c * N + n;
            Proj<T> P;
            project_one(cams[c], means + 3 * n, M, (T)eps2d, P);
            const T z = P.p[2];
            const T o = opac[n] * (antialiased ? P.comp : T(1));
            bool valid = z >= (T)near && z <= (T)far && P.det > 0 && o >= (T)kAlphaMinP;
            T rx = 0, ry = 0;
            const T mx = (T)cams[c].fx * P.u + (T)cams[c].cx, my = (T)cams[c].fy * P.v + (T)cams[c].cy;
            if (valid) {
                // opacity-aware extent (gsplat 1.5.3): beyond it alpha < 1/255
                const T ext = std::min(T(3.33), std::sqrt(T(2) * std::log(std::max(T(1), o / (T)kAlphaMinP))));
                rx = std::ceil(ext * std::sqrt(P.a));
                ry = std::ceil(ext * std::sqrt(P.c));
                valid = !(rx <= (T)radius_clip && ry <= (T)radius_clip) && mx + rx > 0 && mx - rx < (T)W &&
                        my + ry > 0 && my - ry < (T)H;
            }
            if (!valid) {
                radii[2 * e] = radii[2 * e + 1] = 0;
                means2d[2 * e] = means2d[2 * e + 1] = 0;
                depths[e] = 0;
                conics[3 * e] = conics[3 * e + 1] = conics[3 * e + 2] = 0;
                opac_out[e] = 0;
                continue;
            }
            radii[2 * e] = (int32_t)rx;
            radii[2 * e + 1] = (int32_t)ry;
            means2d[2 * e] = mx;
            means2d[2 * e + 1] = my;
            depths[e] = z;
            const T id = T(1) / P.det;
            conics[3 * e] = P.c * id;
            conics[3 * e + 1] = -P.b * id;
            conics[3 * e + 2] = P.a * id;
            opac_out[e] = o;
        }
    }
}

template <typename T>
void bwd(const T *means, const T *quats, const T *scales, const T *opac, const double *vms, const double *Ks,
         int64_t C, int64_t N, int64_t W, int64_t H, double eps2d, bool antialiased, const int32_t *radii,
         const T *v_means2d, const T *v_depths, const T *v_conics, const T *v_opac, T *v_means, T *v_quats,
         T *v_scales, T *v_opacities) {
    std::vector<Cam> cams(C);
    for (int64_t c = 0; c < C; ++c) cams[c] = load_cam(vms + 16 * c, Ks + 9 * c, W, H);
#pragma omp parallel for schedule(static) num_threads(n_threads())
    for (int64_t n = 0; n < N; ++n) {
        T qn[4], qnorm, Rq[9], M[9];
        gaussian_setup(quats + 4 * n, scales + 3 * n, qn, qnorm, Rq, M);
        T g_mu[3] = {0, 0, 0}, g_M[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0}, g_o = 0;
        for (int64_t c = 0; c < C; ++c) {
            const int64_t e = c * N + n;
            if (radii[2 * e] <= 0 || radii[2 * e + 1] <= 0) continue;  // culled: no gradient
            const Cam &cam = cams[c];
            Proj<T> P;
            project_one(cam, means + 3 * n, M, (T)eps2d, P);
            // opacity (and compensation)
            T v_comp = 0;
            if (antialiased) {
                g_o += v_opac[e] * P.comp;
                v_comp = v_opac[e] * opac[n];
            } else {
                g_o += v_opac[e];
            }
            // conic = inverse of S = [[a, b], [b, c]]:  dL/dS = -S^-1 V S^-1, V = [[v0, v1/2], [v1/2, v2]]
            const T id = T(1) / P.det;
            const T i00 = P.c * id, i01 = -P.b * id, i11 = P.a * id;
            const T V00 = v_conics[3 * e], V01 = T(0.5) * v_conics[3 * e + 1], V11 = v_conics[3 * e + 2];
            const T t00 = i00 * V00 + i01 * V01, t01 = i00 * V01 + i01 * V11;  // (S^-1 V) row 0
            const T t10 = i01 * V00 + i11 * V01, t11 = i01 * V01 + i11 * V11;  // row 1
            T v_a = -(t00 * i00 + t01 * i01);
            T v_b = -2 * (t00 * i01 + t01 * i11);
            T v_c = -(t10 * i01 + t11 * i11);
            if (antialiased && P.comp > 0) {
                // comp = sqrt(r), r = det_orig / det, det_orig = (a - e)(c - e) - b^2
                const T v_r = v_comp / (T(2) * P.comp);
                const T e2 = (T)eps2d, id2 = id * id;
                v_a += v_r * ((P.c - e2) * P.det - P.det_orig * P.c) * id2;
                v_c += v_r * ((P.a - e2) * P.det - P.det_orig * P.a) * id2;
                v_b += v_r * (-T(2) * P.b * (P.det - P.det_orig)) * id2;
            }
            // a = |B0|^2 + eps, b = B0.B1, c = |B1|^2 + eps
            T vB0[3], vB1[3];
            for (int j = 0; j < 3; ++j) {
                vB0[j] = 2 * v_a * P.B0[j] + v_b * P.B1[j];
                vB1[j] = 2 * v_c * P.B1[j] + v_b * P.B0[j];
            }
            // B0 = A0^T M, B1 = A1^T M
            T vA0[3], vA1[3];
            for (int i = 0; i < 3; ++i) {
                vA0[i] = M[3 * i] * vB0[0] + M[3 * i + 1] * vB0[1] + M[3 * i + 2] * vB0[2];
                vA1[i] = M[3 * i] * vB1[0] + M[3 * i + 1] * vB1[1] + M[3 * i + 2] * vB1[2];
                for (int j = 0; j < 3; ++j) g_M[3 * i + j] += P.A0[i] * vB0[j] + P.A1[i] * vB1[j];
            }
            // A0 = fx rz (r0 - uc r2), A1 = fy rz (r1 - vc r2)
            const T fx = (T)cam.fx, fy = (T)cam.fy;
            T v_rz = 0, v_uc = 0, v_vc = 0;
            for (int k = 0; k < 3; ++k) {
                v_rz += fx * ((T)cam.R[k] - P.uc * (T)cam.R[6 + k]) * vA0[k];
                v_rz += fy * ((T)cam.R[3 + k] - P.vc * (T)cam.R[6 + k]) * vA1[k];
                v_uc -= fx * P.rz * (T)cam.R[6 + k] * vA0[k];
                v_vc -= fy * P.rz * (T)cam.R[6 + k] * vA1[k];
            }
            T v_u = fx * v_means2d[2 * e] + (P.ucl ? v_uc : T(0));
            T v_v = fy * v_means2d[2 * e + 1] + (P.vcl ? v_vc : T(0));
            // u = x rz, v = y rz, rz = 1 / z
            v_rz += v_u * P.p[0] + v_v * P.p[1];
            const T v_p[3] = {v_u * P.rz, v_v * P.rz, v_depths[e] - v_rz * P.rz * P.rz};
            for (int k = 0; k < 3; ++k)  // p = R mu + t
                g_mu[k] += (T)cam.R[k] * v_p[0] + (T)cam.R[3 + k] * v_p[1] + (T)cam.R[6 + k] * v_p[2];
        }
        // M = Rq diag(s)
        T G[9];
        for (int r = 0; r < 3; ++r) {
            for (int j = 0; j < 3; ++j) G[3 * r + j] = g_M[3 * r + j] * scales[3 * n + j];
        }
        for (int j = 0; j < 3; ++j) v_scales[3 * n + j] = Rq[j] * g_M[j] + Rq[3 + j] * g_M[3 + j] + Rq[6 + j] * g_M[6 + j];
        // rotation matrix of the normalised quaternion
        const T w = qn[0], x = qn[1], y = qn[2], z = qn[3];
        T vq[4];
        vq[0] = 2 * (-z * G[1] + y * G[2] + z * G[3] - x * G[5] - y * G[6] + x * G[7]);
        vq[1] = 2 * (y * G[1] + z * G[2] + y * G[3] - 2 * x * G[4] - w * G[5] + z * G[6] + w * G[7] - 2 * x * G[8]);
        vq[2] = 2 * (-2 * y * G[0] + x * G[1] + w * G[2] + x * G[3] + z * G[5] - w * G[6] + z * G[7] - 2 * y * G[8]);
        vq[3] = 2 * (-2 * z * G[0] - w * G[1] + x * G[2] + w * G[3] - 2 * z * G[4] + y * G[5] + x * G[6] + y * G[7]);
        // normalisation q / |q|
        const T dot = vq[0] * w + vq[1] * x + vq[2] * y + vq[3] * z;
        const T inv = T(1) / std::max(qnorm, T(1e-12));
        for (int k = 0; k < 4; ++k) v_quats[4 * n + k] = (vq[k] - qn[k] * dot) * inv;
        for (int k = 0; k < 3; ++k) v_means[3 * n + k] = g_mu[k];
        v_opacities[n] = g_o;
    }
}

}  // namespace

// means [N,3], quats [N,4], scales [N,3], opacities [N], viewmats [C,4,4], Ks [C,3,3] ->
// radii [C,N,2] int32, means2d [C,N,2], depths [C,N], conics [C,N,3], opacities [C,N] (x compensation)
std::vector<torch::Tensor> project_fwd(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                       torch::Tensor opacities, torch::Tensor viewmats, torch::Tensor Ks,
                                       int64_t width, int64_t height, double eps2d, double near_plane,
                                       double far_plane, double radius_clip, bool antialiased) {
    const int64_t N = means.size(0), C = viewmats.size(0);
    auto opts = means.options();
    auto vm = viewmats.to(torch::kFloat64).contiguous(), K = Ks.to(torch::kFloat64).contiguous();
    auto radii = torch::empty({C, N, 2}, opts.dtype(torch::kInt32));
    auto means2d = torch::empty({C, N, 2}, opts), depths = torch::empty({C, N}, opts);
    auto conics = torch::empty({C, N, 3}, opts), opac = torch::empty({C, N}, opts);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_fwd", [&] {
        fwd<scalar_t>(means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
                      opacities.data_ptr<scalar_t>(), vm.data_ptr<double>(), K.data_ptr<double>(), C, N, width,
                      height, eps2d, near_plane, far_plane, radius_clip, antialiased, radii.data_ptr<int32_t>(),
                      means2d.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                      opac.data_ptr<scalar_t>());
    });
    return {radii, means2d, depths, conics, opac};
}

// Returns v_means [N,3], v_quats [N,4], v_scales [N,3], v_opacities [N].
std::vector<torch::Tensor> project_bwd(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                       torch::Tensor opacities, torch::Tensor viewmats, torch::Tensor Ks,
                                       int64_t width, int64_t height, double eps2d, bool antialiased,
                                       torch::Tensor radii, torch::Tensor v_means2d, torch::Tensor v_depths,
                                       torch::Tensor v_conics, torch::Tensor v_opac) {
    const int64_t N = means.size(0), C = viewmats.size(0);
    auto vm = viewmats.to(torch::kFloat64).contiguous(), K = Ks.to(torch::kFloat64).contiguous();
    auto v_means = torch::empty_like(means), v_quats = torch::empty_like(quats);
    auto v_scales = torch::empty_like(scales), v_o = torch::empty_like(opacities);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_bwd", [&] {
        bwd<scalar_t>(means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
                      opacities.data_ptr<scalar_t>(), vm.data_ptr<double>(), K.data_ptr<double>(), C, N, width,
                      height, eps2d, antialiased, radii.data_ptr<int32_t>(), v_means2d.data_ptr<scalar_t>(),
                      v_depths.data_ptr<scalar_t>(), v_conics.data_ptr<scalar_t>(), v_opac.data_ptr<scalar_t>(),
                      v_means.data_ptr<scalar_t>(), v_quats.data_ptr<scalar_t>(), v_scales.data_ptr<scalar_t>(),
                      v_o.data_ptr<scalar_t>());
    });
    return {v_means, v_quats, v_scales, v_o};
}
