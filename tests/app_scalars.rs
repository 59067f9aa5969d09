//! Headless UI test (egui_kittest on wgpu, lavapipe without a GPU) of colouring by a file's
//! scalar fields: the "Colour by" menu lists one entry per field, the points take the
//! colormap's colours of the field's values, and a colorbar names the field.

use dapt::app::{AppOptions, ColourBy, StudioApp, VIEW_BACKGROUND};
use dapt::data::PointCloud;
use dapt::data::cloud::ScalarField;
use dapt::render::Colormap;
use dapt::render::colormap;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use egui_kittest::wgpu::WgpuTestRenderer;

/// Tall enough that the "Colour by" popup, listing every mode and field, fits the window.
const SIZE: [f32; 2] = [1100.0, 1100.0];

/// Intensity of a sphere point: three bands across x (0, 5, 10), so the field has nothing
/// to do with the height colouring the app starts with (y is up).
fn band(x: f32) -> f32 {
    if x < -0.35 {
        0.0
    } else if x > 0.35 {
        10.0
    } else {
        5.0
    }
}

/// `n` points on a unit sphere (Fibonacci lattice) with two scalar fields.
fn sphere_with_fields(n: usize) -> PointCloud {
    let golden = std::f32::consts::PI * (3.0 - 5f32.sqrt());
    let positions: Vec<[f32; 3]> = (0..n)
        .map(|i| {
            let y = 1.0 - 2.0 * (i as f32 + 0.5) / n as f32;
            let r = (1.0 - y * y).sqrt();
            let t = golden * i as f32;
            [r * t.cos(), y, r * t.sin()]
        })
        .collect();
    let intensity = positions.iter().map(|p| band(p[0])).collect();
    let curvature = positions.iter().map(|p| p[2]).collect();
    PointCloud {
        positions,
        scalars: vec![
            ScalarField::new("Intensity", intensity),
            ScalarField::new("curvature", curvature),
        ],
        ..Default::default()
    }
}

fn harness(app: StudioApp) -> Harness<'static, StudioApp> {
    let rs = egui_kittest::wgpu::create_render_state(
        egui_kittest::wgpu::default_wgpu_setup(),
        egui_wgpu::RendererOptions::PREDICTABLE,
    );
    dapt::render::install(&rs);
    Harness::builder()
        .with_size(SIZE)
        .with_max_steps(40)
        .with_render_cursor(false)
        .renderer(WgpuTestRenderer::from_render_state(rs))
        .build_ui_state(|ui, app: &mut StudioApp| app.ui_root(ui), app)
}

/// Opens the "Colour by" menu and picks `entry` with the pointer, hovering it first as a
/// user's pointer does (a press on a popup item the pointer never moved over may be missed).
fn choose_colour_mode(h: &mut Harness<'_, StudioApp>, entry: &str) {
    h.get_by_role_and_label(Role::ComboBox, "Colour by").click();
    h.run_steps(2);
    h.get_by_label(entry).hover();
    h.run_steps(2);
    h.get_by_label(entry).click();
    h.run_steps(3);
}

/// Number and centroid of the pixels within `tol` of `color` (per channel).
fn pixels_near(img: &image::RgbaImage, color: [u8; 4], tol: i32) -> (usize, [f32; 2]) {
    let (mut n, mut sx, mut sy) = (0usize, 0f64, 0f64);
    for (x, y, p) in img.enumerate_pixels() {
        if (0..3).all(|k| (p.0[k] as i32 - color[k] as i32).abs() <= tol) {
            n += 1;
            sx += x as f64;
            sy += y as f64;
        }
    }
    let c = if n == 0 {
        [0.0, 0.0]
    } else {
        [(sx / n as f64) as f32, (sy / n as f64) as f32]
    };
    (n, c)
}

#[test]
fn colour_by_a_scalar_field_with_a_named_colorbar() {
    let bg = colormap::to_u8(VIEW_BACKGROUND);
    for t in [0.0, 0.5, 1.0] {
        let c = Colormap::Viridis.sample_u8(t);
        let d: i32 = (0..3).map(|k| (c[k] as i32 - bg[k] as i32).abs()).sum();
        assert!(d > 40, "viridis({t}) must stand out from the background");
    }
    let mut app = StudioApp::new(AppOptions::default());
    app.add_cloud("fields.ply".into(), sphere_with_fields(6000));
    let mut h = harness(app);
    h.state_mut().settings.point_radius = 3.0;
    h.run_steps(3);
    assert_eq!(h.state().settings.colours.colour_by, ColourBy::Height);
    let ends = |img: &image::RgbaImage| {
        (
            pixels_near(img, Colormap::Viridis.sample_u8(0.0), 6),
            pixels_near(img, Colormap::Viridis.sample_u8(1.0), 6),
        )
    };
    // height colouring: the colormap's ends lie at the bottom and the top of the sphere
    let img = h.render().expect("render");
    let ((_, lo_h), (_, hi_h)) = ends(&img);
    assert!(
        (lo_h[1] - hi_h[1]).abs() > (lo_h[0] - hi_h[0]).abs(),
        "height: ends apart vertically {lo_h:?} {hi_h:?}"
    );

    // the menu lists each field of the cloud; choose one as a user would
    h.get_by_role_and_label(Role::ComboBox, "Colour by").click();
    h.run_steps(2);
    assert!(h.query_by_label("Scalar: curvature").is_some());
    assert!(h.query_by_label("Scalar: Intensity").is_some());
    h.get_by_role_and_label(Role::ComboBox, "Colour by").click();
    h.run_steps(2);
    assert!(
        h.query_by_label("Scalar: curvature").is_none(),
        "menu closed"
    );
    choose_colour_mode(&mut h, "Scalar: Intensity");
    assert!(
        h.query_by_label("Scalar: curvature").is_none(),
        "menu closed"
    );
    let colours = &h.state().settings.colours;
    assert_eq!(colours.colour_by, ColourBy::Scalar);
    assert_eq!(colours.scalar_field.as_deref(), Some("Intensity"));
    let combo = h.get_by_role_and_label(Role::ComboBox, "Colour by");
    assert_eq!(
        combo.value().as_deref(),
        Some("Scalar: Intensity"),
        "the menu says which field is shown"
    );
    // the colorbar is titled with the field's name and says how its range was chosen
    assert!(h.query_by_label("Intensity").is_some(), "colorbar title");
    assert!(h.query_by_label("range: robust (2-98 %)").is_some());

    // the points follow the field: the low band (x < -0.35) takes the colormap's first
    // colour, the high band its last, the middle band the middle colour; and the ends now
    // lie side by side (across x), not one above the other
    let img = h.render().expect("render");
    let ((n_lo, lo), (n_hi, hi)) = ends(&img);
    let (n_mid, _) = pixels_near(&img, Colormap::Viridis.sample_u8(0.5), 6);
    assert!(
        n_lo > 500 && n_hi > 500 && n_mid > 500,
        "{n_lo} {n_mid} {n_hi}"
    );
    assert!(
        (lo[0] - hi[0]).abs() > 2.0 * (lo[1] - hi[1]).abs(),
        "scalar: ends apart horizontally {lo:?} {hi:?}"
    );

    // the hover read-out gives the point's value of the shown field
    let cloud = h.state().current_cloud().expect("a cloud").cloud.clone();
    let i = cloud
        .positions
        .iter()
        .position(|p| p[0] > 0.5)
        .expect("a point in the high band");
    let lines = h.state().describe_point(i).join("\n");
    assert!(lines.contains("Intensity: 10.0000"), "{lines}");
    // and the fields not shown, once each
    let z = cloud.positions[i][2];
    assert!(lines.contains(&format!("curvature: {z:.4}")), "{lines}");
    assert_eq!(lines.matches("Intensity:").count(), 1, "{lines}");

    // another field through the same menu: the colorbar follows
    choose_colour_mode(&mut h, "Scalar: curvature");
    assert_eq!(
        h.state().settings.colours.scalar_field.as_deref(),
        Some("curvature")
    );
    assert!(h.query_by_label("curvature").is_some());
    assert!(h.query_by_label("Intensity").is_none());
}
