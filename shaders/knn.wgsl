// k nearest neighbours, bit-identical to `crate::gpu::cpu::knn`: for every query the k
// references with the smallest squared distance, ascending by (distance, index). One
// invocation per query keeps a sorted list of its best k in private arrays; references are
// visited in ascending index order, so a newcomer that ties an entry ranks after it, which is
// exactly "ties to the lower index".

const WG: u32 = 64u;
const KMAX: u32 = 64u;

struct Params {
    n: u32,       // references per cloud
    g: u32,       // queries per cloud
    k: u32,       // neighbours per query, 1..=KMAX
    nq: u32,      // queries in this dispatch (clouds * g)
    zero: u32,    // always 0; see `exact`
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> refs: array<f32>;       // [clouds][n][3]
@group(0) @binding(1) var<storage, read> queries: array<f32>;    // [clouds][g][3]
@group(0) @binding(2) var<storage, read_write> out: array<u32>;  // [clouds][g][k]
@group(0) @binding(3) var<uniform> params: Params;

// Opaque identity that stops `a*b + c` being fused into an FMA (see fps.wgsl): the distances
// must round exactly like the CPU's dx*dx + dy*dy + dz*dz.
fn exact(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) ^ params.zero);
}

fn sq3(x: f32, y: f32, z: f32) -> f32 {
    return exact(exact(x * x) + exact(y * y)) + exact(z * z);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = gid.x;
    if (q >= params.nq) {
        return;
    }
    let n = params.n;
    let k = params.k;
    let base = (q / params.g) * n;
    let qx = queries[3u * q];
    let qy = queries[3u * q + 1u];
    let qz = queries[3u * q + 2u];

    var best_d: array<f32, KMAX>;
    var best_i: array<u32, KMAX>;
    var count = 0u;
    // best_d[k - 1] once the list is full, kept in a register: most references are rejected by
    // this one comparison, and indexing a private array dynamically is slow on GPUs
    var worst = 0.0;
    for (var i = 0u; i < n; i++) {
        let r = 3u * (base + i);
        let d = sq3(refs[r] - qx, refs[r + 1u] - qy, refs[r + 2u] - qz);
        var j: u32;
        if (count < k) {
            j = count;
            count += 1u;
        } else if (d < worst) {
            j = k - 1u; // the current worst is dropped
        } else {
            continue;
        }
        // shift strictly larger distances right; equal ones have lower indices and stay ahead
        while (j > 0u && best_d[j - 1u] > d) {
            best_d[j] = best_d[j - 1u];
            best_i[j] = best_i[j - 1u];
            j -= 1u;
        }
        best_d[j] = d;
        best_i[j] = i;
        if (count == k) {
            worst = best_d[k - 1u];
        }
    }
    let o = q * k;
    for (var j = 0u; j < k; j++) {
        out[o + j] = best_i[j];
    }
}
