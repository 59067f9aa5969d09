//! Opening a run directory written by `dapt train`, `dapt pretrain` or the run panel: its
//! curves (`metrics.jsonl`), how far it got (`checkpoints/state.json`, `config.json`) and
//! its best checkpoint, so finished CLI runs can be looked at in the app (ux.md #32).

use std::path::{Path, PathBuf};

/// One epoch line of `metrics.jsonl`; pre-training lines have no accuracy.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryPoint {
    pub epoch: usize,
    pub test: bool,
    pub loss: f64,
    pub accuracy: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct OpenedRun {
    pub dir: PathBuf,
    pub points: Vec<HistoryPoint>,
    pub epochs_done: Option<usize>,
    pub total_epochs: Option<usize>,
    pub best_accuracy: Option<f64>,
    pub best_checkpoint: Option<PathBuf>,
    /// A pre-training run (it exports `backbone.safetensors`).
    pub pretrain: bool,
    /// Lines that could not be read (a run killed mid-write leaves a partial last line).
    pub skipped: Vec<String>,
}

impl OpenedRun {
    /// One line for the status: what the run is and how far it got.
    pub fn summary(&self) -> String {
        let mut s = format!("opened {}", self.dir.display());
        match (self.epochs_done, self.total_epochs) {
            (Some(d), Some(t)) => s.push_str(&format!(": {d} of {t} epochs")),
            (Some(d), None) => s.push_str(&format!(": {d} epochs")),
            _ => {}
        }
        if let Some(a) = self.best_accuracy {
            s.push_str(&format!(", best accuracy {:.2} %", 100.0 * a));
        }
        s
    }

    pub fn finished(&self) -> bool {
        matches!((self.epochs_done, self.total_epochs), (Some(d), Some(t)) if d >= t)
    }
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Reads a run directory; errors name the file and the problem.
pub fn read_run(dir: &Path) -> Result<OpenedRun, String> {
    let metrics = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).map_err(|e| {
        if dir.is_dir() {
            format!(
                "{}: {e} (a run directory holds metrics.jsonl, config.json and checkpoints/)",
                metrics.display()
            )
        } else {
            format!("{}: not a directory", dir.display())
        }
    })?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let mut points = Vec::new();
    let mut skipped = Vec::new();
    for (k, &(i, line)) in lines.iter().enumerate() {
        match parse_point(line) {
            Ok(p) => points.push(p),
            // only the last line can be cut short by a killed run; elsewhere it is damage
            Err(e) if k + 1 == lines.len() => skipped.push(format!("line {}: {e}", i + 1)),
            Err(e) => return Err(format!("{} line {}: {e}", metrics.display(), i + 1)),
        }
    }
    let state = read_json(&dir.join("checkpoints/state.json"));
    let config = read_json(&dir.join("config.json"));
    let best = dir.join("checkpoints/best.safetensors");
    Ok(OpenedRun {
        dir: dir.to_path_buf(),
        epochs_done: state
            .as_ref()
            .and_then(|s| s.get("epochs_done")?.as_u64())
            .map(|v| v as usize),
        total_epochs: config
            .as_ref()
            .and_then(|c| c.get("epochs")?.as_u64())
            .map(|v| v as usize),
        best_accuracy: state
            .as_ref()
            .and_then(|s| s.get("best_overall_accuracy")?.as_f64()),
        best_checkpoint: best.is_file().then_some(best),
        pretrain: dir.join("backbone.safetensors").is_file(),
        points,
        skipped,
    })
}

fn parse_point(line: &str) -> Result<HistoryPoint, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let epoch = v
        .get("epoch")
        .and_then(|e| e.as_u64())
        .ok_or("no `epoch`")? as usize;
    let split = v
        .get("split")
        .and_then(|s| s.as_str())
        .ok_or("no `split`")?;
    let loss = v.get("loss").and_then(|l| l.as_f64()).ok_or("no `loss`")?;
    Ok(HistoryPoint {
        epoch,
        test: split != "train",
        loss,
        accuracy: v.get("overall_accuracy").and_then(|a| a.as_f64()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_curves_state_and_tolerates_only_a_cut_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("checkpoints")).unwrap();
        std::fs::write(
            d.join("metrics.jsonl"),
            concat!(
                r#"{"epoch":0,"split":"train","wall_secs":1.0,"lr":0.001,"loss":2.0,"overall_accuracy":0.3,"mean_class_accuracy":0.3}"#,
                "\n",
                r#"{"epoch":0,"split":"test","wall_secs":1.5,"lr":0.001,"loss":1.5,"overall_accuracy":0.4,"mean_class_accuracy":0.4}"#,
                "\n",
                r#"{"epoch":1,"split":"train","wall"#,
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("checkpoints/state.json"),
            r#"{"epochs_done":1,"best_overall_accuracy":0.4}"#,
        )
        .unwrap();
        std::fs::write(d.join("config.json"), r#"{"epochs":3}"#).unwrap();
        let run = read_run(d).unwrap();
        assert_eq!(run.points.len(), 2);
        assert!(run.points[1].test && run.points[1].accuracy == Some(0.4));
        assert_eq!(run.skipped.len(), 1);
        assert_eq!((run.epochs_done, run.total_epochs), (Some(1), Some(3)));
        assert!(!run.finished());
        assert!(
            run.summary()
                .contains("1 of 3 epochs, best accuracy 40.00 %")
        );
        assert!(run.best_checkpoint.is_none());
        assert!(!run.pretrain);

        // pre-training lines have no accuracy
        std::fs::write(
            d.join("metrics.jsonl"),
            r#"{"epoch":0,"split":"train","wall_secs":1.0,"lr":0.001,"loss":0.02}"#,
        )
        .unwrap();
        assert_eq!(read_run(d).unwrap().points[0].accuracy, None);

        // damage before the last line is an error naming the file and line
        std::fs::write(d.join("metrics.jsonl"), "{oops\n{\"epoch\":0}\n").unwrap();
        let e = read_run(d).unwrap_err();
        assert!(e.contains("metrics.jsonl line 1"), "{e}");
        let e = read_run(&d.join("nope")).unwrap_err();
        assert!(e.contains("not a directory"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = read_run(empty.path()).unwrap_err();
        assert!(e.contains("metrics.jsonl"), "{e}");
    }
}
