//! Issue #15, runs that survive `kill -9` at any moment: the `dapt` binary of this build is
//! SIGKILLed at seeded random moments (with `DAPT_TEST_SLOW_WRITES_MS` stretching every atomic
//! write and commit step, so kills land inside checkpoint writes), continued with `--resume`
//! (or with the original command while not even `config.json` exists) until it finishes, and
//! its `metrics.jsonl`, `state.json` and `last.safetensors` must equal an uninterrupted run's;
//! Ctrl-C (SIGINT) stops at a safe point with exit code 130 and a second one ends the process
//! at once. Every task is covered: classification, part segmentation and pre-training, each
//! with a tiny model so that a whole run takes seconds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// `DAPT_TEST_SLOW_WRITES_MS` of the killed runs and of their reference (whose timings scale
/// the kill delays).
const SLOW_MS: u64 = 30;
/// SIGKILLs planned per run (a few more follow when none landed after the first commit).
const KILLS: usize = 10;
/// No single `dapt` process of these tiny runs may take longer (a hang fails, not blocks).
const PROCESS_LIMIT: Duration = Duration::from_secs(300);
/// How long a signalled process may take to exit.
const SIGNAL_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Task {
    Classification,
    PartSeg,
    Pretrain,
}

impl Task {
    fn command(self) -> &'static str {
        match self {
            Task::Classification => "dapt train",
            Task::PartSeg => "dapt train --task partseg",
            Task::Pretrain => "dapt pretrain",
        }
    }

    fn epochs(self) -> u64 {
        match self {
            Task::Classification => 6,
            Task::PartSeg | Task::Pretrain => 5,
        }
    }

    /// Seed of the kill-delay LCG.
    fn lcg_seed(self) -> u64 {
        match self {
            Task::Classification => 0x15,
            Task::PartSeg => 0x1515,
            Task::Pretrain => 0x151515,
        }
    }

    /// The original command: writes its config file into `cfg_dir`, trains into `out`.
    fn fresh_args(self, cfg_dir: &Path, out: &Path) -> Vec<String> {
        let epochs = self.epochs().to_string();
        let (cfg, mut args, data, seed) = match self {
            // 48 wide, 2 blocks, 8 groups of 8, 32 points; 40 training clouds in 10 steps
            Task::Classification => (
                common::tiny_config(cfg_dir, 10),
                vec!["train"],
                "synthetic:seed=1,train=4,test=2,points=300",
                "3",
            ),
            Task::PartSeg => (
                write_json(cfg_dir.join("partseg.json"), &partseg_config()),
                vec!["train", "--task", "partseg"],
                "synthetic:seed=1,train=2,test=1,points=200",
                "5",
            ),
            Task::Pretrain => (
                write_json(cfg_dir.join("pretrain.json"), &pretrain_config()),
                vec!["pretrain"],
                "synthetic:seed=1,train=2,test=1,points=200",
                "11",
            ),
        };
        if self == Task::PartSeg {
            args.extend(["--lr", "0.002"]);
        }
        let cfg = common::s(&cfg);
        let out = common::s(out);
        args.extend([
            "--config",
            &cfg,
            "--data",
            data,
            "--epochs",
            &epochs,
            "--batch",
            "4",
            "--seed",
            seed,
            "--backend",
            "cpu",
            "--out",
            &out,
            "--json",
        ]);
        args.into_iter().map(String::from).collect()
    }

    fn resume_args(self, out: &Path) -> Vec<String> {
        let out = common::s(out);
        let args: Vec<&str> = match self {
            Task::Classification => vec!["train", "--resume", &out, "--json"],
            Task::PartSeg => vec!["train", "--task", "partseg", "--resume", &out, "--json"],
            Task::Pretrain => vec!["pretrain", "--resume", &out, "--json"],
        };
        args.into_iter().map(String::from).collect()
    }
}

/// A part-segmentation run config (`PartSegTrainConfig` fills what is left out): a 32-wide,
/// 2-block DAPT backbone, 8 groups of 8, 64 points, a 32/16 head.
fn partseg_config() -> Value {
    serde_json::json!({
        "task": "partseg",
        "model": {"kind": "dapt", "trans_dim": 32, "depth": 2, "num_heads": 2,
            "group_size": 8, "num_group": 8, "taps": [0, 1],
            "num_parts": dapt::data::synthetic::num_parts(),
            "num_categories": dapt::data::synthetic::CLASS_NAMES.len(),
            "prop_dim": 32, "head_dims": [32, 16], "drop_path_rate": 0.1, "rank": 4,
            "drop_adapter_rate": 0.0, "npoints": 64},
        "mode": "dapt", "warmup_epochs": 0, "backend": "cpu"
    })
}

/// A pre-training run config (`PretrainConfig` fills the rest): 32 wide, 2 encoder blocks,
/// 1 decoder block, 8 groups of 8, 128 points, one warm-up epoch.
fn pretrain_config() -> Value {
    serde_json::json!({
        "model": {"trans_dim": 32, "depth": 2, "num_heads": 2, "decoder_depth": 1,
            "decoder_num_heads": 2, "group_size": 8, "num_group": 8, "mask_ratio": 0.6,
            "mask_type": "rand", "drop_path_rate": 0.1, "npoints": 128},
        "warmup_epochs": 1, "backend": "cpu"
    })
}

fn write_json(path: PathBuf, v: &Value) -> PathBuf {
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

/// A seeded linear congruential generator for the kill delays.
struct Lcg(u64);

impl Lcg {
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A running `dapt`: stderr is collected by a thread, stdout (when asked for) arrives line by
/// line on a channel, so neither pipe can fill up. Dropping it kills the process.
struct Proc {
    child: Child,
    started: Instant,
    stderr: Option<JoinHandle<String>>,
    stdout: Option<Receiver<String>>,
}

fn spawn(args: &[String], slow_ms: u64, stdout: bool) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dapt"));
    cmd.args(args)
        .env("DAPT_NO_GPU_PROBE", "1")
        .env("CUBECL_AUTOTUNE_LEVEL", "minimal")
        .stdin(Stdio::null())
        .stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    if slow_ms > 0 {
        cmd.env("DAPT_TEST_SLOW_WRITES_MS", slow_ms.to_string());
    } else {
        cmd.env_remove("DAPT_TEST_SLOW_WRITES_MS");
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start dapt {args:?}: {e}"));
    let started = Instant::now();
    let mut err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let stdout = child.stdout.take().map(|out| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    });
    Proc {
        child,
        started,
        stderr: Some(stderr),
        stdout,
    }
}

impl Proc {
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if t.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The whole stderr (once the process has ended).
    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Waits for the process to exit within `limit` (killing it and failing otherwise).
    fn finish(&mut self, limit: Duration, what: &str) -> (ExitStatus, String) {
        match self.wait_for(limit) {
            Some(st) => (st, self.stderr()),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{what}: still running after {limit:?}; stderr:\n{}",
                    self.stderr()
                )
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe(st: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = st.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match st.code() {
        Some(c) => format!("exit code {c}"),
        None => format!("{st}"),
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}: {text:?}", path.display()))
}

/// Every line of `metrics.jsonl`, which must each be whole JSON.
fn read_metrics(run: &Path, ctx: &str) -> Vec<Value> {
    let p = run.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{ctx}\n{}: {e}", p.display()));
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "{ctx}\nmetrics.jsonl line {} is not JSON ({e}): {l:?}",
                    i + 1
                )
            })
        })
        .collect()
}

fn epoch_split(v: &Value) -> (u64, String) {
    (
        v["epoch"].as_u64().unwrap_or(u64::MAX),
        v["split"].as_str().unwrap_or("?").to_string(),
    )
}

/// Fails when an (epoch, split) pair occurs twice.
fn assert_no_repeats(lines: &[Value], ctx: &str) {
    let mut seen = BTreeSet::new();
    for (i, l) in lines.iter().enumerate() {
        let key = epoch_split(l);
        assert!(
            seen.insert(key.clone()),
            "{ctx}\nmetrics.jsonl line {}: epoch {} {} appears a second time (an epoch recorded \
             twice: the lines of a killed attempt were not truncated on --resume); pairs: {:?}",
            i + 1,
            key.0,
            key.1,
            lines.iter().map(epoch_split).collect::<Vec<_>>()
        );
    }
}

/// Equal up to 1e-9 relative for numbers, exactly otherwise.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_value(v, w))
        }
        _ => a == b,
    }
}

fn without_wall_secs(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("wall_secs");
    }
    v
}

/// (dtype, shape, bytes) of every tensor, and the metadata values that are JSON objects.
type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

fn read_safetensors(path: &Path) -> Result<(Tensors, Vec<Value>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not whole safetensors ({e})", path.display()))?;
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            (
                name,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let metas = meta
        .metadata()
        .iter()
        .flatten()
        .filter_map(|(_, v)| serde_json::from_str::<Value>(v).ok())
        .filter(Value::is_object)
        .collect();
    Ok((tensors, metas))
}

/// What a run directory holds at a moment when no process writes to it.
#[derive(Debug)]
struct Observed {
    config: bool,
    /// `epochs_done` of `checkpoints/state.json`.
    committed: Option<u64>,
    /// `checkpoints.prev` or `checkpoints.next` exists: the kill landed inside a commit.
    staging: bool,
    /// A commit existed when the process died (also when `checkpoints/` was renamed away
    /// in the middle of the swap).
    any_commit: bool,
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config.json {}, committed epochs {}{}",
            if self.config { "yes" } else { "no" },
            self.committed.map_or("none".into(), |n| n.to_string()),
            if self.staging {
                ", inside a commit (checkpoints.next/prev present)"
            } else {
                ""
            }
        )
    }
}

/// Looks at the run directory and checks that the committed epoch is one consistent set:
/// whole files, `last.safetensors` of the epoch `state.json` names, the optimizer's step.
fn observe(run: &Path, ctx: &str) -> Observed {
    let ck = run.join("checkpoints");
    let committed = ck.join("state.json").is_file().then(|| {
        let st = read_json(&ck.join("state.json"))
            .unwrap_or_else(|e| panic!("{ctx}\ncheckpoints/state.json is torn: {e}"));
        let n = st["epochs_done"]
            .as_u64()
            .unwrap_or_else(|| panic!("{ctx}\nstate.json without epochs_done: {st}"));
        for f in ["last", "best", "optimizer"] {
            let p = ck.join(format!("{f}.safetensors"));
            let (_, metas) = read_safetensors(&p).unwrap_or_else(|e| {
                panic!("{ctx}\nstate.json says {n} epoch(s) are committed, but {e}")
            });
            for m in &metas {
                if f == "last"
                    && let Some(e) = m.get("epoch").and_then(Value::as_u64)
                {
                    assert_eq!(
                        e + 1,
                        n,
                        "{ctx}\ncheckpoints/last.safetensors holds epoch {e}, state.json says \
                         {n} epoch(s) done: the committed epoch is not one consistent set"
                    );
                }
                if f == "optimizer"
                    && let (Some(a), Some(b)) = (
                        m.get("step").and_then(Value::as_u64),
                        st.get("optimizer_step").and_then(Value::as_u64),
                    )
                {
                    assert_eq!(
                        a, b,
                        "{ctx}\ncheckpoints/optimizer.safetensors is at step {a}, state.json \
                         at {b}: the committed epoch is not one consistent set"
                    );
                }
            }
        }
        n
    });
    let prev = run.join("checkpoints.prev").exists();
    let next = run.join("checkpoints.next").exists();
    Observed {
        config: run.join("config.json").is_file(),
        committed,
        staging: prev || next,
        any_commit: committed.is_some() || run.join("checkpoints.prev/state.json").is_file(),
    }
}

/// What an uninterrupted run left.
struct Reference {
    metrics: Vec<Value>,
    epochs_done: u64,
    best_epoch: Value,
    last: Tensors,
    t_config: Duration,
    t_first_commit: Duration,
    t_total: Duration,
}

/// The uninterrupted run of `task`, made once per test binary and shared by its tests.
fn reference(task: Task) -> &'static Reference {
    static CLS: OnceLock<Reference> = OnceLock::new();
    static SEG: OnceLock<Reference> = OnceLock::new();
    static MAE: OnceLock<Reference> = OnceLock::new();
    let cell = match task {
        Task::Classification => &CLS,
        Task::PartSeg => &SEG,
        Task::Pretrain => &MAE,
    };
    cell.get_or_init(|| run_reference(task))
}

fn run_reference(task: Task) -> Reference {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut p = spawn(&task.fresh_args(dir.path(), &run), SLOW_MS, false);
    let (mut t_config, mut t_first_commit) = (None, None);
    let what = format!("the uninterrupted {} run", task.command());
    let status = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        let t = p.started.elapsed();
        if t_config.is_none() && run.join("config.json").is_file() {
            t_config = Some(t);
        }
        if t_first_commit.is_none() && run.join("checkpoints/state.json").is_file() {
            t_first_commit = Some(t);
        }
        assert!(t < PROCESS_LIMIT, "{what}: still running after {t:?}");
        std::thread::sleep(Duration::from_millis(2));
    };
    let t_total = p.started.elapsed();
    let err = p.stderr();
    assert!(
        status.success(),
        "{what} failed ({}):\n{}",
        describe(&status),
        tail(&err)
    );
    let metrics = read_metrics(&run, &what);
    assert_no_repeats(&metrics, &what);
    assert_eq!(
        metrics.len() as u64,
        2 * task.epochs(),
        "{what}: a train and a test line per epoch"
    );
    let st = read_json(&run.join("checkpoints/state.json")).unwrap();
    let (last, _) = read_safetensors(&run.join("checkpoints/last.safetensors")).unwrap();
    let r = Reference {
        metrics,
        epochs_done: st["epochs_done"].as_u64().unwrap(),
        best_epoch: st["best_epoch"].clone(),
        last,
        t_config: t_config.unwrap_or(t_total / 10),
        t_first_commit: t_first_commit.unwrap_or(t_total / 2),
        t_total,
    };
    assert_eq!(
        r.epochs_done,
        task.epochs(),
        "{what}: state.json epochs_done"
    );
    eprintln!(
        "{what}: {:.2} s (config.json after {:.2} s, first commit after {:.2} s)",
        r.t_total.as_secs_f64(),
        r.t_config.as_secs_f64(),
        r.t_first_commit.as_secs_f64()
    );
    r
}

/// The finished run in `run` equals the reference: the same metrics lines (all but
/// `wall_secs`), no epoch twice, the same `epochs_done` and `best_epoch`, no staging
/// directory left, and the same final weights.
fn assert_matches_reference(run: &Path, r: &Reference, ctx: &str) {
    let got = read_metrics(run, ctx);
    assert_no_repeats(&got, ctx);
    let pairs = |v: &[Value]| v.iter().map(epoch_split).collect::<Vec<_>>();
    assert_eq!(
        got.len(),
        r.metrics.len(),
        "{ctx}\nmetrics.jsonl has {} lines, the uninterrupted run {}:\n got  {:?}\n want {:?}",
        got.len(),
        r.metrics.len(),
        pairs(&got),
        pairs(&r.metrics)
    );
    for (i, (g, w)) in got.iter().zip(&r.metrics).enumerate() {
        let (g, w) = (without_wall_secs(g), without_wall_secs(w));
        assert!(
            same_value(&g, &w),
            "{ctx}\nmetrics.jsonl line {} differs from the uninterrupted run's (wall_secs \
             aside):\n got  {g}\n want {w}",
            i + 1
        );
    }
    let st = read_json(&run.join("checkpoints/state.json"))
        .unwrap_or_else(|e| panic!("{ctx}\nafter the final success: {e}"));
    assert_eq!(
        st["epochs_done"].as_u64(),
        Some(r.epochs_done),
        "{ctx}\nstate.json epochs_done: {st}"
    );
    assert_eq!(
        st["best_epoch"], r.best_epoch,
        "{ctx}\nstate.json best_epoch: {st}"
    );
    for d in ["checkpoints.next", "checkpoints.prev"] {
        assert!(
            !run.join(d).exists(),
            "{ctx}\n{d} is left after the run finished"
        );
    }
    let (last, _) = read_safetensors(&run.join("checkpoints/last.safetensors"))
        .unwrap_or_else(|e| panic!("{ctx}\n{e}"));
    assert_eq!(
        last.keys().collect::<Vec<_>>(),
        r.last.keys().collect::<Vec<_>>(),
        "{ctx}\nlast.safetensors: other tensor names than the uninterrupted run's"
    );
    for (name, (dtype, shape, bytes)) in &last {
        let (wd, ws, wb) = &r.last[name];
        assert_eq!((dtype, shape), (wd, ws), "{ctx}\nlast.safetensors: {name}");
        if bytes == wb {
            continue;
        }
        // bit-identical is expected on the CPU; anything beyond float noise is a real drift
        let f = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        assert_eq!(dtype, "F32", "{ctx}\nlast.safetensors: {name} differs");
        let (a, b) = (f(bytes), f(wb));
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= 1e-6 * scale,
            "{ctx}\nlast.safetensors: {name} differs from the uninterrupted run's by up to \
             {diff:e} (largest magnitude {scale:e})"
        );
    }
}

/// When a kill fires, counted from the start of the process.
enum Trigger {
    After(Duration),
    /// `.1` after the file first appears.
    AfterFile(PathBuf, Duration),
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::After(d) => write!(f, "delay {} ms", d.as_millis()),
            Trigger::AfterFile(p, d) => write!(
                f,
                "{} ms after {} appeared",
                d.as_millis(),
                p.file_name().unwrap_or_default().to_string_lossy()
            ),
        }
    }
}

enum Fired {
    /// SIGKILLed this long after its start.
    Killed(Duration),
    /// Ended on its own before the trigger.
    Exited(ExitStatus),
}

fn fire(p: &mut Proc, trigger: &Trigger) -> Fired {
    let mut armed: Option<Duration> = None;
    loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            return Fired::Exited(st);
        }
        let now = p.started.elapsed();
        let due = match trigger {
            Trigger::After(d) => now >= *d,
            Trigger::AfterFile(path, d) => {
                if armed.is_none() && path.exists() {
                    armed = Some(now);
                }
                armed.is_some_and(|a| now >= a + *d)
            }
        };
        if due || now > PROCESS_LIMIT {
            p.child.kill().unwrap();
            let st = p.child.wait().unwrap();
            if now > PROCESS_LIMIT {
                panic!(
                    "still running after {now:?} (trigger {trigger} never fired); stderr:\n{}",
                    tail(&p.stderr())
                );
            }
            // it may have ended on its own just before the signal
            return if st.success() || st.code().is_some() {
                Fired::Exited(st)
            } else {
                Fired::Killed(now)
            };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Continues the run the way a user would: `--resume RUN` once `config.json` exists;
/// otherwise `--resume` must refuse (with an error, not a crash), and the original command
/// runs again with the same `--out`.
fn start_attempt(task: Task, dir: &Path, run: &Path, log: &mut Vec<String>) -> (Proc, String) {
    if run.join("config.json").is_file() {
        return (
            spawn(&task.resume_args(run), SLOW_MS, false),
            format!("{} --resume", task.command()),
        );
    }
    if run.exists() {
        let mut p = spawn(&task.resume_args(run), 0, false);
        let (st, err) = p.finish(SIGNAL_LIMIT, "--resume of a run without config.json");
        assert!(
            !st.success() && st.code().is_some(),
            "{}\n`{} --resume` of a run directory without config.json should fail with an \
             error, got {}; stderr:\n{}",
            log.join("\n"),
            task.command(),
            describe(&st),
            tail(&err)
        );
        log.push(format!(
            "    no config.json yet: --resume refused ({})",
            err.lines().last().unwrap_or("").trim()
        ));
    }
    (
        spawn(&task.fresh_args(dir, run), SLOW_MS, false),
        format!("{} (original command)", task.command()),
    )
}

/// SIGKILLs a run of `task` ~10 times at seeded moments (one before it writes anything, one
/// between config.json and the first commit, the others anywhere up to the full run time),
/// continues it after each, lets it finish, and compares it with the uninterrupted run.
fn kill_9_then_resume(task: Task) {
    let r = reference(task);
    let epochs = task.epochs();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut lcg = Lcg(task.lcg_seed());
    let t0 = Instant::now();
    let mut log = vec![format!(
        "{}: SIGKILLs with DAPT_TEST_SLOW_WRITES_MS={SLOW_MS}; the uninterrupted run took \
         {:.2} s (config.json after {:.2} s, first commit after {:.2} s)",
        task.command(),
        r.t_total.as_secs_f64(),
        r.t_config.as_secs_f64(),
        r.t_first_commit.as_secs_f64()
    )];
    let (mut before, mut after, mut in_commit) = (0, 0, 0);
    let mut finished = false;
    for n in 0..KILLS + 4 {
        let done = observe(&run, &log.join("\n")).committed.unwrap_or(0);
        let trigger = if n == 0 {
            // very early: before the run has written anything
            Trigger::After(r.t_config.mul_f64(0.3))
        } else if n == 1 {
            // after config.json, before the first epoch is committed
            let gap = r.t_first_commit.saturating_sub(r.t_config);
            Trigger::AfterFile(run.join("config.json"), gap.mul_f64(0.3))
        } else if n < KILLS {
            let left = r
                .t_total
                .mul_f64(epochs.saturating_sub(done) as f64 / epochs as f64)
                .max(r.t_first_commit);
            Trigger::After(left.mul_f64(0.05 + 0.95 * lcg.next_f64()))
        } else if after == 0 {
            // no kill has landed after a commit yet: make one
            let epoch = r.t_total.saturating_sub(r.t_first_commit) / epochs as u32;
            Trigger::AfterFile(
                run.join("checkpoints/state.json"),
                epoch.mul_f64(lcg.next_f64()),
            )
        } else {
            break;
        };
        let (mut p, how) = start_attempt(task, dir.path(), &run, &mut log);
        match fire(&mut p, &trigger) {
            Fired::Killed(at) => {
                let ctx = format!("{}\nkill {n}: {how}, {trigger}", log.join("\n"));
                let obs = observe(&run, &ctx);
                if obs.any_commit {
                    after += 1;
                } else {
                    before += 1;
                }
                if obs.staging {
                    in_commit += 1;
                }
                log.push(format!(
                    "kill {n}: {how}, {trigger}: SIGKILL at {} ms -> {obs}",
                    at.as_millis()
                ));
            }
            Fired::Exited(st) => {
                let err = p.stderr();
                assert!(
                    st.success(),
                    "{}\nattempt {n} ({how}, {trigger}) failed on its own ({}):\n{}",
                    log.join("\n"),
                    describe(&st),
                    tail(&err)
                );
                log.push(format!(
                    "attempt {n}: {how} finished before its kill ({trigger})"
                ));
                finished = true;
                break;
            }
        }
    }
    if !finished {
        let (mut p, how) = start_attempt(task, dir.path(), &run, &mut log);
        let (st, err) = p.finish(PROCESS_LIMIT, &how);
        assert!(
            st.success(),
            "{}\nthe final {how} failed ({}):\n{}",
            log.join("\n"),
            describe(&st),
            tail(&err)
        );
        log.push(format!("final: {how} finished"));
    }
    log.push(format!(
        "{before} kill(s) before the first commit, {after} after, {in_commit} inside a commit; \
         {:.1} s in all",
        t0.elapsed().as_secs_f64()
    ));
    let ctx = log.join("\n");
    eprintln!("{ctx}");
    assert!(
        before >= 1 && after >= 1,
        "{ctx}\nthe schedule should land kills both before and after the first commit"
    );
    assert_matches_reference(&run, r, &ctx);
}

#[cfg(unix)]
fn send_signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill {sig} {pid}: {st}");
}

/// The next stdout line of `p` (a JSON event, or `None` for a plain line) until `want`
/// matches one; fails when the process ends first or `limit` passes.
#[cfg(unix)]
fn wait_for_event(p: &mut Proc, want: impl Fn(&Value) -> bool, limit: Duration, what: &str) {
    use std::sync::mpsc::RecvTimeoutError;
    let deadline = Instant::now() + limit;
    let rx = p.stdout.take().unwrap();
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if serde_json::from_str::<Value>(&line).is_ok_and(|v| want(&v)) {
                    p.stdout = Some(rx);
                    return;
                }
                seen.push(line);
            }
            Err(e) => {
                let why = match e {
                    RecvTimeoutError::Timeout => format!("not within {limit:?}"),
                    RecvTimeoutError::Disconnected => "the process ended first".to_string(),
                };
                let _ = p.child.kill();
                let _ = p.child.wait();
                panic!(
                    "waiting for {what}: {why}; stdout:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    tail(&p.stderr())
                );
            }
        }
    }
}

#[cfg(unix)]
fn is_metrics(v: &Value, epoch: u64, split: &str) -> bool {
    v["event"] == "metrics"
        && v["metrics"]["epoch"].as_u64() == Some(epoch)
        && v["metrics"]["split"] == split
}

/// SIGINT (or SIGTERM, `signal` as `kill` takes it) once epoch 0 is evaluated: the run stops
/// at the next safe point with exit code 130, a committed epoch and its summary; `--resume`
/// then completes it, equal to the reference.
#[cfg(unix)]
fn signal_then_resume(task: Task, signal: &str) {
    let r = reference(task);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut p = spawn(&task.fresh_args(dir.path(), &run), 0, true);
    wait_for_event(
        &mut p,
        |v| is_metrics(v, 0, "test"),
        PROCESS_LIMIT,
        "the test metrics of epoch 0",
    );
    send_signal(p.child.id(), signal);
    let what = format!("{} after SIG{}", task.command(), &signal[1..]);
    let (st, err) = p.finish(SIGNAL_LIMIT, &what);
    let rest: Vec<String> = p.stdout.take().unwrap().into_iter().collect();
    assert_eq!(
        st.code(),
        Some(130),
        "{what}: expected exit code 130, got {}; stderr:\n{}",
        describe(&st),
        tail(&err)
    );
    assert!(
        rest.iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["event"] == "summary"),
        "{what}: no summary event after the stop; the rest of stdout:\n{}",
        rest.join("\n")
    );
    let obs = observe(&run, &what);
    assert!(
        obs.committed.is_some_and(|n| n >= 1),
        "{what}: epoch 0 was evaluated before the signal, so at least one epoch must be \
         committed; found {obs}"
    );
    assert!(!obs.staging, "{what}: a stop at a safe point left {obs}");
    eprintln!("{what}: exit code 130, {obs}");
    let mut p = spawn(&task.resume_args(&run), 0, false);
    let (st, err) = p.finish(PROCESS_LIMIT, "--resume after the signal");
    assert!(
        st.success(),
        "{what}: --resume failed ({}):\n{}",
        describe(&st),
        tail(&err)
    );
    assert_matches_reference(&run, r, &format!("{what}, then --resume"));
}

mod classification {
    use super::*;

    #[test]
    fn kill_9_at_random_moments_then_resume_matches_an_uninterrupted_run() {
        kill_9_then_resume(Task::Classification);
    }

    #[cfg(unix)]
    #[test]
    fn sigint_stops_at_a_safe_point_and_resume_completes() {
        signal_then_resume(Task::Classification, "-INT");
    }

    /// SIGTERM is handled like SIGINT.
    #[cfg(unix)]
    #[test]
    fn sigterm_stops_at_a_safe_point_and_resume_completes() {
        signal_then_resume(Task::Classification, "-TERM");
    }

    /// Two SIGINTs 100 ms apart, sent as epoch 0 is evaluated and committed with every write
    /// and commit step stretched to 8 s: stopping at the next safe point would take far
    /// longer than the 20 s the process gets to exit with 130.
    #[cfg(unix)]
    #[test]
    fn a_second_sigint_ends_at_once() {
        const PAUSE_MS: u64 = 8000;
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let task = Task::Classification;
        let mut p = spawn(&task.fresh_args(dir.path(), &run), PAUSE_MS, true);
        wait_for_event(
            &mut p,
            |v| is_metrics(v, 0, "train"),
            PROCESS_LIMIT,
            "the training metrics of epoch 0",
        );
        send_signal(p.child.id(), "-INT");
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        send_signal(p.child.id(), "-INT");
        let limit = Duration::from_secs(20);
        let (st, err) = p.finish(
            limit,
            &format!(
                "a second SIGINT (DAPT_TEST_SLOW_WRITES_MS={PAUSE_MS}: finishing epoch 0's \
                 commit alone takes several of those pauses)"
            ),
        );
        assert_eq!(
            st.code(),
            Some(130),
            "two SIGINTs: expected exit code 130, got {}; stderr:\n{}",
            describe(&st),
            tail(&err)
        );
        eprintln!(
            "exit code 130 {:.2} s after the second SIGINT; {}",
            t.elapsed().as_secs_f64(),
            observe(&run, "after two SIGINTs")
        );
    }
}

mod partseg {
    use super::*;

    #[test]
    fn kill_9_at_random_moments_then_resume_matches_an_uninterrupted_run() {
        kill_9_then_resume(Task::PartSeg);
    }

    #[cfg(unix)]
    #[test]
    fn sigint_stops_at_a_safe_point_and_resume_completes() {
        signal_then_resume(Task::PartSeg, "-INT");
    }
}

mod pretrain {
    use super::*;

    #[test]
    fn kill_9_at_random_moments_then_resume_matches_an_uninterrupted_run() {
        kill_9_then_resume(Task::Pretrain);
    }

    #[cfg(unix)]
    #[test]
    fn sigint_stops_at_a_safe_point_and_resume_completes() {
        signal_then_resume(Task::Pretrain, "-INT");
    }
}
