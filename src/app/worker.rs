//! Every thread the app starts goes through [`spawn`]: a panic in a job (a bug, or a library
//! asserting on odd input) must end that job with a message in its panel, not leave the
//! panel waiting on a channel that silently closed, and never take the app down.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `job` on a new thread called `name` and hands its result to `deliver` on that
/// thread: `Ok` with what the job returned, or `Err` with [`panic_message`] when it panicked.
/// `deliver` is where the job's ordinary results already go (usually a channel's sender).
///
/// An `Err` here means the thread could not be started; `job` and `deliver` are then dropped
/// without running.
pub fn spawn<T: 'static>(
    name: &str,
    job: impl FnOnce() -> T + Send + 'static,
    deliver: impl FnOnce(Result<T, String>) + Send + 'static,
) -> std::io::Result<()> {
    let thread = name.to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || deliver(catch(&thread, job)))
        .map(drop)
}

/// Runs `job` here, turning a panic into [`panic_message`]. The job's captures are dropped
/// with the unwind and nothing of them is looked at afterwards, so a half-updated value
/// cannot be observed (the reason `catch_unwind` asks for unwind safety).
pub fn catch<T>(thread: &str, job: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(job)).map_err(|payload| panic_message(thread, payload.as_ref()))
}

/// "internal error in `thread`: `what the panic said`". `panic!` payloads are a `&str` or a
/// `String`; `panic_any` can carry anything else, which has no text to show.
pub fn panic_message(thread: &str, payload: &(dyn Any + Send)) -> String {
    let what = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "a panic without a message"
    };
    format!("internal error in {thread}: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn payloads_become_messages_naming_the_thread() {
        assert_eq!(
            catch("t", || panic!("plain")),
            Err::<(), _>("internal error in t: plain".into())
        );
        let n = 3;
        assert_eq!(
            catch("t", || panic!("formatted {n}")),
            Err::<(), _>("internal error in t: formatted 3".into())
        );
        assert_eq!(
            catch("t", || std::panic::panic_any(42_u8)),
            Err::<(), _>("internal error in t: a panic without a message".into())
        );
        assert_eq!(catch("t", || 7), Ok(7));
    }

    #[test]
    fn a_panicking_thread_still_delivers() {
        let (tx, rx) = channel();
        spawn(
            "dapt-test-worker",
            || -> u32 { panic!("boom") },
            move |r| {
                let _ = tx.send(r);
            },
        )
        .unwrap();
        let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(r, Err("internal error in dapt-test-worker: boom".into()));
    }
}
