//! Browsing a data set inside the app: open any `DataSpec` the CLI accepts (`synthetic`,
//! `modelnet40:PATH`, a folder, ...), pick the split, filter by class, step through the
//! samples. Opening and loading run on worker threads; the UI only polls.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use super::worker;
use crate::data::{DataSpec, Dataset, PointCloud, ReadOptions};

#[derive(Default)]
pub struct DatasetBrowser {
    /// The data set as typed (same syntax as `--data`).
    pub spec: String,
    pub dataset: Option<Arc<Dataset>>,
    pub test_split: bool,
    pub class_filter: Option<usize>,
    /// Position within the filtered list.
    pub index: usize,
    pub error: Option<String>,
    opening: Option<Receiver<Result<Dataset, String>>>,
    loading: Option<Receiver<Result<(String, PointCloud), String>>>,
}

impl DatasetBrowser {
    /// Indices into the current split that pass the class filter.
    pub fn filtered(&self) -> Vec<usize> {
        let Some(ds) = &self.dataset else {
            return Vec::new();
        };
        let split = if self.test_split { &ds.test } else { &ds.train };
        split
            .iter()
            .enumerate()
            .filter(|(_, s)| self.class_filter.is_none_or(|c| s.label == c))
            .map(|(i, _)| i)
            .collect()
    }

    pub fn open(&mut self) {
        let text = self.spec.trim().to_string();
        let text = if text.is_empty() {
            "synthetic".to_string()
        } else {
            text
        };
        let (tx, rx) = channel();
        let spawned = worker::spawn(
            "dapt-dataset",
            move || {
                DataSpec::parse(&text)
                    .and_then(|s| s.open())
                    .map_err(|e| e.to_string())
            },
            move |r| {
                let _ = tx.send(r.and_then(|r| r));
            },
        );
        match spawned {
            Ok(_) => {
                self.opening = Some(rx);
                self.error = None;
            }
            Err(e) => self.error = Some(format!("cannot start a loader thread: {e}")),
        }
    }

    /// Loads the sample at the current position on a worker thread.
    pub fn load_current(&mut self) {
        let Some(ds) = self.dataset.clone() else {
            return;
        };
        let list = self.filtered();
        let Some(&i) = list.get(self.index) else {
            return;
        };
        let test = self.test_split;
        let (tx, rx) = channel();
        let job = move || {
            let split = if test { &ds.test } else { &ds.train };
            split
                .get(i)
                .ok_or_else(|| "no such sample".to_string())
                .and_then(|s| {
                    let mut cloud = ds
                        .load(s, &ReadOptions::default())
                        .map_err(|e| e.to_string())?;
                    cloud.class_label = Some(s.label);
                    let class = ds.class_names.get(s.label).cloned().unwrap_or_default();
                    let name = format!(
                        "{} {} #{i} ({class})",
                        ds.name,
                        if test { "test" } else { "train" }
                    );
                    Ok((name, cloud))
                })
        };
        let spawned = worker::spawn("dapt-sample", job, move |r| {
            let _ = tx.send(r.and_then(|r| r));
        });
        match spawned {
            Ok(()) => self.loading = Some(rx),
            Err(e) => self.error = Some(format!("cannot start a loader thread: {e}")),
        }
    }

    /// Polls the workers; returns a loaded sample to show.
    pub fn poll(&mut self) -> Option<(String, PointCloud)> {
        if let Some(rx) = &self.opening
            && let Ok(r) = rx.try_recv()
        {
            self.opening = None;
            match r {
                Ok(ds) => {
                    self.dataset = Some(Arc::new(ds));
                    self.index = 0;
                    self.class_filter = None;
                    self.load_current();
                }
                Err(e) => self.error = Some(e),
            }
        }
        if let Some(rx) = &self.loading
            && let Ok(r) = rx.try_recv()
        {
            self.loading = None;
            match r {
                Ok(sample) => return Some(sample),
                Err(e) => self.error = Some(e),
            }
        }
        None
    }

    pub fn busy(&self) -> bool {
        self.opening.is_some() || self.loading.is_some()
    }

    /// The browser panel; returns a sample to show when one finished loading.
    pub fn ui(&mut self, ui: &mut egui::Ui) -> Option<(String, PointCloud)> {
        ui.horizontal(|ui| {
            ui.add(
                egui::TextEdit::singleline(&mut self.spec)
                    .hint_text("synthetic, modelnet40:PATH, folder:PATH ...")
                    .desired_width(170.0),
            );
            if ui.button("Open set").clicked() {
                self.open();
            }
        });
        if let Some(e) = &self.error {
            ui.colored_label(egui::Color32::from_rgb(230, 120, 110), e);
        }
        if self.busy() {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("loading...");
            });
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(50));
        }
        let Some(ds) = self.dataset.clone() else {
            return self.poll();
        };
        let mut changed = false;
        ui.label(format!(
            "{}: {} train / {} test, {} classes",
            ds.name,
            ds.train.len(),
            ds.test.len(),
            ds.class_names.len()
        ));
        ui.horizontal(|ui| {
            changed |= ui
                .selectable_value(&mut self.test_split, false, "train")
                .changed();
            changed |= ui
                .selectable_value(&mut self.test_split, true, "test")
                .changed();
            let current = self
                .class_filter
                .and_then(|c| ds.class_names.get(c).cloned())
                .unwrap_or_else(|| "all classes".into());
            egui::ComboBox::from_id_salt("dataset-class-filter")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    changed |= ui
                        .selectable_value(&mut self.class_filter, None, "all classes")
                        .changed();
                    for (i, n) in ds.class_names.iter().enumerate() {
                        changed |= ui
                            .selectable_value(&mut self.class_filter, Some(i), n)
                            .changed();
                    }
                });
        });
        let count = self.filtered().len();
        if changed {
            self.index = 0;
        }
        ui.horizontal(|ui| {
            if ui.button("<").clicked() && self.index > 0 {
                self.index -= 1;
                changed = true;
            }
            let max = count.saturating_sub(1);
            if count > 0 {
                changed |= ui
                    .add(egui::Slider::new(&mut self.index, 0..=max).text(format!("of {count}")))
                    .changed();
            } else {
                ui.weak("no samples");
            }
            if ui.button(">").clicked() && self.index < max {
                self.index += 1;
                changed = true;
            }
        });
        if changed && count > 0 {
            self.load_current();
        }
        self.poll()
    }
}
