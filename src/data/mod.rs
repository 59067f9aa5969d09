//! Point clouds, file readers, data sets, sampling, normalisation, augmentation and the
//! built-in synthetic shape set (dapt-spec.md §2, architecture.md "Data and formats").

pub mod cloud;
pub mod dataset;
pub mod error;
pub mod fewshot;
pub mod h5;
pub mod io;
pub mod mesh;
pub mod npy;
pub mod pickle;
pub mod ply;
pub mod rng;
pub mod shots;
pub mod synthetic;
pub mod text;
pub mod transform;

pub use cloud::PointCloud;
pub use dataset::{DataSpec, Dataset, Sample, SampleSource, Task};
pub use error::{DataError, Result};
pub use io::{ReadOptions, SUPPORTED_EXTENSIONS, read_cloud};
pub use ply::write_ply;
pub use rng::Rng;
pub use shots::{ShortClass, ShotsError};
pub use synthetic::SyntheticConfig;
