//! ScanObjectNN: a `training_*.h5` / `test_*.h5` pair of one variant (OBJ_BG, OBJ_ONLY,
//! PB_T50_RS), named by either file or by the folder holding them.

use std::path::Path;

use super::listing::h5_files;
use super::{Dataset, Sample, memory_sample};
use crate::data::PointCloud;
use crate::data::error::{DataError, Result};
use crate::data::h5::read_h5;

/// ScanObjectNN's 15 classes in label order.
pub const SCANOBJECTNN_CLASSES: [&str; 15] = [
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
    "pillow", "sink", "sofa", "toilet",
];

pub(super) fn open_scanobjectnn(path: &Path) -> Result<Dataset> {
    let train_file = if path.is_file() {
        path.to_path_buf()
    } else {
        let plain = path.join("training_objectdataset.h5");
        if plain.is_file() {
            plain
        } else {
            let found = h5_files(path, "training_");
            match found.len() {
                1 => found.into_iter().next().unwrap_or_default(),
                0 => {
                    return Err(DataError::format(
                        path,
                        "no training_*.h5 file in this folder",
                    ));
                }
                _ => {
                    return Err(DataError::format(
                        path,
                        "several training_*.h5 files; name the one to use",
                    ));
                }
            }
        }
    };
    let fname = train_file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let (train_name, test_name) = if let Some(rest) = fname.strip_prefix("training_") {
        (fname.clone(), format!("test_{rest}"))
    } else if let Some(rest) = fname.strip_prefix("test_") {
        (format!("training_{rest}"), fname.clone())
    } else {
        return Err(DataError::format(
            &train_file,
            "expected a training_*.h5 or test_*.h5 file name",
        ));
    };
    let dir = train_file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let variant = if fname.contains("augmentedrot_scale75") {
        "PB_T50_RS"
    } else if folder.contains("nobg") {
        "OBJ_ONLY"
    } else {
        "OBJ_BG"
    };
    let to_samples = |clouds: Vec<PointCloud>| -> Vec<Sample> {
        clouds.into_iter().map(memory_sample).collect()
    };
    let train = to_samples(read_h5(&dir.join(train_name))?);
    let test = to_samples(read_h5(&dir.join(test_name))?);
    let max = train
        .iter()
        .chain(&test)
        .map(|s| s.label)
        .max()
        .unwrap_or(0);
    let class_names = if max < SCANOBJECTNN_CLASSES.len() {
        SCANOBJECTNN_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..=max).map(|i| format!("class_{i}")).collect()
    };
    Ok(Dataset {
        name: format!("ScanObjectNN {variant}"),
        class_names,
        train,
        test,
        category_parts: None,
        num_parts: None,
        normalize: false,
    })
}
