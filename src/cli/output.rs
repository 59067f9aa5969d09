//! Output conventions shared by the subcommands: JSON lines with `--json`, progress bars only
//! on a terminal, one plain line per epoch otherwise.

use std::io::IsTerminal;
use std::sync::mpsc::Receiver;

use indicatif::{ProgressBar, ProgressStyle};

use crate::train::TrainEvent;
use crate::train::miou::CategoryIou;

pub fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

/// Drains training events until the sender hangs up, printing them as `--json` lines,
/// progress bars (terminal) or plain lines.
pub fn report_events(rx: Receiver<TrainEvent>, json: bool) {
    let tty = std::io::stdout().is_terminal() && !json;
    let mut bar: Option<ProgressBar> = None;
    let mut total_epochs = 0;
    for ev in rx {
        match ev {
            TrainEvent::Started {
                run_dir,
                backend,
                start_epoch,
                total_epochs: t,
                steps_per_epoch,
                trainable_params,
                total_params,
            } => {
                total_epochs = t;
                if json {
                    print_json(
                        &serde_json::json!({"event": "started", "run_dir": run_dir, "backend": backend,
                        "start_epoch": start_epoch, "epochs": t, "steps_per_epoch": steps_per_epoch,
                        "trainable_params": trainable_params, "total_params": total_params}),
                    );
                } else {
                    println!("backend: {backend}");
                    println!(
                        "run: {} | params: {trainable_params} trainable of {total_params} ({:.2}%) | {t} epochs x {steps_per_epoch} steps",
                        run_dir.display(),
                        100.0 * trainable_params as f64 / total_params.max(1) as f64
                    );
                }
            }
            TrainEvent::Step {
                epoch,
                step,
                steps_per_epoch,
                loss,
                accuracy,
                samples_per_sec,
                ..
            } => {
                if tty {
                    let b = bar.get_or_insert_with(|| {
                        let b = ProgressBar::new(steps_per_epoch as u64);
                        b.set_style(
                            ProgressStyle::with_template(
                                "{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                        b
                    });
                    b.set_prefix(format!("epoch {}/{}", epoch + 1, total_epochs));
                    b.set_position(step as u64 + 1);
                    let acc = accuracy
                        .map(|a| format!(" acc {:.1}%", 100.0 * a))
                        .unwrap_or_default();
                    b.set_message(format!(
                        "loss {loss:.4}{acc} {samples_per_sec:.1} samples/s"
                    ));
                }
            }
            TrainEvent::Metrics(m) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                if json {
                    print_json(&serde_json::json!({"event": "metrics", "metrics": m}));
                } else {
                    println!(
                        "epoch {:>3} {:<5} loss {:.4}  acc {:.2}%  mAcc {:.2}%  lr {:.2e}  {:.0}s",
                        m.epoch,
                        m.split,
                        m.loss,
                        100.0 * m.overall_accuracy,
                        100.0 * m.mean_class_accuracy,
                        m.lr,
                        m.wall_secs
                    );
                }
            }
            TrainEvent::CheckpointSaved { kind, path } => {
                if json {
                    print_json(
                        &serde_json::json!({"event": "checkpoint", "kind": kind, "path": path}),
                    );
                }
            }
            TrainEvent::Stopped { epoch } => {
                if json {
                    print_json(&serde_json::json!({"event": "stopped", "epoch": epoch}));
                } else {
                    println!("stopped during epoch {epoch}; the last completed epoch is saved");
                }
            }
            TrainEvent::Finished {
                best_accuracy,
                best_epoch,
                run_dir,
            } => {
                if json {
                    print_json(
                        &serde_json::json!({"event": "finished", "best_overall_accuracy": best_accuracy,
                        "best_epoch": best_epoch, "run_dir": run_dir}),
                    );
                }
            }
            TrainEvent::Failed { message } => {
                if json {
                    print_json(&serde_json::json!({"event": "failed", "error": message}));
                }
            }
            TrainEvent::TokenScales { .. } => {}
            TrainEvent::Note { message } => {
                if json {
                    print_json(&serde_json::json!({"event": "note", "message": message}));
                } else {
                    eprintln!("{message}");
                }
            }
        }
    }
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// An error with its causes, skipping a cause whose text the message already contains (our
/// error types print their source inline, and `{:#}` would repeat it).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// Progress lines for a segmentation run (mIoU instead of class accuracies).
pub fn report_seg_events(rx: Receiver<TrainEvent>, json: bool) {
    for ev in rx {
        match ev {
            TrainEvent::Started {
                run_dir,
                backend,
                total_epochs,
                steps_per_epoch,
                trainable_params,
                total_params,
                ..
            } => {
                if json {
                    print_json(&serde_json::json!({"event": "started", "run_dir": run_dir,
                        "backend": backend, "epochs": total_epochs, "steps_per_epoch": steps_per_epoch,
                        "trainable_params": trainable_params, "total_params": total_params}));
                } else {
                    println!("backend: {backend}");
                    println!(
                        "run: {} | params: {trainable_params} trainable of {total_params} ({:.2}%) | {total_epochs} epochs x {steps_per_epoch} steps",
                        run_dir.display(),
                        100.0 * trainable_params as f64 / total_params.max(1) as f64
                    );
                }
            }
            TrainEvent::Metrics(m) => {
                if json {
                    print_json(&serde_json::json!({"event": "metrics", "metrics": m}));
                } else {
                    println!(
                        "epoch {:>3} {:<5} loss {:.4}  point acc {:.2}%  instance mIoU {:.2}%  class mIoU {:.2}%  lr {:.2e}  {:.0}s",
                        m.epoch,
                        m.split,
                        m.loss,
                        100.0 * m.overall_accuracy,
                        100.0 * m.instance_miou.unwrap_or(0.0),
                        100.0 * m.class_miou.unwrap_or(0.0),
                        m.lr,
                        m.wall_secs
                    );
                }
            }
            TrainEvent::Stopped { epoch } => {
                println!("stopped during epoch {epoch}; the last completed epoch is saved")
            }
            TrainEvent::Failed { message } if json => {
                print_json(&serde_json::json!({"event": "failed", "error": message}))
            }
            _ => {}
        }
    }
}

/// The per-category mIoU table of a segmentation run or evaluation.
pub fn print_seg_table(rows: &[CategoryIou]) {
    if rows.iter().any(|r| r.shapes > 0) {
        println!("per category:");
    }
    for r in rows.iter().filter(|r| r.shapes > 0) {
        println!(
            "  {:<16} {:>5} shapes  mIoU {:.2}%",
            r.name,
            r.shapes,
            100.0 * r.miou.unwrap_or(0.0)
        );
    }
}
