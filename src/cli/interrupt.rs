//! Ctrl-C (SIGINT) and SIGTERM for the training commands: the first asks the run to stop at
//! its next safe point, exactly like the app's Stop button (the last completed epoch is
//! already committed); a second ends the process at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Exit status of a run the user interrupted (128 + SIGINT, the shell's convention).
pub const EXIT_INTERRUPTED: i32 = 130;

/// A run stopped by the user: not a failure of the run, but not a finished one either.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; the last completed epoch is saved: continue with `{resume}`")]
pub struct Interrupted {
    pub resume: String,
}

/// The stop flag a training command passes to the driver, set by the first Ctrl-C. Only the
/// first call in a process installs the handler; later calls get the same flag.
pub fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    Arc::clone(FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&flag);
        let presses = AtomicUsize::new(0);
        let installed = ctrlc::set_handler(move || {
            if presses.fetch_add(1, Ordering::SeqCst) == 0 {
                f.store(true, Ordering::SeqCst);
                eprintln!(
                    "\ninterrupt: stopping after the current step; the last completed epoch is \
                     saved (press Ctrl-C again to quit at once)"
                );
            } else {
                eprintln!("\ninterrupt: quitting now");
                std::process::exit(EXIT_INTERRUPTED);
            }
        });
        if let Err(e) = installed {
            // without the handler Ctrl-C still ends the process; resume still works
            eprintln!("warning: Ctrl-C will not stop at a safe point: {e}");
        }
        flag
    }))
}

/// Runs a training job of any task with the Ctrl-C stop flag, its events printed by
/// `report` on a thread of their own (progress bars redraw while the job computes).
pub fn run_reported<S>(
    json: bool,
    report: fn(std::sync::mpsc::Receiver<crate::train::TrainEvent>, bool),
    job: impl FnOnce(
        std::sync::mpsc::Sender<crate::train::TrainEvent>,
        Arc<AtomicBool>,
    ) -> Result<S, crate::train::TrainError>,
) -> anyhow::Result<S> {
    let stop = stop_flag();
    let (tx, rx) = std::sync::mpsc::channel();
    let printer = std::thread::spawn(move || report(rx, json));
    let result = job(tx, stop);
    let _ = printer.join();
    Ok(result?)
}

/// The error a stopped run's command ends with, after its summary is printed.
pub fn interrupted(command: &str, run_dir: &std::path::Path) -> anyhow::Error {
    Interrupted {
        resume: format!("{command} --resume {}", run_dir.display()),
    }
    .into()
}
