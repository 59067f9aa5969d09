//! Patch construction (dapt-spec.md §2.5): FPS centres, k-nearest neighbours, local
//! coordinates. On burn-flex (whose tensors live in host memory) the CPU reference kernels
//! group; on a GPU backend the same selections run as device kernels ([`device`]) inside
//! the forward pass, and centres and memberships are read back only when asked for. Both
//! give the same indices; the tensors built here carry no gradient.

pub mod device;
pub mod select;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::gpu::cpu;
use crate::readback::host_ints;

use super::ModelError;

/// Where a backend groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Host,
    Device,
}

impl Placement {
    /// Host kernels on burn-flex, device kernels on every other backend; `DAPT_GROUPING=host`
    /// keeps a GPU backend on the host kernels (to compare, or to work around a driver).
    pub fn for_device(device: &Device) -> Self {
        let forced_host = std::env::var("DAPT_GROUPING").is_ok_and(|v| v == "host");
        if forced_host || super::on_flex(device) {
            Self::Host
        } else {
            Self::Device
        }
    }

    /// `"host"` or `"device"` (as `dapt bench --json` reports it).
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Device => "device",
        }
    }
}

/// A batch's patches where the network reads them: `[b, g, m, 3]` neighbourhoods and
/// `[b, g, 3]` centres, with the `[b, g, m]` neighbour indices for whoever shows them.
#[derive(Clone, Debug)]
pub struct Patches {
    pub batch: usize,
    pub num_group: usize,
    pub group_size: usize,
    pub placement: Placement,
    pub centers: Tensor<3>,
    pub neighborhoods: Tensor<4>,
    knn_idx: Tensor<3, Int>,
}

impl Patches {
    /// Groups `b` clouds of `n` points (`points` flattened `[b][n]`) for `device`.
    pub fn build(
        points: &[[f32; 3]],
        b: usize,
        n: usize,
        num_group: usize,
        group_size: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        check(points, b, n, group_size)?;
        let placement = Placement::for_device(device);
        if placement == Placement::Host {
            let g = group(points, b, n, num_group, group_size)?;
            return Ok(Self::from_groups(&g, device));
        }
        Ok(Self::on_device(
            &upload(points, b, n, device),
            num_group,
            group_size,
        ))
    }

    /// Host-made groups uploaded to `device`.
    pub fn from_groups(g: &Groups, device: &Device) -> Self {
        let idx: Vec<i64> = g.knn_idx.iter().map(|&i| i as i64).collect();
        Self {
            batch: g.batch,
            num_group: g.num_group,
            group_size: g.group_size,
            placement: Placement::Host,
            centers: g.centers_tensor(device),
            neighborhoods: g.neighborhoods_tensor(device),
            knn_idx: Tensor::from_data(
                TensorData::new(idx, [g.batch, g.num_group, g.group_size]),
                device,
            ),
        }
    }

    /// Groups clouds already on the device (`[b, n, 3]`) with the device kernels.
    pub fn on_device(cloud: &Tensor<3>, num_group: usize, group_size: usize) -> Self {
        let b = cloud.dims()[0];
        let centre_idx = device::fps(cloud, num_group);
        let centers = device::gather_points(cloud, centre_idx);
        let knn_idx = device::knn(cloud, &centers, group_size);
        let m = knn_idx.dims()[2];
        let members = device::gather_points(cloud, knn_idx.clone().reshape([b, num_group * m]));
        let neighborhoods = members.reshape([b, num_group, m, 3])
            - centers
                .clone()
                .reshape([b, num_group, 1, 3])
                .expand([b, num_group, m, 3]);
        Self {
            batch: b,
            num_group,
            group_size: m,
            placement: Placement::Device,
            centers,
            neighborhoods,
            knn_idx,
        }
    }

    /// `[b][g]` centre xyz (a read-back on a GPU).
    pub fn centers_host(&self) -> Vec<[f32; 3]> {
        crate::readback::host_vec(self.centers.clone())
            .chunks_exact(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect()
    }

    /// `[b][g][m]` neighbour xyz minus centre (a read-back on a GPU).
    pub fn neighborhoods_host(&self) -> Vec<[f32; 3]> {
        crate::readback::host_vec(self.neighborhoods.clone())
            .chunks_exact(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect()
    }

    /// `[b][g][m]` neighbour indices into each cloud (a read-back on a GPU).
    pub fn knn_idx_host(&self) -> Vec<usize> {
        host_ints(self.knn_idx.clone())
            .into_iter()
            .map(|i| i.max(0) as usize)
            .collect()
    }

    /// Point indices of each patch of cloud `i` (a read-back on a GPU).
    pub fn members(&self, i: usize) -> Vec<Vec<usize>> {
        let per = self.num_group * self.group_size;
        let idx = self.knn_idx_host();
        idx.get(i * per..(i + 1) * per)
            .unwrap_or_default()
            .chunks(self.group_size.max(1))
            .map(|c| c.to_vec())
            .collect()
    }
}

/// `b` clouds of `n` points (`points` flattened `[b][n]`) as one `[b, n, 3]` tensor.
pub fn upload(points: &[[f32; 3]], b: usize, n: usize, device: &Device) -> Tensor<3> {
    let flat: Vec<f32> = points.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [b, n, 3]), device)
}

/// `points` hold `b` clouds of `n`, enough for groups of `group_size`.
pub fn check(points: &[[f32; 3]], b: usize, n: usize, group_size: usize) -> Result<(), ModelError> {
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
    Ok(())
}

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

/// Groups `b` clouds of `n` points (`points` flattened `[b][n]`) on the host.
pub fn group(
    points: &[[f32; 3]],
    b: usize,
    n: usize,
    num_group: usize,
    group_size: usize,
) -> Result<Groups, ModelError> {
    check(points, b, n, group_size)?;
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
