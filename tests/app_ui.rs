//! Headless UI tests of the desktop app with egui_kittest on wgpu (lavapipe without a GPU):
//! widgets by label, the keymap-driven help, the run panel, and pixels of the 3D view
//! rendered by the custom paint callback.
//!
//! Set `DAPT_UPDATE_SCREENSHOTS=1` to also write the README screenshots to
//! `assets/screenshots/`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dapt::app::{
    Analyzer, AppOptions, CloudAnalysis, ColourBy, KEYMAP, RunSettings, SideTab, StudioApp,
    TrainingHandle, TrainingLauncher, VIEW_BACKGROUND,
};
use dapt::data::PointCloud;
use dapt::render::colormap;
use dapt::train::{EpochMetrics, ScaleSnapshot, TrainEvent};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use egui_kittest::wgpu::WgpuTestRenderer;

const SIZE: [f32; 2] = [1100.0, 700.0];

/// `n` points on a unit sphere (Fibonacci lattice), part label = quadrant in the xz plane.
fn sphere(n: usize) -> PointCloud {
    let golden = std::f32::consts::PI * (3.0 - 5f32.sqrt());
    let positions: Vec<[f32; 3]> = (0..n)
        .map(|i| {
            let y = 1.0 - 2.0 * (i as f32 + 0.5) / n as f32;
            let r = (1.0 - y * y).sqrt();
            let t = golden * i as f32;
            [r * t.cos(), y, r * t.sin()]
        })
        .collect();
    let labels = positions
        .iter()
        .map(|p| (p[0] >= 0.0) as i64 + 2 * (p[2] >= 0.0) as i64)
        .collect();
    PointCloud {
        positions,
        labels: Some(labels),
        class_label: Some(0),
        ..Default::default()
    }
}

/// `n` points on a tube around a trefoil knot; part label = which quarter of the curve.
fn trefoil(n: usize) -> PointCloud {
    let tau = std::f32::consts::TAU;
    let curve = |t: f32| {
        [
            (t.sin() + 2.0 * (2.0 * t).sin()) / 3.0,
            (t.cos() - 2.0 * (2.0 * t).cos()) / 3.0,
            -(3.0 * t).sin() / 3.0,
        ]
    };
    let mut positions = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    let rings = 200;
    let per_ring = n.div_ceil(rings);
    for i in 0..n {
        let ring = i / per_ring;
        let t = tau * ring as f32 / rings as f32;
        let a = tau * (i % per_ring) as f32 / per_ring as f32 + ring as f32 * 0.37;
        let c = curve(t);
        let c2 = curve(t + 1e-3);
        let tangent: Vec<f32> = (0..3).map(|k| c2[k] - c[k]).collect();
        let len = tangent.iter().map(|v| v * v).sum::<f32>().sqrt();
        let tn = [tangent[0] / len, tangent[1] / len, tangent[2] / len];
        // a frame around the tangent: u = normalize(tn x z), v = tn x u
        let z = [0.0, 0.0, 1.0];
        let u = [
            tn[1] * z[2] - tn[2] * z[1],
            tn[2] * z[0] - tn[0] * z[2],
            tn[0] * z[1] - tn[1] * z[0],
        ];
        let ul = u.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
        let u = [u[0] / ul, u[1] / ul, u[2] / ul];
        let v = [
            tn[1] * u[2] - tn[2] * u[1],
            tn[2] * u[0] - tn[0] * u[2],
            tn[0] * u[1] - tn[1] * u[0],
        ];
        let r = 0.12;
        positions.push([
            c[0] + r * (a.cos() * u[0] + a.sin() * v[0]),
            c[1] + r * (a.cos() * u[1] + a.sin() * v[1]),
            c[2] + r * (a.cos() * u[2] + a.sin() * v[2]),
        ]);
        labels.push((4 * ring / rings) as i64);
    }
    PointCloud {
        positions,
        labels: Some(labels),
        class_label: Some(0),
        ..Default::default()
    }
}

/// TEST DOUBLE, not a model: derives "predictions" and "scales" from geometry only, so the
/// UI has deterministic numbers to show.
struct GeometryAnalyzer;

impl Analyzer for GeometryAnalyzer {
    fn name(&self) -> String {
        "geometry test double".into()
    }

    fn analyze(&self, cloud: &PointCloud) -> Result<CloudAnalysis, String> {
        let n = cloud.len();
        // like Point-MAE: patches overlap and cover the cloud about twice
        let groups_n = 64.min(n);
        let k = (2 * n / groups_n).min(n);
        let centers: Vec<[f32; 3]> = (0..groups_n)
            .map(|g| cloud.positions[g * n / groups_n])
            .collect();
        let groups: Vec<Vec<usize>> = centers
            .iter()
            .map(|c| {
                let mut idx: Vec<usize> = (0..n).collect();
                let d = |i: usize| {
                    (0..3)
                        .map(|a| (cloud.positions[i][a] - c[a]).powi(2))
                        .sum::<f32>()
                };
                idx.sort_by(|&a, &b| d(a).total_cmp(&d(b)));
                idx.truncate(k);
                idx
            })
            .collect();
        let blocks = 4;
        let patch_scales = (0..blocks)
            .map(|b| {
                centers
                    .iter()
                    .map(|c| (c[1] + 1.0) * (b + 1) as f32)
                    .collect()
            })
            .collect();
        Ok(CloudAnalysis {
            class_names: vec!["airplane".into(), "chair".into(), "lamp".into()],
            probabilities: vec![0.72, 0.2, 0.08],
            centers,
            groups,
            patch_scales,
            prompt_scales: (0..blocks).map(|b| vec![0.5; b + 1]).collect(),
            cls_scales: (0..blocks).map(|b| 0.1 * b as f32).collect(),
            part_pred: None,
        })
    }
}

fn harness(app: StudioApp) -> Harness<'static, StudioApp> {
    harness_with_state(app).0
}

/// The harness and its render state (to look at the point renderer's counters).
fn harness_with_state(app: StudioApp) -> (Harness<'static, StudioApp>, egui_wgpu::RenderState) {
    let rs = egui_kittest::wgpu::create_render_state(
        egui_kittest::wgpu::default_wgpu_setup(),
        egui_wgpu::RendererOptions::PREDICTABLE,
    );
    dapt::render::install(&rs);
    let h = Harness::builder()
        .with_size(SIZE)
        .with_max_steps(40)
        .with_render_cursor(false)
        .renderer(WgpuTestRenderer::from_render_state(rs.clone()))
        .build_ui_state(|ui, app: &mut StudioApp| app.ui_root(ui), app);
    (h, rs)
}

fn uploads(rs: &egui_wgpu::RenderState) -> (u64, u32) {
    let r = rs.renderer.read();
    let p = r
        .callback_resources
        .get::<dapt::render::PointRenderer>()
        .expect("point renderer installed");
    (p.uploads, p.point_count())
}

fn app_with(analyzer: Option<Arc<dyn Analyzer>>, name: &str, cloud: PointCloud) -> StudioApp {
    let mut app = StudioApp::new(AppOptions {
        analyzer,
        ..Default::default()
    });
    app.add_cloud(name.into(), cloud);
    app
}

fn app_with_sphere(analyzer: Option<Arc<dyn Analyzer>>) -> StudioApp {
    app_with(analyzer, "sphere.ply", sphere(3000))
}

/// Steps until the worker-thread analyses are back (bounded).
fn settle(h: &mut Harness<'_, StudioApp>) {
    let t0 = Instant::now();
    while !h.state().analyses_settled() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "analysis never finished"
        );
        std::thread::sleep(Duration::from_millis(10));
        h.step();
    }
    h.run_steps(3);
}

fn has_label(h: &Harness<'_, StudioApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

fn bg() -> [u8; 3] {
    let c = colormap::to_u8(VIEW_BACKGROUND);
    [c[0], c[1], c[2]]
}

/// Pixels of `img` in the region that differ clearly from the view background.
fn count_non_background(img: &image::RgbaImage, x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
    let b = bg();
    let mut n = 0;
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            let p = img.get_pixel(x, y).0;
            let d: i32 = (0..3).map(|k| (p[k] as i32 - b[k] as i32).abs()).sum();
            if d > 40 {
                n += 1;
            }
        }
    }
    n
}

fn count_near(img: &image::RgbaImage, color: [u8; 4], tol: i32) -> usize {
    img.pixels()
        .filter(|p| (0..3).all(|k| (p.0[k] as i32 - color[k] as i32).abs() <= tol))
        .count()
}

fn maybe_save(img: &image::RgbaImage, name: &str) {
    if std::env::var_os("DAPT_UPDATE_SCREENSHOTS").is_some() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        // a palette-free RGB PNG keeps the file small enough for the README
        let rgb = image::DynamicImage::ImageRgba8(img.clone()).to_rgb8();
        rgb.save(dir.join(name)).unwrap();
    }
}

#[test]
fn without_analyzer_says_no_model_loaded_and_offers_colour_by() {
    let mut h = harness(app_with_sphere(None));
    h.run_steps(3);
    assert!(has_label(&h, "no model loaded"));
    assert!(has_label(&h, "Colour by"));
    assert!(has_label(&h, "sphere.ply (3000 pts)"));
    // prediction colouring without a model: grey points and a note, no fake numbers
    h.state_mut().settings.colours.colour_by = ColourBy::Prediction;
    h.run_steps(2);
    assert!(
        !has_label(&h, "%"),
        "no probabilities may be shown without a model"
    );
}

#[test]
fn analyzer_results_show_top_k_and_legend_names() {
    let mut h = harness(app_with_sphere(Some(Arc::new(GeometryAnalyzer))));
    settle(&mut h);
    assert!(has_label(&h, "model: geometry test double"));
    assert!(
        has_label(&h, "airplane (truth)"),
        "top-1 with the ground truth marked"
    );
    assert!(has_label(&h, "chair"));
    assert!(has_label(&h, "72.0 %"));
    // class legend with names from the analysis
    h.state_mut().settings.colours.colour_by = ColourBy::Prediction;
    h.run_steps(2);
    assert!(has_label(&h, "prediction (class)"));
    assert!(has_label(&h, "airplane (3000)"));
    // dynamic scales: colorbar title names the block reduction; prompts/cls listed
    h.state_mut().settings.colours.colour_by = ColourBy::Scale;
    h.run_steps(2);
    assert!(has_label(&h, "dynamic scale, mean over blocks"));
    assert!(has_label(&h, "4 blocks · 64 patches"));
}

#[test]
fn ground_truth_legend_and_rendered_points() {
    let mut app = StudioApp::new(AppOptions::default());
    app.add_cloud("trefoil.ply".into(), trefoil(6000));
    let mut h = harness(app);
    h.state_mut().settings.colours.colour_by = ColourBy::Truth;
    h.state_mut().settings.point_radius = 3.0;
    h.run_steps(3);
    assert!(has_label(&h, "ground truth (part)"));
    for part in 0..4 {
        assert!(
            has_label(&h, &format!("part {part} (")),
            "legend entry for part {part}"
        );
    }
    let img = h.render().expect("render");
    // the sphere sits in the middle of the view (right of the side panel)
    let (w, hgt) = (img.width(), img.height());
    let view_x0 = (w as f32 * 0.4) as u32;
    let lit = count_non_background(&img, view_x0, hgt / 5, w - 200, hgt * 4 / 5);
    assert!(
        lit > 5_000,
        "the 3D view shows points, got {lit} non-background pixels"
    );
    for part in 0..4 {
        let c = colormap::to_u8(colormap::categorical(part));
        let n = count_near(&img, c, 6);
        assert!(n > 100, "part {part} colour {c:?} drawn: {n} pixels");
    }
    maybe_save(&img, "viewer_parts_legend.png");
}

#[test]
fn height_colorbar_and_heatmap_screenshot() {
    let mut app = StudioApp::new(AppOptions {
        analyzer: Some(Arc::new(GeometryAnalyzer)),
        ..Default::default()
    });
    app.add_cloud("trefoil.ply".into(), trefoil(6000));
    let mut h = harness(app);
    settle(&mut h);
    h.state_mut().settings.colours.colour_by = ColourBy::Scale;
    h.state_mut().settings.show_centers = true;
    h.run_steps(3);
    assert!(has_label(&h, "range: robust (2-98 %)"));
    let img = h.render().expect("render");
    let (w, hgt) = (img.width(), img.height());
    let lit = count_non_background(&img, (w as f32 * 0.4) as u32, hgt / 5, w - 200, hgt * 4 / 5);
    assert!(lit > 3_000, "heatmap drawn: {lit}");
    maybe_save(&img, "viewer_scale_heatmap.png");
}

#[test]
fn keymap_table_drives_keys_and_help_overlay() {
    let mut h = harness(app_with_sphere(None));
    h.run_steps(2);
    let first = KEYMAP[0].description;
    assert!(!has_label(&h, first));
    h.key_press(egui::Key::H);
    h.run_steps(2);
    assert!(h.state().help_open);
    for b in KEYMAP {
        assert!(
            has_label(&h, b.description),
            "help lists '{}'",
            b.description
        );
        assert!(
            has_label(&h, b.key_label),
            "help lists key '{}'",
            b.key_label
        );
    }
    h.key_press(egui::Key::H);
    h.run_steps(2);
    assert!(!h.state().help_open);
    assert!(!has_label(&h, first));

    let r = h.state().settings.point_radius;
    h.key_press(egui::Key::Plus);
    h.run_steps(1);
    assert!(h.state().settings.point_radius > r);
    h.key_press(egui::Key::Num3);
    h.run_steps(1);
    assert_eq!(h.state().settings.colours.colour_by, ColourBy::Truth);
}

#[test]
fn bad_files_become_dismissible_messages() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.ply");
    std::fs::write(
        &bad,
        "ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nend_header\n1\n",
    )
    .unwrap();
    let mut app = StudioApp::new(AppOptions {
        files: vec![bad.clone(), dir.path().join("missing.txt")],
        ..Default::default()
    });
    assert_eq!(app.messages.len(), 2);
    app.add_cloud("ok".into(), sphere(100));
    let mut h = harness(app);
    h.run_steps(2);
    assert!(has_label(&h, "broken.ply"));
    assert!(has_label(&h, "missing.txt"));
    h.get_all_by_label("Dismiss").next().unwrap().click();
    h.run_steps(2);
    assert_eq!(h.state().messages.len(), 1, "one message dismissed");
}

/// TEST DOUBLE training engine: replays a short scripted run from a thread.
struct ScriptedLauncher;

impl TrainingLauncher for ScriptedLauncher {
    fn start(&self, settings: &RunSettings) -> Result<TrainingHandle, String> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let epochs = settings.epochs.min(4);
        std::thread::spawn(move || {
            let _ = tx.send(TrainEvent::Started {
                run_dir: "runs/test".into(),
                backend: "scripted".into(),
                start_epoch: 0,
                total_epochs: epochs,
                steps_per_epoch: 50,
                trainable_params: 1_100_000,
                total_params: 22_000_000,
            });
            let cloud = sphere(1500);
            for e in 0..epochs.saturating_sub(1) {
                for s in 0..50 {
                    let t = (e * 50 + s) as f64;
                    let _ = tx.send(TrainEvent::Step {
                        epoch: e,
                        step: s + 1,
                        steps_per_epoch: 50,
                        loss: 2.0 * (-t / 60.0).exp() + 0.1 * ((t * 1.7).sin() + 1.0),
                        accuracy: Some(0.5),
                        lr: 5e-4 * (1.0 - t / 200.0),
                        samples_per_sec: 250.0,
                    });
                }
                for (split, acc) in [
                    ("train", 0.5 + 0.12 * e as f64),
                    ("test", 0.45 + 0.1 * e as f64),
                ] {
                    let _ = tx.send(TrainEvent::Metrics(EpochMetrics {
                        epoch: e,
                        split: split.into(),
                        wall_secs: 1.0,
                        lr: 5e-4,
                        loss: 1.5 / (e + 1) as f64,
                        overall_accuracy: acc,
                        mean_class_accuracy: acc - 0.05,
                        instance_miou: None,
                        class_miou: None,
                    }));
                }
                let analysis = GeometryAnalyzer.analyze(&cloud).unwrap();
                let _ = tx.send(TrainEvent::TokenScales {
                    epoch: e,
                    step: 50,
                    snapshot: ScaleSnapshot {
                        centers: analysis.centers,
                        groups: analysis.groups,
                        points: cloud.positions.clone(),
                        patch: analysis.patch_scales,
                        prompts: analysis.prompt_scales,
                        cls: analysis.cls_scales,
                    },
                });
            }
            // stays "running" until the test is done: keep the sender alive
            std::thread::sleep(Duration::from_secs(30));
        });
        Ok(TrainingHandle { events: rx, stop })
    }
}

#[test]
fn run_panel_starts_plots_and_follows_training() {
    let mut app = StudioApp::new(AppOptions {
        launcher: Some(Arc::new(ScriptedLauncher)),
        ..Default::default()
    });
    app.tab = SideTab::Run;
    app.settings.colours.colour_by = ColourBy::Scale;
    let mut h = harness(app);
    h.run_steps(2);
    assert!(has_label(&h, "status: idle"));
    h.get_by_label("Start").click();
    let t0 = Instant::now();
    while h.state().run.step_loss.len() < 150 || h.state().run.latest_scales.is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "events never arrived"
        );
        std::thread::sleep(Duration::from_millis(10));
        h.step();
    }
    h.run_steps(3);
    assert!(has_label(&h, "status: running"));
    assert!(has_label(&h, "samples/s"));
    assert!(has_label(&h, "training snapshot") || h.state().run.latest_scales.is_some());
    let img = h.render().expect("render");
    let (w, hgt) = (img.width(), img.height());
    let lit = count_non_background(
        &img,
        (w as f32 * 0.45) as u32,
        hgt / 5,
        w - 200,
        hgt * 4 / 5,
    );
    assert!(
        lit > 3_000,
        "the snapshot heatmap is drawn while following training: {lit}"
    );
    maybe_save(&img, "run_panel.png");
    h.get_by_label("Stop").click();
    h.run_steps(2);
    assert!(has_label(&h, "stopping at the next safe point"));
}

/// The run panel's "low memory" box is `dapt train --recompute-blocks`: ticking it (found
/// by its label, as a screen reader would) turns the flag on in the run's configuration.
#[test]
fn run_panel_low_memory_box_turns_on_block_recomputation() {
    let mut app = StudioApp::new(AppOptions {
        launcher: Some(Arc::new(ScriptedLauncher)),
        ..Default::default()
    });
    app.tab = SideTab::Run;
    let mut h = harness(app);
    h.run_steps(2);
    let cfg = dapt::app::model_hook::run_config(&h.state().settings.run).unwrap();
    assert!(!cfg.recompute_blocks, "off by default");
    h.get_by_label("low memory").click();
    h.run_steps(2);
    assert!(h.state().settings.run.low_memory);
    let cfg = dapt::app::model_hook::run_config(&h.state().settings.run).unwrap();
    assert!(cfg.recompute_blocks);
    // an unreadable data set is refused before a thread is spent on it
    h.state_mut().settings.run.data = "/no/such/dir".into();
    let err = dapt::app::model_hook::run_config(&h.state().settings.run).unwrap_err();
    assert!(err.contains("/no/such/dir"), "{err}");
}

#[test]
fn big_cloud_uploads_once_and_camera_stays_put() {
    let mut app = StudioApp::new(AppOptions::default());
    app.add_cloud("big".into(), sphere(1_000_000));
    let (mut h, rs) = harness_with_state(app);
    h.run_steps(1);
    h.render().expect("render");
    let (first, count) = uploads(&rs);
    assert_eq!(count, 1_000_000);
    assert_eq!(first, 2, "positions and colours uploaded once each");
    // camera moves and repaints upload nothing
    h.state_mut().camera.orbit(40.0, 10.0);
    h.run_steps(2);
    h.render().expect("render");
    assert_eq!(uploads(&rs).0, first);
    // recolouring re-uploads only the colours
    h.state_mut().settings.colours.colour_by = ColourBy::Truth;
    h.run_steps(1);
    h.render().expect("render");
    assert_eq!(uploads(&rs).0, first + 1);
    // opening another cloud never moves the camera (ux.md #5)
    let cam = h.state().camera.clone();
    let mut other = sphere(500);
    other.positions.iter_mut().for_each(|p| p[0] += 10.0);
    h.state_mut().add_cloud("other".into(), other);
    h.run_steps(2);
    assert_eq!(h.state().camera, cam);
}

#[test]
fn hovering_a_point_shows_its_values() {
    let mut h = harness(app_with_sphere(None));
    h.state_mut().settings.colours.colour_by = ColourBy::Truth;
    h.state_mut().settings.point_radius = 4.0;
    h.run_steps(2);
    // the 3D view fills the window right of the side panel; its centre shows the sphere
    let view_rect = egui::Rect::from_min_max(egui::pos2(350.0, 0.0), egui::pos2(SIZE[0], SIZE[1]));
    h.hover_at(view_rect.center());
    h.run_steps(3);
    std::thread::sleep(Duration::from_millis(60));
    h.hover_at(view_rect.center() + egui::vec2(1.0, 0.0));
    h.run_steps(3);
    assert!(has_label(&h, "point "), "tooltip with the point index");
    assert!(has_label(&h, "ground truth: "), "tooltip with the label");
}

/// An app showing a sphere, `P` pressed (with a transparent background or not); returns the
/// harness, the screenshot folder (kept alive) and the PNGs in it.
fn press_p(
    transparent: bool,
) -> (
    Harness<'static, StudioApp>,
    tempfile::TempDir,
    Vec<std::path::PathBuf>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut app = StudioApp::new(AppOptions {
        screenshot_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    });
    app.add_cloud("sphere.ply".into(), sphere(2000));
    let mut h = harness(app);
    h.state_mut().settings.screenshot_transparent = transparent;
    h.run_steps(2);
    h.key_press(egui::Key::P);
    // a transparent background takes two captures in consecutive frames
    h.run_steps(8);
    let pngs = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    (h, dir, pngs)
}

#[test]
fn p_saves_a_png_and_says_where() {
    let (h, _dir, pngs) = press_p(false);
    assert_eq!(pngs.len(), 1, "one screenshot written");
    let name = pngs[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("dapt-") && name.len() == "dapt-YYYYMMDD-HHMMSS.png".len(),
        "{name}"
    );
    assert!(has_label(&h, "screenshot saved to"));
    let img = image::open(&pngs[0]).unwrap().to_rgba8();
    let (w, hgt) = (img.width(), img.height());
    assert!(
        count_non_background(&img, w / 2, hgt / 4, w - 200, hgt * 3 / 4) > 2_000,
        "the PNG shows the points"
    );
}

/// World-unit point sizes scale with the camera distance; pixel sizes do not.
#[test]
fn world_unit_point_sizes_grow_when_the_camera_comes_closer() {
    // non-background pixels of the view, for a size mode, radius and camera distance factor
    let lit_at = |world: bool, radius_world: f32, distance_factor: f32| {
        let mut app = StudioApp::new(AppOptions::default());
        app.add_cloud("sphere.ply".into(), sphere(300));
        let mut h = harness(app);
        h.state_mut().settings.point_size_world = world;
        h.state_mut().settings.point_radius_world = radius_world;
        h.state_mut().settings.point_radius = 3.0;
        h.state_mut().settings.show_legend = false;
        h.run_steps(3);
        let d = h.state().camera.distance;
        h.state_mut().camera.distance = d * distance_factor;
        h.run_steps(2);
        let img = h.render().expect("render");
        let (w, hgt) = (img.width(), img.height());
        count_non_background(&img, (w as f32 * 0.3) as u32, 0, w, hgt)
    };
    // what is lit besides the points (status line, ...): the same view with sub-pixel points
    let base_far = lit_at(true, 0.0005, 1.0);
    let base_near = lit_at(true, 0.0005, 0.5);
    let world_far = lit_at(true, 0.008, 1.0) - base_far;
    let world_near = lit_at(true, 0.008, 0.5) - base_near;
    let (px_far, px_near) = (lit_at(false, 0.0, 1.0), lit_at(false, 0.0, 0.5));
    assert!(world_far > 200, "world-size points drawn: {world_far}");
    // halving the distance doubles a world-size sprite's radius: ~4x the area
    assert!(
        world_near as f32 > 2.5 * world_far as f32,
        "world: {world_far} -> {world_near} point pixels"
    );
    assert!(
        (px_near as f32) < 1.3 * px_far as f32,
        "pixels: {px_far} -> {px_near} pixels"
    );
}

/// TEST DOUBLE: the geometry analyzer plus per-point "part predictions" equal to the truth
/// except that part 3 is predicted as part 2 (so errors are a known quarter of the points).
struct PartsDouble;

impl Analyzer for PartsDouble {
    fn name(&self) -> String {
        "parts test double".into()
    }

    fn analyze(&self, cloud: &PointCloud) -> Result<CloudAnalysis, String> {
        let mut a = GeometryAnalyzer.analyze(cloud)?;
        let labels = cloud.labels.as_ref().ok_or("no labels")?;
        a.part_pred = Some(
            labels
                .iter()
                .map(|&l| if l == 3 { 2 } else { l as usize })
                .collect(),
        );
        Ok(a)
    }
}

/// The scene tree (ux.md #13): truth, prediction and errors as copies side by side, kNN
/// groups and centres as overlays, each with its own toggle.
#[test]
fn scene_tree_lays_truth_prediction_and_errors_side_by_side() {
    let n = 3000;
    let app = app_with(Some(Arc::new(PartsDouble)), "trefoil.ply", trefoil(n));
    let (mut h, rs) = harness_with_state(app);
    settle(&mut h);
    for label in [
        "points (colour: height)",
        "ground truth",
        "prediction",
        "errors",
        "patch centres (64)",
        "kNN groups (64 x 93)",
    ] {
        assert!(has_label(&h, label), "scene tree row `{label}`");
    }
    // the renderer sees the data when a frame is rendered
    h.render().expect("render");
    assert_eq!(uploads(&rs).1 as usize, n, "one copy by default");

    // switch the copies on through the tree, as a user would
    for label in ["ground truth", "prediction", "errors"] {
        h.get_by_label(label).click();
        h.run_steps(2);
    }
    h.run_steps(2);
    let img = h.render().expect("render");
    assert_eq!(uploads(&rs).1 as usize, 4 * n, "four copies drawn");
    maybe_save(&img, "viewer_scene_layers.png");
    for title in ["ground truth (part)", "prediction (part)", "error"] {
        assert!(has_label(&h, title), "legend `{title}`");
    }
    // four separate copies in a row; the red "wrong" quarter only in the last one (the
    // prediction copy, which never predicts part 3, has no red at all)
    let runs = lit_column_runs(&img, 350, 905);
    assert_eq!(runs.len(), 4, "copies side by side: {runs:?}");
    let wrong = [220u8, 50, 50, 255];
    let red_in = |(x0, x1): (u32, u32)| {
        let (y0, y1) = (img.height() / 4, img.height() * 3 / 4);
        (x0..x1)
            .flat_map(|x| (y0..y1).map(move |y| (x, y)))
            .filter(|&(x, y)| {
                let p = img.get_pixel(x, y).0;
                (0..3).all(|k| (p[k] as i32 - wrong[k] as i32).abs() <= 12)
            })
            .count()
    };
    assert!(red_in(runs[3]) > 100, "errors copy shows wrong points");
    assert_eq!(red_in(runs[2]), 0, "the prediction copy has no part 3");
    // hovering the second copy reads out the cloud's point, named by layer
    let lines = h.state().describe_point(n + 5).join("\n");
    assert!(
        lines.contains("point 5") && lines.contains("layer: ground truth"),
        "{lines}"
    );

    // the points layer off: three copies; kNN groups draw lines over the first copy
    h.get_by_label("points (colour: height)").click();
    h.run_steps(3);
    let before = h.render().expect("render");
    assert_eq!(uploads(&rs).1 as usize, 3 * n);
    h.get_by_label("kNN groups (64 x 93)").click();
    h.run_steps(3);
    let after = h.render().expect("render");
    let changed = before
        .pixels()
        .zip(after.pixels())
        .filter(|(a, b)| (0..3).any(|k| (a.0[k] as i32 - b.0[k] as i32).abs() > 20))
        .count();
    assert!(
        changed > 1_000,
        "kNN group lines drawn: {changed} pixels changed"
    );
    assert!(h.state().settings.layers.groups);
}

/// Column ranges `[x0, x1)` between `from` and `to` where the middle half of the image has
/// non-background pixels, merged across gaps narrower than 4 columns.
fn lit_column_runs(img: &image::RgbaImage, from: u32, to: u32) -> Vec<(u32, u32)> {
    let (y0, y1) = (img.height() * 45 / 100, img.height() * 3 / 4);
    let lit: Vec<bool> = (from..to)
        .map(|x| count_non_background(img, x, y0, x + 1, y1) > 0)
        .collect();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for (i, &on) in lit.iter().enumerate() {
        let x = from + i as u32;
        if !on {
            continue;
        }
        match runs.last_mut() {
            Some(r) if x - r.1 < 4 => r.1 = x + 1,
            _ => runs.push((x, x + 1)),
        }
    }
    runs
}

/// Transparent screenshots (ux.md #16): the view alone, background alpha 0, points opaque.
#[test]
fn transparent_screenshots_have_an_alpha_background() {
    let (h, _dir, pngs) = press_p(true);
    assert_eq!(pngs.len(), 1, "one screenshot written: {pngs:?}");
    let img = image::open(&pngs[0]).unwrap().to_rgba8();
    assert!(
        (img.width() as f32) < SIZE[0] * 0.8,
        "view only: {}",
        img.width()
    );
    let total = (img.width() * img.height()) as usize;
    let clear = img.pixels().filter(|p| p.0[3] == 0).count();
    let opaque: Vec<[u8; 4]> = img
        .pixels()
        .filter(|p| p.0[3] == 255)
        .map(|p| p.0)
        .collect();
    let partial = total - clear - opaque.len();
    assert!(clear > total / 2, "{clear} of {total} background pixels");
    assert!(img.get_pixel(2, 2).0[3] == 0, "corner is transparent");
    // the points keep their colours (viridis by height) at full opacity
    let palette: Vec<[u8; 4]> = (0..=64)
        .map(|i| dapt::render::Colormap::Viridis.sample_u8(i as f32 / 64.0))
        .collect();
    let viridis = opaque
        .iter()
        .filter(|p| {
            palette
                .iter()
                .any(|c| (0..3).all(|k| (p[k] as i32 - c[k] as i32).abs() <= 8))
        })
        .count();
    assert!(viridis > 2_000, "{viridis} opaque viridis pixels");
    // the translucent legend box and antialiased edges keep partial alpha
    assert!(partial > 500, "{partial} partially transparent pixels");
    assert!(has_label(&h, "screenshot saved to"));
}

/// Frame times with a million points (run by hand: `cargo test --test app_ui frame_times --
/// --ignored --nocapture`); prints medians, asserts nothing about time. "UI" is the app's
/// own per-frame work plus egui on the CPU; "render" adds drawing on the wgpu device and
/// reading the frame back (the kittest harness's readback, which a window does not pay).
#[test]
#[ignore = "a measurement, not a check"]
fn frame_times_with_a_million_points() {
    let n = 1_000_000;
    let app = app_with(Some(Arc::new(GeometryAnalyzer)), "big", sphere(n));
    let (mut h, _rs) = harness_with_state(app);
    settle(&mut h);
    h.render().expect("render");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e3
    };
    let mut ui = Vec::new();
    let mut render = Vec::new();
    for _ in 0..15 {
        h.state_mut().camera.orbit(12.0, 2.0);
        ui.push(time(&mut || {
            h.step();
        }));
        render.push(time(&mut || {
            h.render().expect("render");
        }));
    }
    let mut recolour = Vec::new();
    for k in 0..6 {
        h.state_mut().settings.colours.colour_by = if k % 2 == 0 {
            ColourBy::Scale
        } else {
            ColourBy::Height
        };
        recolour.push(time(&mut || {
            h.step();
        }));
    }
    let mut pick = Vec::new();
    for k in 0..8 {
        let at = egui::vec2(300.0 + 10.0 * k as f32, 300.0);
        pick.push(time(&mut || {
            std::hint::black_box(h.state().pick(at, egui::vec2(750.0, 700.0)));
        }));
    }
    let mut layers = Vec::new();
    for k in 0..4 {
        h.state_mut().settings.layers.truth = k % 2 == 0;
        layers.push(time(&mut || {
            h.step();
        }));
    }
    let first_pick = pick.remove(0);
    eprintln!(
        "1M points, median ms: UI frame (orbit) {:.1}, render + readback {:.1}, recolour \
         frame (height <-> dynamic scale) {:.1}, hover pick {:.1} after a camera move, then \
         {:.3}, truth copy on/off {:.1}",
        median(ui),
        median(render),
        median(recolour),
        first_pick,
        median(pick),
        median(layers)
    );
}

/// Opening a run directory shows its curves; a broken best checkpoint becomes a message, not
/// a crash, and never blocks the UI (the load runs on a worker thread).
#[test]
fn run_panel_opens_a_run_and_reports_a_broken_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    let line = |epoch: usize, split: &str, loss: f64, acc: f64| {
        format!(
            r#"{{"epoch":{epoch},"split":"{split}","wall_secs":1.0,"lr":0.001,"loss":{loss},"overall_accuracy":{acc},"mean_class_accuracy":{acc}}}"#
        )
    };
    let metrics: Vec<String> = (0..3)
        .flat_map(|e| {
            [
                line(e, "train", 2.0 - 0.5 * e as f64, 0.2 * e as f64),
                line(e, "test", 2.1 - 0.5 * e as f64, 0.15 * e as f64),
            ]
        })
        .collect();
    std::fs::write(run.join("metrics.jsonl"), metrics.join("\n")).unwrap();
    std::fs::write(
        run.join("checkpoints/state.json"),
        r#"{"epochs_done":3,"best_overall_accuracy":0.3}"#,
    )
    .unwrap();
    std::fs::write(run.join("config.json"), r#"{"epochs":3}"#).unwrap();
    std::fs::write(
        run.join("checkpoints/best.safetensors"),
        b"not a checkpoint",
    )
    .unwrap();

    let mut h = harness(app_with_sphere(None));
    h.state_mut().tab = SideTab::Run;
    h.run_steps(2);
    h.state_mut().run.open_path = dir.path().join("missing").display().to_string();
    h.get_by_label("Open run").click();
    h.run_steps(2);
    assert!(has_label(&h, "could not open the run"));

    h.state_mut().run.open_path = run.display().to_string();
    h.get_by_label("Open run").click();
    h.run_steps(2);
    assert_eq!(h.state().run.train_loss.len(), 3);
    assert_eq!(h.state().run.test_acc.len(), 3);
    assert!(has_label(&h, "3 of 3 epochs, best accuracy 30.00 %"));

    h.get_by_label("Inspect best checkpoint in the viewer")
        .click();
    let t0 = Instant::now();
    h.run_steps(1);
    while h.state().background_busy() {
        assert!(t0.elapsed() < Duration::from_secs(20), "load never ended");
        std::thread::sleep(Duration::from_millis(10));
        h.step();
    }
    h.run_steps(2);
    assert!(!h.state().has_analyzer());
    assert!(
        has_label(&h, "could not load the model"),
        "{:?}",
        h.state().messages
    );
}
