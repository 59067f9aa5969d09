//! The official YAML configs (`cfgs/*.yaml` of DAPT and Point-MAE) as they are shipped:
//! `_base_` includes resolved the way the official `utils/config.py::merge_new_config` does,
//! and the dataset they name, which decides the official input normalisation (spec §2.1).
//!
//! The official code opens a `_base_` path relative to the working directory, which is the
//! repository root (`_base_: cfgs/dataset_configs/ModelNet40.yaml`). We resolve it relative to
//! the config file's folder and then each folder above it, so `dapt train --config
//! DAPT/cfgs/finetune_modelnet_dapt.yaml` works from anywhere. The included mapping replaces
//! the path under the `_base_` key (`dataset.train._base_.NAME`), exactly as upstream.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::ModelError;

/// Includes deeper than this are a cycle or a mistake.
const MAX_DEPTH: usize = 8;

/// A parsed official config with its includes resolved.
#[derive(Clone, Debug)]
pub struct OfficialYaml {
    pub path: PathBuf,
    pub root: Value,
    /// Includes that could not be found; the path string is kept in their place (a lone
    /// `finetune_*.yaml` copied without `cfgs/dataset_configs/` still trains).
    pub notes: Vec<String>,
}

fn io_err(path: &Path, e: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn parse(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    serde_yaml::from_str(&text)
        .map_err(|e| ModelError::Config(format!("{}: not valid YAML: {e}", path.display())))
}

/// Where an include named in `from` lives: absolute as given, else relative to `from`'s
/// folder or the nearest folder above it that has it.
fn locate(include: &str, from: &Path) -> Option<PathBuf> {
    let p = Path::new(include);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    let start = from.parent().unwrap_or(Path::new("."));
    let start = if start.as_os_str().is_empty() {
        Path::new(".")
    } else {
        start
    };
    let start = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
    start.ancestors().map(|d| d.join(p)).find(|c| c.is_file())
}

fn resolve(
    v: &mut Value,
    file: &Path,
    chain: &mut Vec<PathBuf>,
    notes: &mut Vec<String>,
) -> Result<(), ModelError> {
    let Value::Mapping(map) = v else {
        return Ok(());
    };
    for (key, val) in map.iter_mut() {
        if key.as_str() == Some("_base_")
            && let Some(include) = val.as_str().map(str::to_owned)
        {
            let Some(found) = locate(&include, file) else {
                notes.push(format!(
                    "{}: `_base_: {include}` not found beside the file or in a folder above it; \
                     the dataset is inferred from its name",
                    file.display()
                ));
                continue;
            };
            let canon = std::fs::canonicalize(&found).unwrap_or_else(|_| found.clone());
            if chain.contains(&canon) || chain.len() >= MAX_DEPTH {
                return Err(ModelError::Config(format!(
                    "{}: `_base_: {include}` includes itself (through {})",
                    file.display(),
                    chain
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" -> ")
                )));
            }
            let mut included = parse(&found)?;
            chain.push(canon);
            resolve(&mut included, &found, chain, notes)?;
            chain.pop();
            *val = included;
        } else {
            resolve(val, file, chain, notes)?;
        }
    }
    Ok(())
}

impl OfficialYaml {
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let mut root = parse(path)?;
        let mut notes = Vec::new();
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        resolve(&mut root, path, &mut vec![canon], &mut notes)?;
        Ok(Self {
            path: path.to_path_buf(),
            root,
            notes,
        })
    }

    /// The training split's dataset `NAME` (`ModelNet`, `ScanObjectNN`, `ScanObjectNN_hardest`,
    /// `ModelNetFewShot`, `ShapeNet`...), or the unresolved include's path when it was not found.
    pub fn dataset_name(&self) -> Option<String> {
        dataset_name(&self.root)
    }

    /// The official input normalisation of the dataset the config trains on: ModelNet40
    /// (and its few-shot sets) apply `pc_normalize`, ScanObjectNN feeds raw coordinates.
    pub fn normalization(&self) -> Option<bool> {
        normalization(&self.root)
    }
}

/// See [`OfficialYaml::dataset_name`]; works on any parsed root (resolved or not).
pub fn dataset_name(root: &Value) -> Option<String> {
    let ds = root.get("dataset")?;
    let split = ds.get("train").or_else(|| ds.get("val")).unwrap_or(ds);
    match split.get("_base_") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(b) => b.get("NAME").and_then(Value::as_str).map(str::to_owned),
        None => split.get("NAME").and_then(Value::as_str).map(str::to_owned),
    }
}

/// See [`OfficialYaml::normalization`].
pub fn normalization(root: &Value) -> Option<bool> {
    let name = dataset_name(root)?;
    if name.contains("ScanObjectNN") {
        Some(false)
    } else if name.contains("ModelNet") {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    const FINETUNE: &str = "dataset: {\n  train: { _base_: cfgs/dataset_configs/ScanObjectNN_objectbg.yaml,\n           others: { subset: 'train' } },\n  val: { _base_: cfgs/dataset_configs/ScanObjectNN_objectbg.yaml,\n         others: { subset: 'test' } } }\nmodel: { NAME: PointTransformer_DAPT }\nnpoints: 2048\n";

    #[test]
    fn official_layout_resolves_from_the_repository_root() {
        let d = tempfile::tempdir().unwrap();
        let cfg = write(
            d.path(),
            "DAPT/cfgs/finetune_scan_objbg_dapt.yaml",
            FINETUNE,
        );
        write(
            d.path(),
            "DAPT/cfgs/dataset_configs/ScanObjectNN_objectbg.yaml",
            "NAME: ScanObjectNN\nROOT: data/ScanObjectNN/main_split\n",
        );
        let y = OfficialYaml::read(&cfg).unwrap();
        assert!(y.notes.is_empty(), "{:?}", y.notes);
        let base = &y.root["dataset"]["train"]["_base_"];
        assert_eq!(base["ROOT"].as_str(), Some("data/ScanObjectNN/main_split"));
        assert_eq!(
            y.root["dataset"]["train"]["others"]["subset"].as_str(),
            Some("train")
        );
        assert_eq!(y.dataset_name().as_deref(), Some("ScanObjectNN"));
        assert_eq!(y.normalization(), Some(false));
    }

    #[test]
    fn include_beside_the_file_and_nested_includes() {
        let d = tempfile::tempdir().unwrap();
        let cfg = write(
            d.path(),
            "my/run.yaml",
            "dataset: { train: { _base_: base.yaml } }\n",
        );
        write(d.path(), "my/base.yaml", "_base_: inner.yaml\nX: 1\n");
        write(d.path(), "my/inner.yaml", "NAME: ModelNet\n");
        let y = OfficialYaml::read(&cfg).unwrap();
        let b = &y.root["dataset"]["train"]["_base_"];
        assert_eq!(b["X"].as_u64(), Some(1));
        assert_eq!(b["_base_"]["NAME"].as_str(), Some("ModelNet"));
    }

    #[test]
    fn missing_include_is_a_note_and_the_name_still_decides() {
        let d = tempfile::tempdir().unwrap();
        let cfg = write(
            d.path(),
            "alone.yaml",
            "dataset: { train: { _base_: cfgs/dataset_configs/ModelNet40.yaml } }\n",
        );
        let y = OfficialYaml::read(&cfg).unwrap();
        assert_eq!(y.notes.len(), 1);
        assert!(y.notes[0].contains("ModelNet40.yaml"), "{}", y.notes[0]);
        assert_eq!(y.normalization(), Some(true));
    }

    #[test]
    fn a_cycle_is_an_error_naming_the_files() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.yaml", "k: { _base_: b.yaml }\n");
        write(d.path(), "b.yaml", "k: { _base_: a.yaml }\n");
        let e = OfficialYaml::read(&a).unwrap_err().to_string();
        assert!(e.contains("includes itself") && e.contains("a.yaml"), "{e}");
    }

    #[test]
    fn bad_yaml_in_an_include_names_the_include() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.yaml", "k: { _base_: b.yaml }\n");
        write(d.path(), "b.yaml", "k: [unclosed\n");
        let e = OfficialYaml::read(&a).unwrap_err().to_string();
        assert!(e.contains("b.yaml"), "{e}");
    }
}
