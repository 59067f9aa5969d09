//! CPU reference implementations of the sampling kernels, with the exact semantics of the
//! official CUDA kernels (dapt-spec.md §2.4-2.5). The WGSL kernels are tested against these.

/// Squared norm at or below which a point is never selected by FPS (the pointnet2_ops quirk).
pub const FPS_ORIGIN_EPS: f32 = 1e-3;

/// Farthest point sampling of `m` indices out of `points`.
///
/// Starts at index 0; running minimum squared distance initialised to 1e10; points with
/// `|p|² <= 1e-3` are never updated nor selected; ties go to the lowest index. Once the
/// eligible points are exhausted the kernel keeps choosing an already selected point (the
/// lowest eligible index, distance 0), so the result can contain duplicates. With no eligible
/// point at all every pick is index 0. An empty input gives an empty result.
///
/// The scan runs over the coordinates as separate x, y and z arrays in lanes of [`LANES`]
/// points, each lane keeping its own running maximum, so the compiler vectorises it; the lanes
/// are then reduced to the lowest index of the largest distance, which is what one scan in
/// index order gives. Ineligible points hold a score of -1 that no distance lowers and no
/// pick takes. The arithmetic per point is the scalar one (no fused multiply-add), so the
/// picks are those of [`fps_scalar`], the one-point-at-a-time form kept for the tests.
pub fn fps(points: &[[f32; 3]], m: usize) -> Vec<usize> {
    let n = points.len();
    if n == 0 || m == 0 {
        return Vec::new();
    }
    let padded = n.div_ceil(LANES) * LANES;
    let (mut xs, mut ys, mut zs) = (vec![0f32; padded], vec![0f32; padded], vec![0f32; padded]);
    // padding and ineligible points: -1, below any distance, never lowered by `min`
    let mut temp = vec![-1f32; padded];
    for (k, p) in points.iter().enumerate() {
        xs[k] = p[0];
        ys[k] = p[1];
        zs[k] = p[2];
        if p[0] * p[0] + p[1] * p[1] + p[2] * p[2] > FPS_ORIGIN_EPS {
            temp[k] = 1e10;
        }
    }
    let mut out = Vec::with_capacity(m);
    let mut old = 0usize;
    out.push(old);
    for _ in 1..m {
        let [ox, oy, oz] = points[old];
        let mut best = [-1f32; LANES];
        let mut besti = [0u32; LANES];
        let lanes = temp
            .chunks_exact_mut(LANES)
            .zip(xs.chunks_exact(LANES))
            .zip(ys.chunks_exact(LANES).zip(zs.chunks_exact(LANES)));
        for (c, ((t, x), (y, z))) in lanes.enumerate() {
            let base = (c * LANES) as u32;
            for j in 0..LANES {
                let dx = x[j] - ox;
                let dy = y[j] - oy;
                let dz = z[j] - oz;
                let d = (dx * dx + dy * dy + dz * dz).min(t[j]);
                t[j] = d;
                let gt = d > best[j];
                best[j] = if gt { d } else { best[j] };
                besti[j] = if gt { base + j as u32 } else { besti[j] };
            }
        }
        // the largest score, lowest index among equals; index 0 when nothing is eligible
        let mut pick = (-1f32, 0usize);
        for j in 0..LANES {
            let (v, i) = (best[j], besti[j] as usize);
            if v > pick.0 || (v == pick.0 && v > -1.0 && i < pick.1) {
                pick = (v, i);
            }
        }
        old = pick.1;
        out.push(old);
    }
    out
}

/// Points per lane group of [`fps`]'s scan (two AVX or four SSE registers of f32).
const LANES: usize = 8;

/// [`fps`] one point at a time, in index order: the direct transcription of the official
/// kernel's rules, against which the lane form is tested.
pub fn fps_scalar(points: &[[f32; 3]], m: usize) -> Vec<usize> {
    let n = points.len();
    if n == 0 || m == 0 {
        return Vec::new();
    }
    let eligible: Vec<bool> = points
        .iter()
        .map(|p| p[0] * p[0] + p[1] * p[1] + p[2] * p[2] > FPS_ORIGIN_EPS)
        .collect();
    let mut temp = vec![1e10f32; n];
    let mut out = Vec::with_capacity(m);
    let mut old = 0usize;
    out.push(old);
    for _ in 1..m {
        let po = points[old];
        let mut best = -1.0f32;
        let mut besti = 0usize;
        for k in 0..n {
            if !eligible[k] {
                continue;
            }
            let p = points[k];
            let dx = p[0] - po[0];
            let dy = p[1] - po[1];
            let dz = p[2] - po[2];
            let d = dx * dx + dy * dy + dz * dz;
            let d2 = d.min(temp[k]);
            temp[k] = d2;
            if d2 > best {
                best = d2;
                besti = k;
            }
        }
        old = besti;
        out.push(old);
    }
    out
}

/// FPS over a batch stored as `[b][n][3]`, flattened; returns `[b][m]` indices flattened.
pub fn fps_batch(points: &[[f32; 3]], b: usize, n: usize, m: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(b * m);
    for i in 0..b {
        out.extend(fps(&points[i * n..(i + 1) * n], m));
    }
    out
}

/// The `k` nearest reference points of each query, ascending by distance (ties to the lower
/// index). The query itself is included when it is one of the references (distance 0).
/// If `k > refs.len()`, only `refs.len()` neighbours are returned per query.
pub fn knn(refs: &[[f32; 3]], queries: &[[f32; 3]], k: usize) -> Vec<Vec<usize>> {
    let k = k.min(refs.len());
    queries
        .iter()
        .map(|q| {
            let mut d: Vec<(f32, usize)> = refs
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let dx = p[0] - q[0];
                    let dy = p[1] - q[1];
                    let dz = p[2] - q[2];
                    (dx * dx + dy * dy + dz * dz, i)
                })
                .collect();
            // partial selection then sort of the k smallest: O(n + k log k)
            if k < d.len() {
                d.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                d.truncate(k);
            }
            d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            d.into_iter().map(|(_, i)| i).collect()
        })
        .collect()
}

/// [`knn`] over a batch: `refs` is `[b][n]`, `queries` `[b][g]`, both flattened; returns
/// `[b][g][min(k, n)]` indices (relative to each cloud) flattened. Clouds run on up to
/// `available_parallelism` threads, each cloud exactly as [`knn`] computes it.
pub fn knn_batch(
    refs: &[[f32; 3]],
    queries: &[[f32; 3]],
    b: usize,
    n: usize,
    g: usize,
    k: usize,
) -> Vec<usize> {
    assert_eq!(refs.len(), b * n, "refs must hold b*n points");
    assert_eq!(queries.len(), b * g, "queries must hold b*g points");
    let kk = k.min(n);
    let mut out = vec![0usize; b * g * kk];
    if out.is_empty() {
        return out;
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(b);
    // contiguous runs of whole clouds per thread, so each writes a disjoint slice of `out`
    let per = b.div_ceil(threads);
    std::thread::scope(|s| {
        for (t, dst) in out.chunks_mut(per * g * kk).enumerate() {
            s.spawn(move || {
                for (c, dst) in dst.chunks_mut(g * kk).enumerate() {
                    let cloud = t * per + c;
                    let r = &refs[cloud * n..(cloud + 1) * n];
                    let q = &queries[cloud * g..(cloud + 1) * g];
                    for (row, idx) in dst.chunks_mut(kk).zip(knn(r, q, k)) {
                        row.copy_from_slice(&idx);
                    }
                }
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_starts_at_zero_and_picks_the_farthest() {
        let pts = [
            [1.0, 0.0, 0.0],
            [1.1, 0.0, 0.0],
            [5.0, 0.0, 0.0],
            [3.0, 0.0, 0.0],
        ];
        assert_eq!(fps(&pts, 3), vec![0, 2, 3]);
    }

    #[test]
    fn fps_skips_points_near_the_origin_and_duplicates_when_exhausted() {
        let pts = [[1.0, 0.0, 0.0], [0.0, 0.0, 0.01], [2.0, 0.0, 0.0]];
        // index 1 is inside the skipped ball; after 0 and 2 only distance-0 points remain
        assert_eq!(fps(&pts, 4), vec![0, 2, 0, 0]);
    }

    /// The lane form picks exactly what the one-point-at-a-time scan picks: sizes off the
    /// lane width, ties on a grid, duplicates, points inside the skipped ball (index 0 among
    /// them), non-finite coordinates, more picks than eligible points, nothing eligible.
    #[test]
    fn lane_fps_equals_the_scalar_scan() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut unit = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let mut clouds: Vec<(Vec<[f32; 3]>, usize)> = Vec::new();
        for &n in &[1usize, 3, 7, 8, 9, 17, 64, 257, 1000] {
            let pts: Vec<[f32; 3]> = (0..n).map(|_| [unit(), unit(), unit()]).collect();
            clouds.push((pts, n.min(40) + 3));
        }
        let grid: Vec<[f32; 3]> = (0..125)
            .map(|i| [(i % 5) as f32, ((i / 5) % 5) as f32, (i / 25) as f32])
            .collect();
        clouds.push((grid, 60));
        let mut dup: Vec<[f32; 3]> = (0..30).map(|_| [unit(), unit(), unit()]).collect();
        dup.extend(dup.clone());
        clouds.push((dup, 70));
        let mut near: Vec<[f32; 3]> = (0..50)
            .map(|i| {
                let s = if i % 3 == 0 { 0.01 } else { 1.0 };
                [s * unit(), s * unit(), s * unit()]
            })
            .collect();
        near[0] = [0.0, 0.0, 0.0];
        clouds.push((near, 50));
        let mut odd: Vec<[f32; 3]> = (0..40).map(|_| [unit(), unit(), unit()]).collect();
        odd[5] = [f32::NAN, 0.5, 0.5];
        odd[11] = [f32::INFINITY, 0.0, 0.0];
        odd[0] = [f32::NAN, f32::NAN, f32::NAN];
        clouds.push((odd, 20));
        clouds.push((vec![[0.0, 0.0, 0.01]; 12], 5));
        for (i, (pts, m)) in clouds.iter().enumerate() {
            assert_eq!(
                fps(pts, *m),
                fps_scalar(pts, *m),
                "cloud {i} ({} points)",
                pts.len()
            );
        }
    }

    #[test]
    fn knn_includes_the_query_and_orders_by_distance() {
        let refs = [
            [0.0, 0.0, 0.0],
            [3.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
        ];
        let out = knn(&refs, &[[0.0, 0.0, 0.0]], 3);
        assert_eq!(out, vec![vec![0, 2, 3]]);
    }

    #[test]
    fn knn_batch_matches_knn_per_cloud() {
        let refs: Vec<[f32; 3]> = (0..30)
            .map(|i| [(i * 7 % 11) as f32, i as f32, 0.5])
            .collect();
        let queries: Vec<[f32; 3]> = (0..9).map(|i| [i as f32, 1.0, 0.0]).collect();
        let got = knn_batch(&refs, &queries, 3, 10, 3, 4);
        let mut want = Vec::new();
        for c in 0..3 {
            for row in knn(&refs[c * 10..(c + 1) * 10], &queries[c * 3..(c + 1) * 3], 4) {
                want.extend(row);
            }
        }
        assert_eq!(got, want);
    }
}
