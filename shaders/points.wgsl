// Point sprites: one instanced screen-space quad per point, a constant radius in pixels,
// round (fragments outside the unit disc are discarded), depth-tested, per-point colour.
// Used by src/render/points.rs; the instance layout there must match `VsIn`.

struct Frame {
    clip_from_world: mat4x4<f32>,
    // x, y: viewport size in physical pixels; z: point radius in physical pixels;
    // w: > 0 selects world-unit sizes: the radius in world units times the projection's y scale
    viewport_radius: vec4<f32>,
};

@group(0) @binding(0) var<uniform> frame: Frame;

struct VsIn {
    @builtin(vertex_index) vertex: u32,
    @location(0) position: vec3<f32>,
    @location(1) color: vec4<f32>,
};

struct VsOut {
    @builtin(position) clip: vec4<f32>,
    @location(0) corner: vec2<f32>,
    @location(1) color: vec4<f32>,
};

@vertex
fn vs_main(in: VsIn) -> VsOut {
    // two triangles: (-1,-1) (1,-1) (1,1) / (-1,-1) (1,1) (-1,1)
    var corners = array<vec2<f32>, 6>(
        vec2<f32>(-1.0, -1.0), vec2<f32>(1.0, -1.0), vec2<f32>(1.0, 1.0),
        vec2<f32>(-1.0, -1.0), vec2<f32>(1.0, 1.0), vec2<f32>(-1.0, 1.0),
    );
    let corner = corners[in.vertex];
    var clip = frame.clip_from_world * vec4<f32>(in.position, 1.0);
    var radius_clip: vec2<f32>;
    if (frame.viewport_radius.w > 0.0) {
        // a sphere of fixed world size: its clip-space offset does not shrink with depth,
        // so the division by w shrinks it on screen like the geometry around it
        let s = frame.viewport_radius.w;
        radius_clip = vec2<f32>(s * frame.viewport_radius.y / frame.viewport_radius.x, s);
    } else {
        radius_clip = 2.0 * frame.viewport_radius.z / frame.viewport_radius.xy * clip.w;
    }
    clip = vec4<f32>(clip.xy + corner * radius_clip, clip.zw);
    var out: VsOut;
    out.clip = clip;
    out.corner = corner;
    out.color = in.color;
    return out;
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let r2 = dot(in.corner, in.corner);
    if (r2 > 1.0) {
        discard;
    }
    // a thin darker rim keeps overlapping points apart
    let rim = select(1.0, 0.78, r2 > 0.72);
    return vec4<f32>(in.color.rgb * rim, 1.0);
}

// ---- blit: copy the offscreen colour target into egui's render pass (fullscreen triangle)

@group(0) @binding(0) var blit_tex: texture_2d<f32>;

struct BlitOut {
    @builtin(position) clip: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_blit(@builtin(vertex_index) vertex: u32) -> BlitOut {
    let uv = vec2<f32>(f32((vertex << 1u) & 2u), f32(vertex & 2u));
    var out: BlitOut;
    out.clip = vec4<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0, 0.0, 1.0);
    out.uv = uv;
    return out;
}

fn blit_load(uv: vec2<f32>) -> vec4<f32> {
    let size = vec2<f32>(textureDimensions(blit_tex));
    let texel = vec2<i32>(clamp(uv * size, vec2<f32>(0.0), size - vec2<f32>(1.0)));
    return textureLoad(blit_tex, texel, 0);
}

@fragment
fn fs_blit(in: BlitOut) -> @location(0) vec4<f32> {
    return blit_load(in.uv);
}

// The offscreen image holds sRGB-encoded values; an sRGB host target would encode them again,
// so decode first.
@fragment
fn fs_blit_to_srgb(in: BlitOut) -> @location(0) vec4<f32> {
    let c = blit_load(in.uv);
    let lo = c.rgb / 12.92;
    let hi = pow((c.rgb + vec3<f32>(0.055)) / 1.055, vec3<f32>(2.4));
    return vec4<f32>(select(hi, lo, c.rgb <= vec3<f32>(0.04045)), c.a);
}
