//! The side panel: the Viewer / Run tabs and the viewer's sections (files, scene, data set,
//! backbone and adapters, prediction, colour, dynamic scales).

use super::{
    AnalysisState, BlockSelect, ColourBy, Legend, PointReduction, RangeMode, SideTab, StudioApp,
    colouring,
};
use crate::render::{Colormap, UpAxis};

impl StudioApp {
    pub(super) fn side_panel_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.tab, SideTab::Viewer, "Viewer");
            ui.selectable_value(&mut self.tab, SideTab::Run, "Run");
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.button("?").on_hover_text("controls (H)").clicked() {
                    self.help_open = !self.help_open;
                }
            });
        });
        ui.separator();
        match self.tab {
            SideTab::Viewer => self.viewer_tab_ui(ui),
            SideTab::Run => {
                let launcher = self.launcher.clone();
                self.run.ui(
                    ui,
                    launcher.as_deref(),
                    &mut self.settings.plot,
                    &mut self.settings.follow_training,
                );
                self.settings.run = self.run.settings.clone();
                if let Some(ckpt) = self.run.inspect_request.take() {
                    self.load_model(ckpt);
                    self.tab = SideTab::Viewer;
                }
                if let Some(dir) = self.run.reconstruct_request.take() {
                    self.reconstruct_current(dir);
                    self.tab = SideTab::Viewer;
                }
            }
        }
    }

    fn viewer_tab_ui(&mut self, ui: &mut egui::Ui) {
        egui::CollapsingHeader::new("Files")
            .default_open(true)
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    if ui.button("Open...").clicked() {
                        self.file_dialog.open_at(self.settings.last_dir.clone());
                    }
                    if ui.button("< Prev").clicked() {
                        self.select_offset(-1);
                    }
                    if ui.button("Next >").clicked() {
                        self.select_offset(1);
                    }
                });
                if self.clouds.is_empty() {
                    ui.weak("drop PLY / TXT / NPY / OFF / OBJ files on the window");
                }
                let mut select = None;
                let mut close = None;
                for (i, c) in self.clouds.iter().enumerate() {
                    ui.horizontal(|ui| {
                        let text = format!("{} ({} pts)", c.name, c.cloud.len());
                        if ui.selectable_label(self.current == Some(i), text).clicked() {
                            select = Some(i);
                        }
                        if ui.small_button("x").on_hover_text("close").clicked() {
                            close = Some(i);
                        }
                    });
                }
                if let Some(i) = select {
                    self.current = Some(i);
                }
                if let Some(i) = close {
                    self.clouds.remove(i);
                    self.current = if self.clouds.is_empty() {
                        None
                    } else {
                        Some(self.current.unwrap_or(0).min(self.clouds.len() - 1))
                    };
                }
            });
        egui::CollapsingHeader::new("Scene")
            .default_open(true)
            .show(ui, |ui| self.scene_ui(ui));
        let shown = egui::CollapsingHeader::new("Data set")
            .default_open(false)
            .show(ui, |ui| self.dataset.ui(ui))
            .body_returned
            .flatten()
            .or_else(|| self.dataset.poll());
        if let Some((name, cloud)) = shown {
            // one slot for the browsed sample: replace the previous one instead of piling up
            if let Some(i) = self
                .clouds
                .iter()
                .position(|c| c.name.starts_with("[set] "))
            {
                self.clouds.remove(i);
            }
            self.add_cloud(format!("[set] {name}"), cloud);
        }
        egui::CollapsingHeader::new("Backbone and adapters")
            .default_open(true)
            .show(ui, |ui| {
                self.adapters.ui(ui, self.settings.last_dir.as_deref());
            });
        egui::CollapsingHeader::new("Prediction")
            .default_open(true)
            .show(ui, |ui| self.prediction_ui(ui));
        egui::CollapsingHeader::new("Colour")
            .default_open(true)
            .show(ui, |ui| self.colour_ui(ui));
        egui::CollapsingHeader::new("Dynamic scales")
            .default_open(true)
            .show(ui, |ui| self.scales_ui(ui));
    }

    fn prediction_ui(&mut self, ui: &mut egui::Ui) {
        if let Some(job) = &self.background {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("{} ...", job.label));
            });
        }
        let Some(analyzer) = &self.analyzer else {
            ui.label("no model loaded");
            ui.weak("start with --checkpoint to see predictions and dynamic scales");
            return;
        };
        ui.weak(format!("model: {}", analyzer.name()));
        let Some(c) = self.current_cloud() else {
            ui.weak("open a cloud to run the model");
            return;
        };
        match &c.analysis {
            AnalysisState::None => {}
            AnalysisState::Pending => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("analysing...");
                });
            }
            AnalysisState::Failed(e) => {
                ui.colored_label(ui.visuals().error_fg_color, format!("analysis failed: {e}"));
            }
            AnalysisState::Done(a) => {
                let truth = c.cloud.class_label;
                egui::Grid::new("topk").num_columns(2).show(ui, |ui| {
                    for (k, p) in a.top_k(5) {
                        let name = a
                            .class_names
                            .get(k)
                            .cloned()
                            .unwrap_or_else(|| format!("class {k}"));
                        let marker = if truth == Some(k) { " (truth)" } else { "" };
                        ui.label(format!("{name}{marker}"));
                        ui.add(
                            egui::ProgressBar::new(p.clamp(0.0, 1.0))
                                .desired_width(120.0)
                                .text(format!("{:.1} %", p * 100.0)),
                        );
                        ui.end_row();
                    }
                });
            }
        }
    }

    fn colour_ui(&mut self, ui: &mut egui::Ui) {
        // the cloud the colouring reads: a followed training snapshot has no scalar fields
        let shown = (!self.following_training())
            .then(|| self.current_cloud())
            .flatten()
            .map(|c| &*c.cloud);
        let fields = colouring::scalar_menu(shown);
        let selected = colouring::mode_label(&self.settings.colours, shown);
        let shown_field = shown
            .and_then(|c| colouring::shown_scalar(c, &self.settings.colours))
            .map(|f| f.name.clone());
        let s = &mut self.settings;
        egui::ComboBox::from_label("Colour by")
            .selected_text(selected)
            // every mode and field in view at once: a scrolled popup hides the scalar fields
            .height(600.0)
            .show_ui(ui, |ui| {
                for c in ColourBy::ALL {
                    ui.selectable_value(&mut s.colours.colour_by, c, c.label());
                }
                for name in fields {
                    let on = s.colours.colour_by == ColourBy::Scalar
                        && shown_field.as_deref() == Some(name.as_str());
                    let text = colouring::scalar_mode_label(&name);
                    if ui.selectable_label(on, text).clicked() {
                        s.colours.colour_by = ColourBy::Scalar;
                        s.colours.scalar_field = Some(name);
                    }
                }
            });
        egui::ComboBox::from_label("Colormap")
            .selected_text(s.colours.colormap.name())
            .show_ui(ui, |ui| {
                for c in Colormap::ALL {
                    ui.selectable_value(&mut s.colours.colormap, c, c.name());
                }
            });
        let before = s.colours.range_mode;
        egui::ComboBox::from_label("Range")
            .selected_text(s.colours.range_mode.label())
            .show_ui(ui, |ui| {
                for r in RangeMode::ALL {
                    ui.selectable_value(&mut s.colours.range_mode, r, r.label());
                }
            });
        if s.colours.range_mode != before {
            if s.colours.range_mode == RangeMode::Locked {
                // lock what is shown now
                s.colours.locked_range = match self.colouring.as_ref().map(|c| &c.legend) {
                    Some(Legend::Colorbar { range, .. }) => Some(*range),
                    _ => None,
                };
            }
            if s.colours.range_mode == RangeMode::Manual
                && let Some(Legend::Colorbar { range, .. }) =
                    self.colouring.as_ref().map(|c| &c.legend)
            {
                s.colours.manual_range = *range;
            }
        }
        match s.colours.range_mode {
            RangeMode::Manual => {
                ui.horizontal(|ui| {
                    let l = ui.label("min");
                    ui.add(egui::DragValue::new(&mut s.colours.manual_range.0).speed(0.01))
                        .labelled_by(l.id);
                    let l = ui.label("max");
                    ui.add(egui::DragValue::new(&mut s.colours.manual_range.1).speed(0.01))
                        .labelled_by(l.id);
                });
            }
            RangeMode::Locked => {
                if let Some((lo, hi)) = s.colours.locked_range {
                    ui.weak(format!("locked at {lo:.4} ... {hi:.4}"));
                }
            }
            _ => {}
        }
        ui.checkbox(&mut s.point_size_world, "point size in world units");
        if s.point_size_world {
            // a fixed, logarithmic range: never derived from a raw bounding box (one outlier
            // would make the slider useless)
            ui.add(
                egui::Slider::new(&mut s.point_radius_world, 0.0005..=0.2)
                    .logarithmic(true)
                    .text("point radius (world)"),
            );
        } else {
            ui.add(egui::Slider::new(&mut s.point_radius, 0.5..=20.0).text("point size (px)"));
        }
        egui::ComboBox::from_label("Up axis")
            .selected_text(s.up.label())
            .show_ui(ui, |ui| {
                for u in UpAxis::ALL {
                    ui.selectable_value(&mut s.up, u, u.label());
                }
            });
        ui.checkbox(&mut s.show_legend, "show colorbar / legend");
        ui.checkbox(&mut s.screenshot_view_only, "screenshots (P): 3D view only")
            .on_hover_text(
                "crop P screenshots to the 3D view (with its legend), without the panels",
            );
        ui.checkbox(
            &mut s.screenshot_transparent,
            "screenshots (P): transparent background",
        )
        .on_hover_text("the 3D view alone, background alpha 0 (for figures)");
        if let Some(note) = self.colouring.as_ref().and_then(|c| c.note.clone()) {
            ui.weak(note);
        }
    }

    fn scales_ui(&mut self, ui: &mut egui::Ui) {
        let scales = self.shown_scales().cloned();
        let s = &mut self.settings;
        let blocks = scales.as_ref().map_or(0, |s| s.num_blocks());
        egui::ComboBox::from_label("Block")
            .selected_text(s.colours.block.label())
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut s.colours.block, BlockSelect::Mean, "mean over blocks");
                ui.selectable_value(&mut s.colours.block, BlockSelect::Max, "max over blocks");
                for b in 0..blocks.max(12) {
                    ui.selectable_value(
                        &mut s.colours.block,
                        BlockSelect::Block(b),
                        format!("block {b}"),
                    );
                }
            });
        egui::ComboBox::from_label("Onto points")
            .selected_text(s.colours.reduction.label())
            .show_ui(ui, |ui| {
                for r in PointReduction::ALL {
                    ui.selectable_value(&mut s.colours.reduction, r, r.label());
                }
            });
        if ui.button("colour by patch membership").clicked() {
            s.colours.colour_by = ColourBy::Patch;
        }
        let Some(scales) = scales else {
            ui.weak(
                if self.analyzer.is_none() && self.run.latest_scales.is_none() {
                    "no model loaded"
                } else {
                    "no scales yet"
                },
            );
            return;
        };
        let prompts = scales.prompt_values(s.colours.block);
        ui.label(format!(
            "{} blocks · {} patches · {} prompts",
            blocks,
            scales.centers.len(),
            prompts.len()
        ));
        egui::CollapsingHeader::new("prompt and cls scales")
            .default_open(false)
            .show(ui, |ui| {
                egui::Grid::new("prompt_cls").striped(true).show(ui, |ui| {
                    ui.strong("block");
                    ui.strong("cls");
                    ui.strong("prompts");
                    ui.end_row();
                    for b in 0..blocks {
                        ui.label(b.to_string());
                        ui.label(scales.cls.get(b).map_or("-".into(), |v| format!("{v:.3}")));
                        let p = scales.prompts.get(b).map_or(String::new(), |row| {
                            row.iter()
                                .map(|v| format!("{v:.2}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        });
                        ui.label(p);
                        ui.end_row();
                    }
                });
            });
    }
}
