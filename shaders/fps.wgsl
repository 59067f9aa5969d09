// Farthest point sampling with the semantics of the pointnet2_ops CUDA kernel, bit-identical to
// `crate::gpu::cpu::fps` (dapt-spec.md §2.4). One workgroup per cloud: every thread walks a
// strided slice of the points, keeps its own arg-max, and the workgroup reduces those in shared
// memory comparing (distance, index) so ties go to the lowest index whatever the thread layout.

const WG: u32 = 256u;
// |p|² at or below this never gets updated nor selected (the CUDA kernel's quirk).
const ORIGIN_EPS: f32 = 1e-3;

struct Params {
    n: u32,       // points per cloud
    m: u32,       // samples per cloud
    zero: u32,    // always 0; see `exact`
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> points: array<f32>;        // [clouds][n][3]
@group(0) @binding(1) var<storage, read_write> temp: array<f32>;    // [clouds][n] running min
@group(0) @binding(2) var<storage, read_write> out: array<u32>;     // [clouds][m]
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> red_d: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;

// Returns x unchanged, but through an operation the compiler cannot see through (`zero` is a
// runtime value). This stops it fusing `a*b + c` into an FMA, which rounds once instead of
// twice and would make distances differ from the CPU's in the last bit, changing arg-max
// picks. SPIR-V has NoContraction for this, but naga does not emit it.
fn exact(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) ^ params.zero);
}

// Same operation order as the CPU: dx*dx + dy*dy + dz*dz, left to right.
fn sq3(x: f32, y: f32, z: f32) -> f32 {
    return exact(exact(x * x) + exact(y * y)) + exact(z * z);
}

fn point(i: u32) -> vec3<f32> {
    return vec3<f32>(points[3u * i], points[3u * i + 1u], points[3u * i + 2u]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let n = params.n;
    let m = params.m;
    let base = wid.x * n;
    let obase = wid.x * m;

    for (var k = t; k < n; k += WG) {
        temp[base + k] = 1e10;
    }
    if (t == 0u) {
        out[obase] = 0u;
    }
    var old = 0u;
    for (var j = 1u; j < m; j++) {
        let po = point(base + old);
        var best = -1.0;
        var besti = 0u;
        for (var k = t; k < n; k += WG) {
            let p = point(base + k);
            if (sq3(p.x, p.y, p.z) <= ORIGIN_EPS) {
                continue;
            }
            let d = sq3(p.x - po.x, p.y - po.y, p.z - po.z);
            let d2 = min(d, temp[base + k]);
            temp[base + k] = d2;
            // strict: within a thread k ascends, so the first (lowest) index keeps a tie
            if (d2 > best) {
                best = d2;
                besti = k;
            }
        }
        red_d[t] = best;
        red_i[t] = besti;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (t < s) {
                let od = red_d[t + s];
                let oi = red_i[t + s];
                let cd = red_d[t];
                let ci = red_i[t];
                if (od > cd || (od == cd && oi < ci)) {
                    red_d[t] = od;
                    red_i[t] = oi;
                }
            }
            workgroupBarrier();
        }
        // every thread needs the winner; a thread with no eligible point reports (-1, 0),
        // so with no eligible point at all the pick is index 0, as on the CPU
        old = red_i[0];
        if (t == 0u) {
            out[obase + j] = old;
        }
        // nobody may overwrite red_* for the next sample before all have read red_i[0]
        workgroupBarrier();
    }
}
