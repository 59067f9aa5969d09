//! `labels.csv` files (a path, a class and an optional split per row) and the data set they
//! describe; read for class-per-folder sets and ModelNet40 subsets that carry one.

use std::path::{Path, PathBuf};

use super::listing::read_text;
use super::{Sample, file_sample, split_80_20};
use crate::data::error::{DataError, Result};

/// Splits one CSV line, honouring double quotes.
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(ch),
        }
    }
    out.push(cur.trim().to_string());
    out
}

/// A `labels.csv` row: file, class name, split when given.
pub(super) struct CsvRow {
    path: PathBuf,
    class: String,
    split: Option<String>,
}

/// Reads `labels.csv` with a `path` column, a class column (`class`, `coarse_class`,
/// `label` or `category`) and an optional `split`/`official_split` column. Paths are taken
/// relative to the CSV's folder, or to its parent when that is where they resolve (the
/// shared furniture sample writes `cc0-demo/...` inside `cc0-demo/labels.csv`).
pub(super) fn read_labels_csv(csv: &Path) -> Result<Vec<CsvRow>> {
    let text = read_text(csv)?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, head) = lines
        .next()
        .ok_or_else(|| DataError::format(csv, "empty CSV"))?;
    let head: Vec<String> = csv_fields(head.trim_start_matches('\u{feff}'))
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let col = |names: &[&str]| names.iter().find_map(|n| head.iter().position(|h| h == n));
    let pc = col(&["path", "file", "filename"])
        .ok_or_else(|| DataError::format(csv, "no `path` column in the header"))?;
    let cc = col(&["class", "coarse_class", "label", "category"]).ok_or_else(|| {
        DataError::format(
            csv,
            "no class column (class, coarse_class, label or category)",
        )
    })?;
    let sc = col(&["split", "official_split"]);
    let dir = csv.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut base: Option<PathBuf> = None;
    let mut rows = Vec::new();
    for (i, line) in lines {
        let f = csv_fields(line);
        let get = |c: usize| f.get(c).map(String::as_str).unwrap_or("");
        let (rel, class) = (get(pc), get(cc));
        if rel.is_empty() {
            return Err(DataError::format(
                csv,
                format!("line {}: empty path", i + 1),
            ));
        }
        if class.is_empty() {
            // unlabelled rows (the furniture list has many) are not part of the data set
            continue;
        }
        let base = base.get_or_insert_with(|| {
            let parent = dir.parent().map(Path::to_path_buf);
            match parent {
                Some(p) if !dir.join(rel).exists() && p.join(rel).exists() => p,
                _ => dir.clone(),
            }
        });
        rows.push(CsvRow {
            path: base.join(rel),
            class: class.to_string(),
            split: sc
                .map(|c| get(c).to_ascii_lowercase())
                .filter(|s| !s.is_empty()),
        });
    }
    if rows.is_empty() {
        return Err(DataError::format(csv, "no labelled rows"));
    }
    Ok(rows)
}

fn is_test_split(s: &str) -> Option<bool> {
    match s {
        "train" | "trainval" | "training" | "val" | "valid" | "validation" => Some(false),
        "test" | "testing" => Some(true),
        _ => None,
    }
}

/// Turns CSV rows into samples; `names` fixes the class order when given.
pub(super) fn csv_dataset(
    csv: &Path,
    rows: Vec<CsvRow>,
    names: Option<Vec<String>>,
) -> Result<(Vec<String>, Vec<Sample>, Vec<Sample>)> {
    let names = names.unwrap_or_else(|| {
        let mut v: Vec<String> = rows.iter().map(|r| r.class.clone()).collect();
        v.sort();
        v.dedup();
        v
    });
    let mut train = Vec::new();
    let mut test = Vec::new();
    let mut unsplit: Vec<Vec<PathBuf>> = vec![Vec::new(); names.len()];
    for r in rows {
        let label = names.iter().position(|n| *n == r.class).ok_or_else(|| {
            DataError::format(csv, format!("class `{}` is not in the class list", r.class))
        })?;
        match r.split.as_deref() {
            None => unsplit[label].push(r.path),
            Some(s) => match is_test_split(s) {
                Some(true) => test.push(file_sample(r.path, label)),
                Some(false) => train.push(file_sample(r.path, label)),
                None => {
                    return Err(DataError::format(csv, format!("unknown split `{s}`")));
                }
            },
        }
    }
    for (label, files) in unsplit.into_iter().enumerate() {
        split_80_20(files, label, &mut train, &mut test);
    }
    Ok((names, train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_honour_quotes() {
        assert_eq!(
            csv_fields(r#"a/b.obj, chair ,"Chair, ""red""",x"#),
            vec!["a/b.obj", "chair", r#"Chair, "red""#, "x"]
        );
        assert_eq!(csv_fields(""), vec![""]);
    }
}
