//! Standalone wgpu point renderer: point sprites (`shaders/points.wgsl`), a turntable camera and
//! colormaps. It knows nothing about the app's panels or about burn; `callback` is the thin
//! egui-wgpu paint-callback adapter the app uses.

pub mod callback;
pub mod camera;
pub mod colormap;
pub mod points;

pub use callback::{PointsCallback, install};
pub use camera::{Camera, Projector, UpAxis};
pub use colormap::{Colormap, categorical};
pub use points::{FrameParams, PointData, PointRenderer};
