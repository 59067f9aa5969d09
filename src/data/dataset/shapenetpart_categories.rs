//! The ShapeNetPart label space: its 16 object categories and the global ids of each
//! category's parts, shared by the reader, part-segmentation training and the app.

/// The 16 ShapeNetPart categories (in the official label order) and their global part ids.
pub const SHAPENETPART_CATEGORIES: [(&str, &str, &[usize]); 16] = [
    ("Airplane", "02691156", &[0, 1, 2, 3]),
    ("Bag", "02773838", &[4, 5]),
    ("Cap", "02954340", &[6, 7]),
    ("Car", "02958343", &[8, 9, 10, 11]),
    ("Chair", "03001627", &[12, 13, 14, 15]),
    ("Earphone", "03261776", &[16, 17, 18]),
    ("Guitar", "03467517", &[19, 20, 21]),
    ("Knife", "03624134", &[22, 23]),
    ("Lamp", "03636649", &[24, 25, 26, 27]),
    ("Laptop", "03642806", &[28, 29]),
    ("Motorbike", "03790512", &[30, 31, 32, 33, 34, 35]),
    ("Mug", "03797390", &[36, 37]),
    ("Pistol", "03948459", &[38, 39, 40]),
    ("Rocket", "04099429", &[41, 42, 43]),
    ("Skateboard", "04225987", &[44, 45, 46]),
    ("Table", "04379243", &[47, 48, 49]),
];

/// The category index of a name (`chair`, `Chair`), in the table's order.
pub(super) fn shapenetpart_category(name: &str) -> Option<usize> {
    SHAPENETPART_CATEGORIES
        .iter()
        .position(|(n, _, _)| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapenetpart_table_has_50_disjoint_parts() {
        let mut all: Vec<usize> = SHAPENETPART_CATEGORIES
            .iter()
            .flat_map(|(_, _, p)| p.iter().copied())
            .collect();
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
    }
}
