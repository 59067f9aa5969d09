//! Patch construction (dapt-spec.md §2.5): FPS centres, k-nearest neighbours, local
//! coordinates. Index work runs on the host with the CPU reference kernels, so every backend
//! groups identically; the tensors built here carry no gradient.

use burn::tensor::{Device, Tensor, TensorData};

use crate::gpu::cpu;

use super::ModelError;

/// Groups of one batch: centres, neighbour indices and local neighbourhoods.
#[derive(Clone, Debug)]
pub struct Groups {
    pub batch: usize,
    pub num_group: usize,
    pub group_size: usize,
    /// `[b][g]` centre xyz.
    pub centers: Vec<[f32; 3]>,
    /// `[b][g][m]` indices into each cloud, ascending by distance.
    pub knn_idx: Vec<usize>,
    /// `[b][g][m]` neighbour xyz minus centre.
    pub neighborhoods: Vec<[f32; 3]>,
}

/// Groups `b` clouds of `n` points (`points` flattened `[b][n]`).
pub fn group(
    points: &[[f32; 3]],
    b: usize,
    n: usize,
    num_group: usize,
    group_size: usize,
) -> Result<Groups, ModelError> {
    if points.len() != b * n {
        return Err(ModelError::Input(format!(
            "expected {b}x{n} points, got {}",
            points.len()
        )));
    }
    if n < group_size {
        return Err(ModelError::Input(format!(
            "a cloud of {n} points cannot form groups of {group_size}"
        )));
    }
    let mut centers = Vec::with_capacity(b * num_group);
    let mut knn_idx = Vec::with_capacity(b * num_group * group_size);
    let mut neighborhoods = Vec::with_capacity(b * num_group * group_size);
    // (centres, neighbour lists) per cloud
    type CloudGroups = (Vec<[f32; 3]>, Vec<Vec<usize>>);
    let per_cloud: Vec<CloudGroups> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..b)
            .map(|i| {
                let cloud = &points[i * n..(i + 1) * n];
                s.spawn(move || {
                    let idx = cpu::fps(cloud, num_group);
                    let c: Vec<[f32; 3]> = idx.iter().map(|&j| cloud[j]).collect();
                    let nn = cpu::knn(cloud, &c, group_size);
                    (c, nn)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (i, (c, nn)) in per_cloud.into_iter().enumerate() {
        if c.len() != num_group || nn.len() != num_group {
            return Err(ModelError::Input("grouping failed".into()));
        }
        let cloud = &points[i * n..(i + 1) * n];
        for (center, neigh) in c.iter().zip(nn.iter()) {
            for &j in neigh {
                let p = cloud[j];
                neighborhoods.push([p[0] - center[0], p[1] - center[1], p[2] - center[2]]);
                knn_idx.push(j);
            }
        }
        centers.extend(c);
    }
    Ok(Groups {
        batch: b,
        num_group,
        group_size,
        centers,
        knn_idx,
        neighborhoods,
    })
}

impl Groups {
    pub fn centers_tensor(&self, device: &Device) -> Tensor<3> {
        let flat: Vec<f32> = self.centers.iter().flatten().copied().collect();
        Tensor::from_data(
            TensorData::new(flat, [self.batch, self.num_group, 3]),
            device,
        )
    }

    pub fn neighborhoods_tensor(&self, device: &Device) -> Tensor<4> {
        let flat: Vec<f32> = self.neighborhoods.iter().flatten().copied().collect();
        Tensor::from_data(
            TensorData::new(flat, [self.batch, self.num_group, self.group_size, 3]),
            device,
        )
    }

    /// Point indices of each patch of cloud `i`.
    pub fn members(&self, i: usize) -> Vec<Vec<usize>> {
        let per = self.num_group * self.group_size;
        self.knn_idx[i * per..(i + 1) * per]
            .chunks(self.group_size)
            .map(|c| c.to_vec())
            .collect()
    }
}
