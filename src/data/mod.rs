//! Point clouds, file readers, data sets, sampling, normalisation, augmentation and the
//! built-in synthetic shape set.

pub mod cloud;
pub mod rng;

pub use cloud::PointCloud;
pub use rng::Rng;
