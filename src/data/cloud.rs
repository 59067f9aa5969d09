//! The point cloud type every reader produces and every consumer takes.

use std::path::PathBuf;

/// One named per-point value (CloudCompare's "scalar field": intensity, curvature,
/// classification, ...), kept as `f32` whatever type the file stored it in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScalarField {
    /// Display name; the PLY reader strips a leading `scalar_` (see `data::ply`).
    pub name: String,
    pub values: Vec<f32>,
}

impl ScalarField {
    pub fn new(name: impl Into<String>, values: Vec<f32>) -> Self {
        Self {
            name: name.into(),
            values,
        }
    }
}

/// Positions plus optional per-point attributes and an optional class label.
///
/// Invariant (checked by [`PointCloud::validate`]): every optional per-point vector has
/// exactly `positions.len()` entries (so has every scalar field), and every coordinate and
/// scalar value is finite.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PointCloud {
    pub positions: Vec<[f32; 3]>,
    pub normals: Option<Vec<[f32; 3]>>,
    /// RGB in 0..=1.
    pub colors: Option<Vec<[f32; 3]>>,
    /// Per-point labels (part ids for segmentation, or any integer scalar field).
    pub labels: Option<Vec<i64>>,
    /// Named per-point scalars (one entry per field, in file order), e.g. intensity.
    pub scalars: Vec<ScalarField>,
    /// Object class index, when the source names one.
    pub class_label: Option<usize>,
    /// Where the cloud came from, for error messages and the app.
    pub source: Option<PathBuf>,
}

impl PointCloud {
    pub fn from_positions(positions: Vec<[f32; 3]>) -> Self {
        Self {
            positions,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Checks the invariants; returns a human-readable problem on failure.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.positions.len();
        if n == 0 {
            return Err("the cloud has no points".into());
        }
        if let Some(i) = self
            .positions
            .iter()
            .position(|p| !p.iter().all(|v| v.is_finite()))
        {
            return Err(format!("point {i} has a NaN or infinite coordinate"));
        }
        let check = |name: &str, len: Option<usize>| match len {
            Some(l) if l != n => Err(format!("{name} has {l} entries for {n} points")),
            _ => Ok(()),
        };
        check("normals", self.normals.as_ref().map(Vec::len))?;
        check("colors", self.colors.as_ref().map(Vec::len))?;
        check("labels", self.labels.as_ref().map(Vec::len))?;
        for f in &self.scalars {
            check(&format!("scalar field {}", f.name), Some(f.values.len()))?;
            if let Some(i) = f.values.iter().position(|v| !v.is_finite()) {
                return Err(format!(
                    "scalar field {} is NaN or infinite at point {i}",
                    f.name
                ));
            }
        }
        Ok(())
    }

    /// Keeps the points at `indices` (in that order, repeats allowed) with all attributes.
    pub fn select(&self, indices: &[usize]) -> Self {
        let pick3 = |v: &Vec<[f32; 3]>| indices.iter().map(|&i| v[i]).collect::<Vec<_>>();
        Self {
            positions: pick3(&self.positions),
            normals: self.normals.as_ref().map(pick3),
            colors: self.colors.as_ref().map(pick3),
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            scalars: self
                .scalars
                .iter()
                .map(|f| ScalarField {
                    name: f.name.clone(),
                    values: indices.iter().map(|&i| f.values[i]).collect(),
                })
                .collect(),
            class_label: self.class_label,
            source: self.source.clone(),
        }
    }

    /// The scalar field called `name`, if the cloud has one.
    pub fn scalar(&self, name: &str) -> Option<&ScalarField> {
        self.scalars.iter().find(|f| f.name == name)
    }

    /// Axis-aligned bounds `(min, max)`; `None` for an empty cloud.
    pub fn bounds(&self) -> Option<([f32; 3], [f32; 3])> {
        let first = *self.positions.first()?;
        let mut lo = first;
        let mut hi = first;
        for p in &self.positions {
            for k in 0..3 {
                lo[k] = lo[k].min(p[k]);
                hi[k] = hi[k].max(p[k]);
            }
        }
        Some((lo, hi))
    }
}
