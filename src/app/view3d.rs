//! The central 3D view: camera input, the point paint callback, and the overlays drawn as egui
//! content on top of it (colorbar / class legend, patch centres, hover read-out, messages),
//! so they appear in screenshots.

use std::time::{Duration, Instant};

use egui::{Align2, Color32, Pos2, Rect, Sense, Vec2, pos2, vec2};

use super::colouring::Legend;
use super::{ColourBy, StudioApp};
use crate::render::camera::Projector;
use crate::render::colormap;
use crate::render::{Camera, FrameParams, PointsCallback};

/// Background of the 3D view (sRGB 0..1); tests look for pixels that differ from it.
pub const VIEW_BACKGROUND: [f32; 3] = [0.09, 0.09, 0.1];

fn to_color32(rgb: [f32; 3]) -> Color32 {
    let c = colormap::to_u8(rgb);
    Color32::from_rgb(c[0], c[1], c[2])
}

/// Minimum time between two CPU picks while hovering (a pick scans every point).
const PICK_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Default)]
pub(super) struct HoverState {
    last_pointer: Option<Pos2>,
    last_camera: Option<Camera>,
    last_pick: Option<Instant>,
    last_generation: u64,
    pub hovered: Option<usize>,
}

impl StudioApp {
    pub(super) fn view_ui(&mut self, ui: &mut egui::Ui) {
        let rect = ui.available_rect_before_wrap();
        let response = ui.allocate_rect(rect, Sense::click_and_drag());
        self.view_rect = Some(rect);
        let painter = ui.painter_at(rect);
        let background = self.screenshots.background(VIEW_BACKGROUND);
        painter.rect_filled(rect, 0.0, to_color32(background));
        self.camera_input(ui, &response, rect);

        let positions = self.point_data.positions.clone();
        let has_points = !positions.is_empty() && rect.width() >= 2.0 && rect.height() >= 2.0;
        if has_points {
            let ppp = ui.ctx().pixels_per_point();
            let params = FrameParams {
                clip_from_world: self.camera.clip_from_world(rect.width() / rect.height()),
                viewport_px: [
                    (rect.width() * ppp).round() as u32,
                    (rect.height() * ppp).round() as u32,
                ],
                radius_px: self.settings.point_radius * ppp,
                world_radius_clip: if self.settings.point_size_world {
                    let f = 1.0 / (self.camera.fov_y_radians * 0.5).tan();
                    self.settings.point_radius_world * f
                } else {
                    0.0
                },
                background,
            };
            painter.add(egui_wgpu::Callback::new_paint_callback(
                rect,
                PointsCallback {
                    data: self.point_data.clone(),
                    params,
                },
            ));
        } else {
            let hint = if self.current_cloud().is_some() || self.following_training() {
                "every layer is hidden: switch one on under Scene in the side panel"
            } else {
                "drop point-cloud files here, or use Open... in the side panel"
            };
            painter.text(
                rect.center(),
                Align2::CENTER_CENTER,
                hint,
                egui::FontId::proportional(16.0),
                Color32::from_gray(160),
            );
        }

        if self.settings.layers.groups {
            self.groups_overlay(&painter, rect);
        }
        if self.settings.show_centers {
            self.centers_overlay(&painter, rect);
        }
        self.captions_overlay(&painter, rect);
        self.hover_pick(ui, &response, rect);
        if self.settings.show_legend {
            self.legend_overlay(ui.ctx(), rect);
        }
        // figures (view-only or transparent captures) leave out the status line and messages
        if !self
            .screenshots
            .capturing_figure(self.settings.screenshot_view_only)
        {
            self.messages_overlay(ui.ctx(), rect);
            self.status_overlay(&painter, rect);
        }
    }

    fn camera_input(&mut self, ui: &egui::Ui, response: &egui::Response, rect: Rect) {
        let shift = ui.input(|i| i.modifiers.shift);
        let delta = response.drag_delta();
        if response.dragged_by(egui::PointerButton::Primary) && !shift {
            self.camera.orbit(delta.x, delta.y);
        } else if response.dragged_by(egui::PointerButton::Secondary)
            || response.dragged_by(egui::PointerButton::Middle)
            || (response.dragged_by(egui::PointerButton::Primary) && shift)
        {
            self.camera.pan(delta.x, delta.y, rect.height());
        }
        if response.hovered() {
            let (scroll, zoom) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
            if scroll != 0.0 {
                self.camera.zoom((-scroll * 0.002).exp());
            }
            if zoom != 1.0 {
                // ctrl + wheel (egui reports it as zoom): point size
                self.settings.point_radius = (self.settings.point_radius * zoom).clamp(0.5, 40.0);
            }
        }
        if response.double_clicked() {
            let picked = response
                .interact_pointer_pos()
                .and_then(|p| self.pick(p - rect.min, rect.size()));
            match picked {
                Some(i) => {
                    if let Some(p) = self.point_data.positions.get(i).copied() {
                        self.camera.set_pivot(p);
                    }
                }
                None => self.reset_camera(),
            }
        }
    }

    /// Index of the front-most point within a few pixels of `at` (view-relative points).
    pub fn pick(&self, at: Vec2, size: Vec2) -> Option<usize> {
        let r = (self.settings.point_radius + 2.0).max(5.0);
        let size = [size.x, size.y];
        let generation = self.point_data.positions_generation;
        let mut grid = self.pick_grid.borrow_mut();
        if !grid
            .as_ref()
            .is_some_and(|g| g.matches(&self.camera, generation, size, r))
        {
            *grid = Some(super::pick::PickGrid::build(
                &self.camera,
                generation,
                &self.point_data.positions,
                size,
                r,
            ));
        }
        grid.as_ref().and_then(|g| g.pick([at.x, at.y]))
    }

    fn hover_pick(&mut self, ui: &egui::Ui, response: &egui::Response, rect: Rect) {
        // scripted screenshots (`--screenshot`) must not show a tooltip where the pointer rests
        let pointer = response
            .hover_pos()
            .filter(|_| !response.dragged() && self.screenshots.scripted.is_none());
        let Some(pointer) = pointer else {
            self.hover.hovered = None;
            self.hover.last_pointer = None;
            return;
        };
        let moved = self.hover.last_pointer != Some(pointer)
            || self.hover.last_camera.as_ref() != Some(&self.camera)
            || self.hover.last_generation != self.point_data.positions_generation;
        let due = self
            .hover
            .last_pick
            .is_none_or(|t| t.elapsed() >= PICK_INTERVAL);
        if moved && due {
            self.hover.hovered = self.pick(pointer - rect.min, rect.size());
            self.hover.last_pointer = Some(pointer);
            self.hover.last_camera = Some(self.camera.clone());
            self.hover.last_pick = Some(Instant::now());
            self.hover.last_generation = self.point_data.positions_generation;
        } else if moved {
            ui.ctx().request_repaint_after(PICK_INTERVAL);
        }
        let Some(i) = self.hover.hovered else { return };
        let lines = self.describe_point(i);
        if lines.is_empty() {
            return;
        }
        egui::Area::new(egui::Id::unique("point_tooltip"))
            .fixed_pos(pointer + vec2(16.0, 16.0))
            .order(egui::Order::Tooltip)
            .interactable(false)
            .show(ui.ctx(), |ui| {
                egui::Frame::popup(ui.style()).show(ui, |ui| {
                    for l in lines {
                        ui.label(l);
                    }
                });
            });
    }

    /// The hover read-out of point `i`.
    pub fn describe_point(&self, drawn: usize) -> Vec<String> {
        let Some((slot, i)) = self.scene.locate(drawn) else {
            return Vec::new();
        };
        let Some(p) = self.point_data.positions.get(drawn) else {
            return Vec::new();
        };
        let o = slot.offset;
        let mut out = vec![
            format!("point {i}"),
            format!(
                "x {:.4}  y {:.4}  z {:.4}",
                p[0] - o[0],
                p[1] - o[1],
                p[2] - o[2]
            ),
        ];
        if self.scene.slots.len() > 1 {
            out.push(format!("layer: {}", slot.kind.label()));
        }
        let following = self.following_training();
        let cloud = (!following).then(|| self.current_cloud()).flatten();
        let analysis = cloud.and_then(|c| c.analysis());
        let names = analysis.map(|a| a.class_names.as_slice()).unwrap_or(&[]);
        let name = |id: usize| names.get(id).cloned().unwrap_or_else(|| id.to_string());
        if let Some(c) = cloud {
            if let Some(l) = c.cloud.labels.as_ref().and_then(|l| l.get(i)) {
                out.push(format!("ground truth: {l}"));
            } else if let Some(cl) = c.cloud.class_label {
                out.push(format!("ground truth: {}", name(cl)));
            }
        }
        if let Some(a) = analysis {
            if let Some(p) = a.part_pred.as_ref().and_then(|p| p.get(i)) {
                out.push(format!("predicted: {p}"));
            } else if let Some(k) = a.predicted_class() {
                out.push(format!("predicted: {}", name(k)));
            }
        }
        let scales = if following {
            self.training_view.as_ref().map(|t| &t.3)
        } else {
            cloud.and_then(|c| c.scales.as_ref())
        };
        if let Some(s) = scales {
            let patches = s.patches_of(i);
            if !patches.is_empty() {
                let shown: Vec<String> = patches.iter().take(6).map(|k| k.to_string()).collect();
                let more = if patches.len() > 6 { " ..." } else { "" };
                out.push(format!("patch {}{more}", shown.join(", ")));
            }
        }
        let c = &slot.colouring;
        let mut shown_title = None;
        if let (Some(v), Legend::Colorbar { title, .. }) =
            (c.values.as_ref().and_then(|v| v.get(i)), &c.legend)
        {
            out.push(format!("{title}: {v:.4}"));
            shown_title = Some(title.as_str());
        }
        // every scalar field of the file, not only the one the colours show
        for f in cloud.map(|c| c.cloud.scalars.as_slice()).unwrap_or(&[]) {
            if let Some(v) = f.values.get(i)
                && shown_title != Some(f.name.as_str())
            {
                out.push(format!("{}: {v:.4}", f.name));
            }
        }
        out
    }

    /// The scales behind the shown cloud (its analysis, or the followed training snapshot).
    pub(super) fn shown_scales(&self) -> Option<&super::ScaleData> {
        if self.following_training() {
            self.training_view.as_ref().map(|t| &t.3)
        } else {
            self.current_cloud().and_then(|c| c.scales.as_ref())
        }
    }

    /// kNN groups: a thin line from each patch centre to each of its points, one colour per
    /// patch, on the first shown copy.
    fn groups_overlay(&self, painter: &egui::Painter, rect: Rect) {
        let Some(s) = self.shown_scales() else { return };
        let positions = &self.point_data.positions;
        let n = self.scene.points_per_copy;
        if self.scene.slots.is_empty() || n == 0 {
            return;
        }
        let proj = Projector::new(&self.camera, [rect.width(), rect.height()]);
        // member indices address the first copy, the first `n` drawn positions
        let o = self.scene.offset_of_first();
        // bounded work per frame whatever the group count and size
        const MAX_SEGMENTS: usize = 40_000;
        let mut drawn = 0;
        for (g, (c, members)) in s.centers.iter().zip(&s.groups).enumerate() {
            let Some([cx, cy, _]) = proj.project([c[0] + o[0], c[1] + o[1], c[2] + o[2]]) else {
                continue;
            };
            let col = colormap::to_u8(colormap::categorical(g));
            let stroke = (
                1.0,
                Color32::from_rgba_unmultiplied(col[0], col[1], col[2], 150),
            );
            for &m in members {
                if drawn >= MAX_SEGMENTS {
                    return;
                }
                let Some(p) = positions.get(m).filter(|_| m < n) else {
                    continue;
                };
                if let Some([x, y, _]) = proj.project(*p) {
                    painter.line_segment([rect.min + vec2(cx, cy), rect.min + vec2(x, y)], stroke);
                    drawn += 1;
                }
            }
        }
    }

    /// Names above each copy when several are shown side by side.
    fn captions_overlay(&self, painter: &egui::Painter, rect: Rect) {
        if self.scene.slots.len() < 2 {
            return;
        }
        // computed once per layout, not per frame (a sort of up to 100k values per axis)
        let Some((lo, hi)) = self.scene.bounds else {
            return;
        };
        let up = self.camera.up.index();
        let proj = Projector::new(&self.camera, [rect.width(), rect.height()]);
        for slot in &self.scene.slots {
            let mut top = [0.0; 3];
            for k in 0..3 {
                top[k] = 0.5 * (lo[k] + hi[k]) + slot.offset[k];
            }
            top[up] = hi[up] + 0.08 * (hi[up] - lo[up]);
            if let Some([x, y, _]) = proj.project(top) {
                painter.text(
                    rect.min + vec2(x, y),
                    Align2::CENTER_BOTTOM,
                    slot.kind.label(),
                    egui::FontId::proportional(15.0),
                    Color32::from_gray(225),
                );
            }
        }
    }

    fn centers_overlay(&self, painter: &egui::Painter, rect: Rect) {
        let Some(s) = self.shown_scales() else { return };
        let values = s.patch_values(self.settings.colours.block);
        let range = match self.colouring.as_ref().map(|c| &c.legend) {
            Some(Legend::Colorbar { range, .. })
                if self.settings.colours.colour_by == ColourBy::Scale =>
            {
                *range
            }
            _ => super::colouring::percentile_range(&values, 0.0, 1.0),
        };
        let proj = Projector::new(&self.camera, [rect.width(), rect.height()]);
        let r = (self.settings.point_radius * 2.2).max(4.0);
        let o = self.scene.offset_of_first();
        for (k, c) in s.centers.iter().enumerate() {
            let Some([x, y, _]) = proj.project([c[0] + o[0], c[1] + o[1], c[2] + o[2]]) else {
                continue;
            };
            let fill = values.get(k).map_or(Color32::GRAY, |&v| {
                let c = self
                    .settings
                    .colours
                    .colormap
                    .sample_u8(colormap::normalize(v, range));
                Color32::from_rgb(c[0], c[1], c[2])
            });
            painter.circle(rect.min + vec2(x, y), r, fill, (1.5, Color32::WHITE));
        }
    }

    fn legend_overlay(&self, ctx: &egui::Context, rect: Rect) {
        // one box per distinct legend of the shown copies, left-to-right order top-down
        let mut legends: Vec<Legend> = Vec::new();
        for l in self.scene.slots.iter().map(|s| &s.colouring.legend) {
            if *l != Legend::None && !legends.contains(l) {
                legends.push(l.clone());
            }
        }
        if legends.is_empty() {
            return;
        }
        egui::Area::new(egui::Id::unique("view_legend"))
            .fixed_pos(pos2(rect.right() - 12.0, rect.top() + 12.0))
            .pivot(Align2::RIGHT_TOP)
            .order(egui::Order::Middle)
            .interactable(false)
            .show(ctx, |ui| {
                for legend in legends {
                    legend_box(ui, legend);
                }
            });
    }

    fn messages_overlay(&mut self, ctx: &egui::Context, rect: Rect) {
        if self.messages.is_empty() {
            return;
        }
        let mut dismiss = None;
        egui::Area::new(egui::Id::unique("view_messages"))
            .fixed_pos(rect.left_top() + vec2(12.0, 12.0))
            .order(egui::Order::Middle)
            .show(ctx, |ui| {
                ui.set_max_width((rect.width() - 260.0).max(200.0));
                for (k, m) in self.messages.iter().enumerate() {
                    egui::Frame::popup(ui.style()).show(ui, |ui| {
                        ui.horizontal(|ui| {
                            if ui.small_button("Dismiss").clicked() {
                                dismiss = Some(k);
                            }
                            let is_error = m.starts_with("could not") || m.contains("failed");
                            if is_error {
                                ui.colored_label(ui.visuals().error_fg_color, m);
                            } else {
                                ui.label(m);
                            }
                        });
                    });
                }
            });
        if let Some(k) = dismiss {
            self.messages.remove(k);
        }
    }

    fn status_overlay(&self, painter: &egui::Painter, rect: Rect) {
        let mut parts = Vec::new();
        if self.following_training() {
            if let Some((epoch, step, _)) = &self.run.latest_scales {
                parts.push(format!("training snapshot · epoch {epoch} step {step}"));
            }
        } else if let Some(c) = self.current_cloud() {
            parts.push(c.name.clone());
        }
        if !self.point_data.positions.is_empty() {
            parts.push(format!("{} points", self.point_data.positions.len()));
            parts.push(format!(
                "colour: {}",
                self.settings.colours.colour_by.label()
            ));
        }
        if let Some(note) = self.colouring.as_ref().and_then(|c| c.note.as_ref()) {
            parts.push(note.clone());
        }
        parts.push("H: help".into());
        painter.text(
            rect.left_bottom() + vec2(10.0, -10.0),
            Align2::LEFT_BOTTOM,
            parts.join("  ·  "),
            egui::FontId::proportional(13.0),
            Color32::from_gray(190),
        );
    }
}

fn legend_box(ui: &mut egui::Ui, legend: Legend) {
    egui::Frame::popup(ui.style())
        .fill(Color32::from_black_alpha(170))
        .show(ui, |ui| {
            ui.set_min_width(150.0);
            match legend {
                Legend::None => {}
                Legend::Colorbar {
                    title,
                    colormap,
                    range,
                    mode,
                } => {
                    ui.strong(title);
                    colorbar_ui(ui, colormap, range);
                    ui.small(format!("range: {}", mode.label()));
                }
                Legend::Classes { title, entries } => {
                    ui.strong(title);
                    const MAX_ROWS: usize = 24;
                    for e in entries.iter().take(MAX_ROWS) {
                        ui.horizontal(|ui| {
                            let (r, _) = ui.allocate_exact_size(vec2(12.0, 12.0), Sense::hover());
                            ui.painter().rect_filled(
                                r,
                                2.0,
                                Color32::from_rgb(e.color[0], e.color[1], e.color[2]),
                            );
                            ui.label(format!("{} ({})", e.name, e.count));
                        });
                    }
                    if entries.len() > MAX_ROWS {
                        ui.small(format!("... {} more", entries.len() - MAX_ROWS));
                    }
                }
            }
        });
}

/// A vertical colour bar with the range's ends and middle written next to it.
fn colorbar_ui(ui: &mut egui::Ui, colormap: crate::render::Colormap, range: (f32, f32)) {
    let (rect, _) = ui.allocate_exact_size(vec2(90.0, 160.0), Sense::hover());
    let bar = Rect::from_min_size(rect.min, vec2(16.0, rect.height()));
    let mut mesh = egui::Mesh::default();
    const STEPS: usize = 32;
    for s in 0..=STEPS {
        let t = s as f32 / STEPS as f32;
        let y = bar.bottom() - t * bar.height();
        let c = colormap.sample_u8(t);
        let col = Color32::from_rgb(c[0], c[1], c[2]);
        mesh.colored_vertex(pos2(bar.left(), y), col);
        mesh.colored_vertex(pos2(bar.right(), y), col);
        if s > 0 {
            let i = (2 * s) as u32;
            mesh.add_triangle(i - 2, i - 1, i);
            mesh.add_triangle(i - 1, i + 1, i);
        }
    }
    ui.painter().add(mesh);
    let text_color = ui.visuals().strong_text_color();
    for t in [0.0f32, 0.5, 1.0] {
        let v = range.0 + (range.1 - range.0) * t;
        let y = bar.bottom() - t * bar.height();
        ui.painter().line_segment(
            [pos2(bar.right(), y), pos2(bar.right() + 4.0, y)],
            (1.0, text_color),
        );
        ui.painter().text(
            pos2(bar.right() + 7.0, y),
            Align2::LEFT_CENTER,
            format_value(v),
            egui::FontId::monospace(11.0),
            text_color,
        );
    }
}

fn format_value(v: f32) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-3) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}
