//! End-to-end smoke test of the real binary under a virtual X server: `dapt view FILE.ply
//! --screenshot OUT.png` must open a window, draw the cloud and save a PNG showing the points.
//!
//! Needs (Debian/Ubuntu packages): xvfb, mesa-vulkan-drivers, libxkbcommon-x11-0, libx11-xcb1,
//! libxcursor1, libxrandr2, libxi6. Fails (never skips) when Xvfb is missing.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dapt::render::Colormap;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_display() -> u32 {
    (90..400)
        .find(|n| {
            !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        })
        .expect("no free X display number in 90..400")
}

/// Serialises display-number choice between the tests of this binary (they run in parallel).
static XVFB_START: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether the X lock file of display `n` names our Xvfb (another server may own `n`).
fn lock_is_ours(n: u32, pid: u32) -> bool {
    std::fs::read_to_string(format!("/tmp/.X{n}-lock"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        == Some(pid)
}

fn start_xvfb() -> (KillOnDrop, u32) {
    let _serial = XVFB_START.lock().unwrap_or_else(|e| e.into_inner());
    for _attempt in 0..5 {
        let n = free_display();
        let child = match Command::new("Xvfb")
            .args([
                &format!(":{n}"),
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "Xvfb is not installed: run `apt-get install -y xvfb mesa-vulkan-drivers \
                 libxkbcommon-x11-0 libx11-xcb1 libxcursor1 libxrandr2 libxi6`"
            ),
            Err(e) => panic!("could not start Xvfb: {e}"),
        };
        let mut guard = KillOnDrop(child);
        let socket = format!("/tmp/.X11-unix/X{n}");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(15) {
            if Path::new(&socket).exists() && lock_is_ours(n, guard.0.id()) {
                return (guard, n);
            }
            if let Ok(Some(_)) = guard.0.try_wait() {
                break; // lost a race for the display number: try another
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("Xvfb did not come up");
}

/// Pixels within 10 per channel of some colour of the viridis map (the default height
/// colouring).
fn viridis_pixels(img: &image::RgbaImage) -> usize {
    let palette: Vec<[u8; 4]> = (0..=64)
        .map(|i| Colormap::Viridis.sample_u8(i as f32 / 64.0))
        .collect();
    img.pixels()
        .filter(|p| {
            palette
                .iter()
                .any(|c| (0..3).all(|k| (p.0[k] as i32 - c[k] as i32).abs() <= 10))
        })
        .count()
}

/// Fibonacci sphere, 4000 points, written as ascii PLY.
fn write_ply(path: &Path) {
    let n = 4000;
    let mut f = std::fs::File::create(path).unwrap();
    writeln!(
        f,
        "ply\nformat ascii 1.0\nelement vertex {n}\nproperty float x\nproperty float y\n\
         property float z\nend_header"
    )
    .unwrap();
    let golden = std::f32::consts::PI * (3.0 - 5f32.sqrt());
    for i in 0..n {
        let y = 1.0 - 2.0 * (i as f32 + 0.5) / n as f32;
        let r = (1.0 - y * y).sqrt();
        let t = golden * i as f32;
        writeln!(f, "{} {} {}", r * t.cos(), y, r * t.sin()).unwrap();
    }
}

/// Runs `dapt` with `args` on `display` and waits for it (bounded); returns its stderr.
fn run_dapt(display: u32, dir: &Path, args: &[&std::ffi::OsStr]) -> String {
    run_dapt_env(display, dir, args, &[])
}

/// [`run_dapt`] with extra environment variables.
fn run_dapt_env(
    display: u32,
    dir: &Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> String {
    // a binary from another checkout (a shared CARGO_TARGET_DIR) would fail confusingly below
    let help = Command::new(env!("CARGO_BIN_EXE_dapt"))
        .args(["view", "--help"])
        .output()
        .expect("run dapt view --help");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--screenshot"),
        "{} has no `view --screenshot`: it was built from another source tree \
         (shared CARGO_TARGET_DIR?); rebuild and rerun",
        env!("CARGO_BIN_EXE_dapt")
    );
    let child = Command::new(env!("CARGO_BIN_EXE_dapt"))
        .args(args)
        .env("DISPLAY", format!(":{display}"))
        .env_remove("WAYLAND_DISPLAY")
        .env("XDG_CONFIG_HOME", dir)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dapt");
    let mut app = KillOnDrop(child);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = app.0.try_wait().unwrap() {
            break s;
        }
        // lavapipe compiles shaders slowly on first use
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "dapt {args:?} did not exit in time"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    if let Some(mut e) = app.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(
        status.success(),
        "dapt {args:?} failed ({status}): {stderr}"
    );
    stderr
}

#[test]
fn binary_renders_points_under_xvfb() {
    let (_xvfb, display) = start_xvfb();
    let dir = tempfile::tempdir().unwrap();
    let ply = dir.path().join("sphere.ply");
    let png = dir.path().join("shot.png");
    write_ply(&ply);

    let stderr = run_dapt(
        display,
        dir.path(),
        &[
            "view".as_ref(),
            ply.as_os_str(),
            "--screenshot".as_ref(),
            png.as_os_str(),
        ],
    );
    assert!(png.exists(), "no screenshot written; stderr: {stderr}");

    let img = image::open(&png).expect("read screenshot").to_rgba8();
    assert!(
        img.width() >= 640 && img.height() >= 400,
        "{}x{}",
        img.width(),
        img.height()
    );
    // default colouring: height on viridis; count pixels close to some viridis colour
    let found = viridis_pixels(&img);
    assert!(
        found > 10_000,
        "expected a window full of viridis-coloured points, found {found} such pixels"
    );
    // and colours spanning the map (points at both ends of the height range)
    let near = |c: [u8; 4]| {
        img.pixels()
            .filter(|p| (0..3).all(|k| (p.0[k] as i32 - c[k] as i32).abs() <= 12))
            .count()
    };
    let low = near(Colormap::Viridis.sample_u8(0.05));
    let high = near(Colormap::Viridis.sample_u8(0.95));
    assert!(
        low > 50 && high > 50,
        "both ends of the colormap drawn: {low} / {high}"
    );
}

#[test]
fn binary_closes_itself_after_n_frames_and_survives_a_bad_file() {
    let (_xvfb, display) = start_xvfb();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.ply");
    std::fs::write(&bad, "not a ply file").unwrap();
    // a broken file is a message in the app, not a crash; --frames ends the run
    run_dapt(
        display,
        dir.path(),
        &[
            "view".as_ref(),
            bad.as_os_str(),
            "--frames".as_ref(),
            "5".as_ref(),
        ],
    );
}

#[test]
fn view_only_screenshots_crop_the_panels_away() {
    let (_xvfb, display) = start_xvfb();
    let dir = tempfile::tempdir().unwrap();
    let ply = dir.path().join("sphere.ply");
    write_ply(&ply);
    let full = dir.path().join("full.png");
    let view = dir.path().join("view.png");
    for (png, extra) in [(&full, None), (&view, Some("--view-only"))] {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "view".as_ref(),
            ply.as_os_str(),
            "--screenshot".as_ref(),
            png.as_os_str(),
        ];
        if let Some(e) = extra {
            args.push(e.as_ref());
        }
        let stderr = run_dapt(display, dir.path(), &args);
        assert!(png.exists(), "no screenshot written; stderr: {stderr}");
    }
    let full = image::open(&full).unwrap().to_rgba8();
    let view = image::open(&view).unwrap().to_rgba8();
    assert!(
        view.width() < full.width(),
        "{} vs {}",
        view.width(),
        full.width()
    );
    assert_eq!(view.height(), full.height());
    // the crop still holds the points (viridis pixels)
    let n = viridis_pixels(&view);
    assert!(n > 10_000, "{n}");
}

/// `--transparent`: the real binary captures the view over black and white and writes the
/// matte (alpha 0 background, opaque points).
#[test]
fn transparent_screenshots_from_the_binary() {
    let (_xvfb, display) = start_xvfb();
    let dir = tempfile::tempdir().unwrap();
    let ply = dir.path().join("sphere.ply");
    write_ply(&ply);
    let png = dir.path().join("figure.png");
    let stderr = run_dapt(
        display,
        dir.path(),
        &[
            "view".as_ref(),
            ply.as_os_str(),
            "--transparent".as_ref(),
            "--layers".as_ref(),
            "points".as_ref(),
            "--screenshot".as_ref(),
            png.as_os_str(),
        ],
    );
    assert!(png.exists(), "no screenshot written; stderr: {stderr}");
    let img = image::open(&png).unwrap().to_rgba8();
    let total = (img.width() * img.height()) as usize;
    let clear = img.pixels().filter(|p| p.0[3] == 0).count();
    let opaque = img.pixels().filter(|p| p.0[3] == 255).count();
    assert!(clear > total / 3, "{clear} of {total} transparent");
    assert!(opaque > 5_000, "{opaque} opaque pixels (the points)");
}

/// The renderer drawing on the wgpu device burn created (what `dapt view` does on a hardware
/// GPU, forced here on lavapipe): the window still shows the cloud.
#[test]
fn the_renderer_draws_on_the_engines_wgpu_device() {
    let (_xvfb, display) = start_xvfb();
    let dir = tempfile::tempdir().unwrap();
    let ply = dir.path().join("sphere.ply");
    let png = dir.path().join("shared.png");
    write_ply(&ply);
    let stderr = run_dapt_env(
        display,
        dir.path(),
        &[
            "view".as_ref(),
            ply.as_os_str(),
            "--screenshot".as_ref(),
            png.as_os_str(),
        ],
        &[("DAPT_SHARE_GPU", "1")],
    );
    assert!(
        stderr.contains("renderer and engine share one wgpu device"),
        "{stderr}"
    );
    let img = image::open(&png).expect("read screenshot").to_rgba8();
    let n = viridis_pixels(&img);
    assert!(n > 10_000, "{n} viridis pixels");
}
