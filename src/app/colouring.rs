//! "Colour by": turns a cloud (+ analysis / scales) into per-point colours and the legend
//! that explains them (colorbar with numbers, or class / part entries with names and counts).
//!
//! Scalar fields of the file (intensity, curvature, ...; see `data::ply`) are one mode,
//! [`ColourBy::Scalar`], plus the field's name in [`ColourSettings::scalar_field`], so the
//! mode stays a small `Copy` enum for the keymap and the CLI while the menu lists one
//! "Scalar: <name>" entry per field of the loaded cloud.

use serde::{Deserialize, Serialize};

use super::analysis::{BlockSelect, CloudAnalysis, PointReduction, ScaleData};
use crate::data::PointCloud;
use crate::data::cloud::ScalarField;
use crate::render::camera::UpAxis;
use crate::render::colormap::{self, Colormap};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum ColourBy {
    Rgb,
    #[default]
    Height,
    Truth,
    Prediction,
    Error,
    Scale,
    Patch,
    /// Normal direction as RGB (|n| mapped from [-1, 1]).
    Normals,
    /// The x coordinate.
    X,
    /// The z coordinate (the depth axis with +Y up, the height with +Z up).
    Z,
    /// A named per-point scalar field of the file ([`ColourSettings::scalar_field`]).
    Scalar,
}

impl ColourBy {
    /// The modes every cloud offers; [`ColourBy::Scalar`] is listed once per field of the
    /// loaded cloud instead (see [`scalar_menu`]).
    pub const ALL: [ColourBy; 10] = [
        ColourBy::Rgb,
        ColourBy::Height,
        ColourBy::X,
        ColourBy::Z,
        ColourBy::Normals,
        ColourBy::Truth,
        ColourBy::Prediction,
        ColourBy::Error,
        ColourBy::Scale,
        ColourBy::Patch,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ColourBy::Rgb => "RGB",
            ColourBy::Height => "height",
            ColourBy::Truth => "ground-truth class / part",
            ColourBy::Prediction => "predicted class / part",
            ColourBy::Error => "error (correct vs wrong)",
            ColourBy::Scale => "dynamic scale",
            ColourBy::Patch => "patch membership",
            ColourBy::Normals => "normals",
            ColourBy::X => "x coordinate",
            ColourBy::Z => "z coordinate",
            ColourBy::Scalar => "scalar field",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeMode {
    /// min..max of the current values
    Auto,
    /// 2nd..98th percentile of the current values
    #[default]
    Robust,
    Manual,
    /// frozen: kept across samples and epochs so colours stay comparable
    Locked,
}

impl RangeMode {
    pub const ALL: [RangeMode; 4] = [
        RangeMode::Auto,
        RangeMode::Robust,
        RangeMode::Manual,
        RangeMode::Locked,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RangeMode::Auto => "auto (min-max)",
            RangeMode::Robust => "robust (2-98 %)",
            RangeMode::Manual => "manual",
            RangeMode::Locked => "locked",
        }
    }
}

/// Everything that decides the colours, besides the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ColourSettings {
    pub colour_by: ColourBy,
    pub colormap: Colormap,
    pub range_mode: RangeMode,
    pub manual_range: (f32, f32),
    /// The frozen range of [`RangeMode::Locked`]; taken from the data when first locked.
    pub locked_range: Option<(f32, f32)>,
    pub block: BlockSelect,
    pub reduction: PointReduction,
    /// The field shown by [`ColourBy::Scalar`]; `None` (or a name the cloud lacks) means
    /// its first field, so switching between files with different fields still colours.
    pub scalar_field: Option<String>,
}

impl Default for ColourSettings {
    fn default() -> Self {
        Self {
            colour_by: ColourBy::Height,
            colormap: Colormap::Viridis,
            range_mode: RangeMode::Robust,
            manual_range: (0.0, 1.0),
            locked_range: None,
            block: BlockSelect::Mean,
            reduction: PointReduction::Max,
            scalar_field: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LegendEntry {
    pub name: String,
    pub color: [u8; 4],
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Legend {
    None,
    Colorbar {
        title: String,
        colormap: Colormap,
        range: (f32, f32),
        mode: RangeMode,
    },
    Classes {
        title: String,
        entries: Vec<LegendEntry>,
    },
}

#[derive(Clone, Debug)]
pub struct Colouring {
    pub colors: Vec<[u8; 4]>,
    pub legend: Legend,
    /// Why the colouring could not be applied (points are drawn grey), e.g. "no model loaded".
    pub note: Option<String>,
    /// The per-point scalar behind a colorbar (for hover read-outs).
    pub values: Option<Vec<f32>>,
}

pub const NEUTRAL: [u8; 4] = [128, 128, 128, 255];
pub const CORRECT: [u8; 4] = [60, 180, 90, 255];
pub const WRONG: [u8; 4] = [220, 50, 50, 255];

/// Inputs of a colouring besides the settings.
pub struct ColourInputs<'a> {
    pub cloud: &'a PointCloud,
    pub analysis: Option<&'a CloudAnalysis>,
    /// Scales to show (from the analysis, or from a training snapshot when following training).
    pub scales: Option<&'a ScaleData>,
    pub up: UpAxis,
    /// Names for part / class ids, when known.
    pub class_names: &'a [String],
}

pub fn colour(inputs: &ColourInputs, settings: &mut ColourSettings) -> Colouring {
    let cloud = inputs.cloud;
    let n = cloud.len();
    let grey = |note: &str| Colouring {
        colors: vec![NEUTRAL; n],
        legend: Legend::None,
        note: Some(note.to_string()),
        values: None,
    };
    let name_of = |id: i64| -> String {
        usize::try_from(id)
            .ok()
            .and_then(|i| inputs.class_names.get(i))
            .cloned()
            .unwrap_or_else(|| format!("label {id}"))
    };
    let part_name = |id: i64| format!("part {id}");
    match settings.colour_by {
        ColourBy::Rgb => match &cloud.colors {
            Some(c) => Colouring {
                colors: c.iter().map(|&rgb| colormap::to_u8(rgb)).collect(),
                legend: Legend::None,
                note: None,
                values: None,
            },
            None => grey("this file has no RGB colours"),
        },
        ColourBy::Height => {
            let axis = match inputs.up {
                UpAxis::PlusY => 1,
                UpAxis::PlusZ => 2,
            };
            let values: Vec<f32> = cloud.positions.iter().map(|p| p[axis]).collect();
            scalar(values, settings, "height")
        }
        ColourBy::X | ColourBy::Z => {
            let (axis, title) = if settings.colour_by == ColourBy::X {
                (0, "x")
            } else {
                (2, "z")
            };
            let values: Vec<f32> = cloud.positions.iter().map(|p| p[axis]).collect();
            scalar(values, settings, title)
        }
        ColourBy::Scalar => match shown_scalar(cloud, settings) {
            Some(f) => {
                let title = f.name.clone();
                scalar(f.values.clone(), settings, &title)
            }
            None => grey("this file has no scalar fields"),
        },
        ColourBy::Normals => match &cloud.normals {
            Some(nrm) => Colouring {
                colors: nrm
                    .iter()
                    .map(|n| {
                        colormap::to_u8([0.5 + 0.5 * n[0], 0.5 + 0.5 * n[1], 0.5 + 0.5 * n[2]])
                    })
                    .collect(),
                legend: Legend::None,
                note: None,
                values: None,
            },
            None => grey("this file has no normals"),
        },
        ColourBy::Scale => match inputs.scales.filter(|s| s.num_blocks() > 0) {
            Some(scales) => {
                let values =
                    scales.point_values(&cloud.positions, settings.block, settings.reduction);
                let title = format!("dynamic scale, {}", settings.block.label());
                scalar(values, settings, &title)
            }
            None => grey(if inputs.analysis.is_none() {
                "no model loaded: no dynamic scales"
            } else {
                "the model reported no dynamic scales"
            }),
        },
        ColourBy::Truth => {
            if let Some(labels) = &cloud.labels {
                categorical(labels, "ground truth (part)", &part_name)
            } else if let Some(c) = cloud.class_label {
                categorical(&vec![c as i64; n], "ground truth (class)", &name_of)
            } else {
                grey("this file has no ground-truth labels")
            }
        }
        ColourBy::Prediction => match inputs.analysis {
            None => grey("no model loaded"),
            Some(a) => {
                if let Some(parts) = &a.part_pred {
                    let ids: Vec<i64> = parts.iter().map(|&p| p as i64).collect();
                    categorical(&ids, "prediction (part)", &part_name)
                } else if let Some(c) = a.predicted_class() {
                    categorical(&vec![c as i64; n], "prediction (class)", &name_of)
                } else {
                    grey("the model returned no prediction")
                }
            }
        },
        ColourBy::Error => {
            let Some(a) = inputs.analysis else {
                return grey("no model loaded");
            };
            let correct: Option<Vec<bool>> = match (&cloud.labels, &a.part_pred) {
                (Some(l), Some(p)) if l.len() == p.len() => {
                    Some(l.iter().zip(p).map(|(&l, &p)| l == p as i64).collect())
                }
                _ => match (cloud.class_label, a.predicted_class()) {
                    (Some(t), Some(p)) => Some(vec![t == p; n]),
                    _ => None,
                },
            };
            match correct {
                None => grey("error needs ground-truth labels and a prediction"),
                Some(ok) => {
                    let right = ok.iter().filter(|&&b| b).count();
                    Colouring {
                        colors: ok
                            .iter()
                            .map(|&b| if b { CORRECT } else { WRONG })
                            .collect(),
                        legend: Legend::Classes {
                            title: "error".into(),
                            entries: vec![
                                LegendEntry {
                                    name: "correct".into(),
                                    color: CORRECT,
                                    count: right,
                                },
                                LegendEntry {
                                    name: "wrong".into(),
                                    color: WRONG,
                                    count: n - right,
                                },
                            ],
                        },
                        note: None,
                        values: None,
                    }
                }
            }
        }
        ColourBy::Patch => match inputs.scales.filter(|s| !s.groups.is_empty()) {
            None => grey("no patches: no model loaded"),
            Some(s) => {
                let mut ids = vec![-1i64; n];
                for (k, g) in s.groups.iter().enumerate() {
                    for &i in g {
                        if let Some(slot) = ids.get_mut(i)
                            && *slot < 0
                        {
                            *slot = k as i64;
                        }
                    }
                }
                let colors = ids
                    .iter()
                    .map(|&k| {
                        if k < 0 {
                            NEUTRAL
                        } else {
                            colormap::to_u8(colormap::categorical(k as usize))
                        }
                    })
                    .collect();
                Colouring {
                    colors,
                    legend: Legend::None,
                    note: Some(format!(
                        "{} patches (first containing patch)",
                        s.groups.len()
                    )),
                    values: None,
                }
            }
        },
    }
}

/// The field [`ColourBy::Scalar`] shows on `cloud`: the chosen one, else the first.
pub fn shown_scalar<'a>(
    cloud: &'a PointCloud,
    settings: &ColourSettings,
) -> Option<&'a ScalarField> {
    settings
        .scalar_field
        .as_deref()
        .and_then(|name| cloud.scalar(name))
        .or_else(|| cloud.scalars.first())
}

/// Menu text of a scalar field's colouring mode.
pub fn scalar_mode_label(name: &str) -> String {
    format!("Scalar: {name}")
}

/// The "Colour by" menu's text for the current mode on `cloud` (the field's name for
/// [`ColourBy::Scalar`], so the menu says which field is shown).
pub fn mode_label(settings: &ColourSettings, cloud: Option<&PointCloud>) -> String {
    match (
        settings.colour_by,
        cloud.and_then(|c| shown_scalar(c, settings)),
    ) {
        (ColourBy::Scalar, Some(f)) => scalar_mode_label(&f.name),
        (by, _) => by.label().to_string(),
    }
}

/// Names of the scalar fields to offer as colouring modes, in file order.
pub fn scalar_menu(cloud: Option<&PointCloud>) -> Vec<String> {
    cloud
        .map(|c| c.scalars.iter().map(|f| f.name.clone()).collect())
        .unwrap_or_default()
}

fn categorical(labels: &[i64], title: &str, name_of: &dyn Fn(i64) -> String) -> Colouring {
    let color_of = |l: i64| colormap::to_u8(colormap::categorical(l.rem_euclid(1 << 20) as usize));
    let mut counts: std::collections::BTreeMap<i64, usize> = Default::default();
    for &l in labels {
        *counts.entry(l).or_default() += 1;
    }
    Colouring {
        colors: labels.iter().map(|&l| color_of(l)).collect(),
        legend: Legend::Classes {
            title: title.into(),
            entries: counts
                .into_iter()
                .map(|(l, count)| LegendEntry {
                    name: name_of(l),
                    color: color_of(l),
                    count,
                })
                .collect(),
        },
        note: None,
        values: None,
    }
}

fn scalar(values: Vec<f32>, settings: &mut ColourSettings, title: &str) -> Colouring {
    let range = value_range(&values, settings);
    let colors = values
        .iter()
        .map(|&v| {
            if v.is_finite() {
                settings.colormap.sample_u8(colormap::normalize(v, range))
            } else {
                NEUTRAL
            }
        })
        .collect();
    Colouring {
        colors,
        legend: Legend::Colorbar {
            title: title.into(),
            colormap: settings.colormap,
            range,
            mode: settings.range_mode,
        },
        note: None,
        values: Some(values),
    }
}

/// The range for `values` under the settings' mode; locking stores the range it locks.
pub fn value_range(values: &[f32], settings: &mut ColourSettings) -> (f32, f32) {
    let robust = || percentile_range(values, 0.02, 0.98);
    match settings.range_mode {
        RangeMode::Auto => percentile_range(values, 0.0, 1.0),
        RangeMode::Robust => robust(),
        RangeMode::Manual => settings.manual_range,
        RangeMode::Locked => *settings.locked_range.get_or_insert_with(robust),
    }
}

/// Quantiles `lo`..`hi` of the finite values; (0, 1) when there are none.
pub fn percentile_range(values: &[f32], lo: f32, hi: f32) -> (f32, f32) {
    let mut v: Vec<f32> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    v.sort_by(f32::total_cmp);
    let at = |q: f32| v[((v.len() - 1) as f32 * q).round() as usize];
    (at(lo), at(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud() -> PointCloud {
        let mut c = PointCloud::from_positions((0..100).map(|i| [0.0, i as f32, 0.0]).collect());
        c.labels = Some((0..100).map(|i| (i % 3) as i64).collect());
        c
    }

    fn inputs(c: &PointCloud) -> ColourInputs<'_> {
        ColourInputs {
            cloud: c,
            analysis: None,
            scales: None,
            up: UpAxis::PlusY,
            class_names: &[],
        }
    }

    #[test]
    fn normals_and_axis_colourings() {
        let mut c = cloud();
        let mut s = ColourSettings {
            colour_by: ColourBy::Normals,
            ..Default::default()
        };
        let grey = colour(&inputs(&c), &mut s);
        assert!(grey.note.is_some(), "no normals: a note, not colours");
        c.normals = Some(vec![[1.0, 0.0, -1.0]; 100]);
        let col = colour(&inputs(&c), &mut s);
        assert_eq!(col.colors[0], [255, 128, 0, 255]);
        s.colour_by = ColourBy::X;
        c.positions = (0..100).map(|i| [i as f32, 0.0, 0.0]).collect();
        let col = colour(&inputs(&c), &mut s);
        assert_ne!(col.colors[0], col.colors[99], "x varies along the cloud");
        s.colour_by = ColourBy::Z;
        let col = colour(&inputs(&c), &mut s);
        assert_eq!(col.colors[0], col.colors[99], "z is constant here");
    }

    #[test]
    fn ranges() {
        let mut v: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        v.push(1e9);
        v.push(f32::NAN);
        let mut s = ColourSettings {
            range_mode: RangeMode::Auto,
            ..Default::default()
        };
        assert_eq!(value_range(&v, &mut s), (0.0, 1e9));
        s.range_mode = RangeMode::Robust;
        let (lo, hi) = value_range(&v, &mut s);
        assert!(lo <= 3.0 && hi <= 100.0, "{lo} {hi}");
        s.range_mode = RangeMode::Locked;
        let locked = value_range(&v, &mut s);
        assert_eq!(
            value_range(&[5.0, 6.0], &mut s),
            locked,
            "locked range survives new data"
        );
        s.range_mode = RangeMode::Manual;
        s.manual_range = (-1.0, 1.0);
        assert_eq!(value_range(&v, &mut s), (-1.0, 1.0));
    }

    #[test]
    fn truth_legend_counts_and_missing_model_note() {
        let c = cloud();
        let mut s = ColourSettings {
            colour_by: ColourBy::Truth,
            ..Default::default()
        };
        let out = colour(&inputs(&c), &mut s);
        match out.legend {
            Legend::Classes { entries, .. } => {
                assert_eq!(entries.len(), 3);
                assert_eq!(entries.iter().map(|e| e.count).sum::<usize>(), 100);
            }
            other => panic!("{other:?}"),
        }
        s.colour_by = ColourBy::Prediction;
        let out = colour(&inputs(&c), &mut s);
        assert_eq!(out.note.as_deref(), Some("no model loaded"));
        assert!(out.colors.iter().all(|&c| c == NEUTRAL));
    }

    #[test]
    fn scalar_field_colouring_follows_the_field_with_a_named_colorbar() {
        let mut c = cloud();
        let mut s = ColourSettings {
            colour_by: ColourBy::Scalar,
            range_mode: RangeMode::Auto,
            ..Default::default()
        };
        let out = colour(&inputs(&c), &mut s);
        assert_eq!(out.note.as_deref(), Some("this file has no scalar fields"));
        assert!(out.colors.iter().all(|&c| c == NEUTRAL));
        // values independent of the position: the colours must follow the field, not y
        let intensity: Vec<f32> = (0..100).map(|i| ((i * 37) % 100) as f32 * 0.5).collect();
        c.scalars = vec![
            ScalarField::new("Intensity", intensity.clone()),
            ScalarField::new("curvature", vec![1.0; 100]),
        ];
        let out = colour(&inputs(&c), &mut s);
        let lo = intensity.iter().position(|&v| v == 0.0).unwrap();
        let hi = intensity.iter().position(|&v| v == 49.5).unwrap();
        assert_eq!(out.colors[lo], Colormap::Viridis.sample_u8(0.0));
        assert_eq!(out.colors[hi], Colormap::Viridis.sample_u8(1.0));
        assert_eq!(out.values.as_deref(), Some(&intensity[..]));
        match &out.legend {
            Legend::Colorbar { title, range, .. } => {
                assert_eq!(title, "Intensity", "no field chosen: the first one");
                assert_eq!(*range, (0.0, 49.5));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(mode_label(&s, Some(&c)), "Scalar: Intensity");
        assert_eq!(scalar_menu(Some(&c)), ["Intensity", "curvature"]);
        s.scalar_field = Some("curvature".into());
        let out = colour(&inputs(&c), &mut s);
        assert!(matches!(&out.legend, Legend::Colorbar { title, .. } if title == "curvature"));
        // a constant field maps to the middle of the colormap
        assert_eq!(out.colors[0], Colormap::Viridis.sample_u8(0.5));
        // a field this cloud lacks: its first field, not grey points
        s.scalar_field = Some("gone".into());
        assert_eq!(mode_label(&s, Some(&c)), "Scalar: Intensity");
        s.colour_by = ColourBy::Height;
        assert_eq!(mode_label(&s, Some(&c)), "height");
    }

    #[test]
    fn height_uses_the_colormap_ends() {
        let c = cloud();
        let mut s = ColourSettings {
            range_mode: RangeMode::Auto,
            ..Default::default()
        };
        let out = colour(&inputs(&c), &mut s);
        assert_eq!(out.colors[0], Colormap::Viridis.sample_u8(0.0));
        assert_eq!(out.colors[99], Colormap::Viridis.sample_u8(1.0));
        assert!(matches!(
            out.legend,
            Legend::Colorbar {
                range: (0.0, 99.0),
                ..
            }
        ));
    }
}
