//! Screenshots (`P`, `dapt view --screenshot`): the whole window, the 3D view alone, or the 3D
//! view with a transparent background (ux.md #16; paper figures are the main output of this
//! research area).
//!
//! The transparent background comes from difference matting: the view is captured twice, over
//! black and then over white, in consecutive frames. A pixel equal in both captures is opaque;
//! one that moves by the whole black-to-white step is background; in between (antialiased
//! sprite edges, the translucent legend box, text drawn on the view) alpha is one minus the
//! step it moved, and its colour is the black capture divided by alpha. This needs no second
//! renderer and keeps everything egui draws on the view (legend, colorbar, captions).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::StudioApp;

/// Which matte capture is in flight.
enum Matte {
    OverBlack,
    /// The black capture is in hand; the white one is next.
    OverWhite(Arc<egui::ColorImage>),
}

#[derive(Default)]
pub(super) struct Screenshots {
    slot: Arc<Mutex<Option<Arc<egui::ColorImage>>>>,
    /// Where the picture goes (`None`: a timestamped file in `dir`).
    target: Option<PathBuf>,
    /// A capture is to be asked for at the start of the next frame, before the view is drawn
    /// (so that the frame it captures has the matte background).
    pending: bool,
    /// A capture was asked for and has not arrived.
    in_flight: bool,
    matte: Option<Matte>,
    /// `dapt view --screenshot PATH`: capture once the first frames settled, then close.
    pub scripted: Option<PathBuf>,
    scripted_done: bool,
    pub dir: Option<PathBuf>,
}

impl Screenshots {
    pub fn new(scripted: Option<PathBuf>, dir: Option<PathBuf>) -> Self {
        Self {
            scripted,
            dir,
            ..Default::default()
        }
    }

    pub fn busy(&self) -> bool {
        self.pending || self.in_flight
    }

    /// Whether a capture of the view alone (a figure) is under way.
    pub fn capturing_figure(&self, view_only: bool) -> bool {
        self.busy() && (view_only || self.matte.is_some())
    }

    /// The view background for this frame: black or white while a matte capture runs.
    pub fn background(&self, normal: [f32; 3]) -> [f32; 3] {
        match &self.matte {
            Some(Matte::OverBlack) => [0.0; 3],
            Some(Matte::OverWhite(_)) => [1.0; 3],
            None => normal,
        }
    }
}

impl StudioApp {
    /// Asks for a screenshot, saved to `path` or to a timestamped file; captured from the next
    /// drawn frame.
    pub fn request_screenshot(&mut self, ctx: &egui::Context, path: Option<PathBuf>) {
        let s = &mut self.screenshots;
        if s.busy() {
            return;
        }
        s.target = path;
        s.pending = true;
        s.matte = self
            .settings
            .screenshot_transparent
            .then_some(Matte::OverBlack);
        ctx.request_repaint();
    }

    /// Called before the view is drawn: sends a pending capture request.
    pub(super) fn start_pending_screenshot(&mut self, ctx: &egui::Context) {
        let s = &mut self.screenshots;
        if let Some(path) = s.scripted.clone()
            && !s.scripted_done
            && !s.busy()
            && self.frame >= 5
            && self.analyses_settled()
        {
            // let a few frames settle (fonts, first upload, analyses) before capturing
            self.screenshots.scripted_done = true;
            self.request_screenshot(ctx, Some(path));
        }
        let s = &mut self.screenshots;
        if s.scripted.is_some() {
            ctx.request_repaint();
        }
        if !s.pending {
            return;
        }
        s.pending = false;
        s.in_flight = true;
        let slot = s.slot.clone();
        let repaint = ctx.clone();
        ctx.request_screenshot(move |image| {
            if let Ok(mut s) = slot.lock() {
                *s = Some(image);
            }
            repaint.request_repaint();
        });
    }

    /// Called at the end of a frame: takes an arrived capture and saves it.
    pub(super) fn poll_screenshot(&mut self, ctx: &egui::Context) {
        let image = self.screenshots.slot.lock().ok().and_then(|mut s| s.take());
        let Some(image) = image else { return };
        self.screenshots.in_flight = false;
        let view_only = self.settings.screenshot_view_only || self.screenshots.matte.is_some();
        let image = match self.view_rect {
            Some(rect) if view_only => Arc::new(image.region(&rect, Some(ctx.pixels_per_point()))),
            _ => image,
        };
        let picture = match self.screenshots.matte.take() {
            Some(Matte::OverBlack) => {
                self.screenshots.matte = Some(Matte::OverWhite(image));
                self.screenshots.pending = true;
                ctx.request_repaint();
                return;
            }
            Some(Matte::OverWhite(black)) => difference_matte(&black, &image),
            None => Ok(to_rgba(&image)),
        };
        let path = self.screenshots.target.take().unwrap_or_else(|| {
            let name = timestamped_png_name();
            match &self.screenshots.dir {
                Some(dir) => dir.join(name),
                None => name,
            }
        });
        let saved = picture.and_then(|img| img.save(&path).map_err(|e| e.to_string()));
        match saved {
            Ok(()) => self
                .messages
                .push(format!("screenshot saved to {}", absolute(&path).display())),
            Err(e) => self
                .messages
                .push(format!("could not save screenshot {}: {e}", path.display())),
        }
        if self.screenshots.scripted.is_some() {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }
}

fn to_rgba(image: &egui::ColorImage) -> image::RgbaImage {
    let [w, h] = image.size;
    let bytes = image
        .pixels
        .iter()
        .flat_map(|c| c.to_srgba_unmultiplied())
        .collect();
    image::RgbaImage::from_raw(w as u32, h as u32, bytes).unwrap_or_default()
}

/// Alpha and colour from captures over black and over white (see the module doc).
pub fn difference_matte(
    black: &egui::ColorImage,
    white: &egui::ColorImage,
) -> Result<image::RgbaImage, String> {
    if black.size != white.size {
        return Err(format!(
            "the two captures differ in size ({:?} vs {:?}); was the window resized?",
            black.size, white.size
        ));
    }
    let mut out = to_rgba(black);
    for (px, w) in out.pixels_mut().zip(&white.pixels) {
        let b = [px.0[0], px.0[1], px.0[2]];
        let w = w.to_srgba_unmultiplied();
        let step: u32 = (0..3).map(|k| w[k].saturating_sub(b[k]) as u32).sum();
        let alpha = 255 - (step as f32 / 3.0).round().min(255.0) as u32;
        px.0 = if alpha == 0 {
            [0; 4]
        } else {
            let un = |c: u8| ((c as u32 * 255 + alpha / 2) / alpha).min(255) as u8;
            [un(b[0]), un(b[1]), un(b[2]), alpha as u8]
        };
    }
    Ok(out)
}

fn timestamped_png_name() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from(format!("dapt-{}.png", utc_timestamp(secs)))
}

/// `YYYYMMDD-HHMMSS` (UTC) of a Unix time, without a date crate.
fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui::Color32;

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(0), "19700101-000000");
        assert_eq!(utc_timestamp(1_795_876_496), "20261128-143456");
    }

    #[test]
    fn matte_recovers_alpha_and_colour() {
        let img = |px: Vec<Color32>| egui::ColorImage::new([px.len(), 1], px);
        // background, an opaque red point, a half-covered edge of it, a translucent box
        let black = img(vec![
            Color32::BLACK,
            Color32::from_rgb(200, 20, 20),
            Color32::from_rgb(100, 10, 10),
            Color32::from_rgb(0, 0, 0),
        ]);
        let white = img(vec![
            Color32::WHITE,
            Color32::from_rgb(200, 20, 20),
            Color32::from_rgb(228, 138, 138),
            Color32::from_rgb(85, 85, 85),
        ]);
        let out = difference_matte(&black, &white).unwrap();
        let px: Vec<[u8; 4]> = out.pixels().map(|p| p.0).collect();
        assert_eq!(px[0], [0, 0, 0, 0]);
        assert_eq!(px[1], [200, 20, 20, 255]);
        assert_eq!(px[2][3], 127);
        assert!((px[2][0] as i32 - 200).abs() <= 2, "{:?}", px[2]);
        assert_eq!(px[3], [0, 0, 0, 170]);
        let small = img(vec![Color32::BLACK]);
        assert!(difference_matte(&small, &white).is_err());
    }
}
