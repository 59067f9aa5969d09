//! A panic in one of the app's worker threads ends that job with a message in its panel and
//! leaves the app running: the analysis, background-job and training paths, driven through
//! the UI with egui_kittest (no renderer needed), and the helper they share.
//!
//! The panics below are deliberate; the default hook still prints them to stderr.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dapt::app::training::spawn_training;
use dapt::app::{
    Analyzer, AppOptions, CloudAnalysis, RunSettings, RunStatus, SideTab, StudioApp,
    TrainingHandle, TrainingLauncher,
};
use dapt::data::PointCloud;
use dapt::train::TrainEvent;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

fn cloud(n: usize) -> PointCloud {
    PointCloud::from_positions(
        (0..n)
            .map(|i| {
                let t = i as f32 * 0.1;
                [t.cos(), t.sin(), (i % 7) as f32 * 0.1]
            })
            .collect(),
    )
}

/// TEST DOUBLE: panics on clouds smaller than 100 points (a bug that only some input
/// reaches), answers the others with a fixed prediction.
struct FragileAnalyzer;

impl Analyzer for FragileAnalyzer {
    fn name(&self) -> String {
        "fragile test double".into()
    }

    fn analyze(&self, cloud: &PointCloud) -> Result<CloudAnalysis, String> {
        assert!(
            cloud.len() >= 100,
            "boom in analyze: {} points",
            cloud.len()
        );
        Ok(CloudAnalysis {
            class_names: vec!["ring".into(), "other".into()],
            probabilities: vec![0.9, 0.1],
            centers: vec![cloud.positions[0]],
            groups: vec![(0..cloud.len()).collect()],
            patch_scales: vec![vec![1.0]],
            prompt_scales: vec![vec![0.5]],
            cls_scales: vec![0.1],
            part_pred: None,
        })
    }
}

/// TEST DOUBLE training engine: the app's own training thread ([`spawn_training`], as
/// `EngineLauncher` uses it) running a job that starts and then panics.
struct PanickingLauncher;

impl TrainingLauncher for PanickingLauncher {
    fn start(&self, _: &RunSettings) -> Result<TrainingHandle, String> {
        spawn_training(|tx, _stop| {
            let _ = tx.send(TrainEvent::Started {
                run_dir: "runs/panic".into(),
                backend: "test".into(),
                start_epoch: 0,
                total_epochs: 3,
                steps_per_epoch: 10,
                trainable_params: 1,
                total_params: 2,
            });
            // the sender is still alive here: without the catch the panel would only learn
            // of the end from the closed channel
            panic!("boom in training");
        })
    }
}

fn harness(app: StudioApp) -> Harness<'static, StudioApp> {
    Harness::builder()
        .with_size([1000.0, 900.0])
        .build_ui_state(|ui, app: &mut StudioApp| app.ui_root(ui), app)
}

fn has_label(h: &Harness<'_, StudioApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

/// Steps until `done` holds (bounded), then a few frames more.
fn step_until(h: &mut Harness<'_, StudioApp>, what: &str, done: impl Fn(&StudioApp) -> bool) {
    let t0 = Instant::now();
    while !done(h.state()) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{what}; messages: {:?}",
            h.state().messages
        );
        std::thread::sleep(Duration::from_millis(10));
        h.step();
    }
    h.run_steps(3);
}

#[test]
fn a_panicking_analysis_fails_that_cloud_with_the_message_and_the_next_one_works() {
    let mut app = StudioApp::new(AppOptions {
        analyzer: Some(Arc::new(FragileAnalyzer)),
        ..Default::default()
    });
    app.add_cloud("tiny".into(), cloud(20));
    let mut h = harness(app);
    step_until(&mut h, "the analysis never settled", |a| {
        a.analyses_settled()
    });

    let want = "internal error in dapt-analyze: boom in analyze: 20 points";
    assert!(
        has_label(&h, &format!("analysis failed: {want}")),
        "the prediction panel says why"
    );
    assert!(
        h.state()
            .messages
            .iter()
            .any(|m| m == &format!("analysis of tiny failed: {want}")),
        "{:?}",
        h.state().messages
    );
    assert!(has_label(&h, &format!("analysis of tiny failed: {want}")));

    // the app keeps going: more frames, another cloud analysed by a fresh worker
    let frame = h.state().frame;
    h.run_steps(5);
    assert!(h.state().frame >= frame + 5);
    h.state_mut().add_cloud("ring".into(), cloud(500));
    step_until(&mut h, "the second analysis never settled", |a| {
        a.analyses_settled()
    });
    let shown = h.state().current_cloud().and_then(|c| c.analysis());
    assert_eq!(shown.map(|a| a.probabilities.clone()), Some(vec![0.9, 0.1]));
    assert!(has_label(&h, "ring (500 pts)"));
    assert!(
        has_label(&h, "90.0 %"),
        "the prediction of the good cloud is shown"
    );
}

#[test]
fn a_panicking_background_job_becomes_a_banner_and_frees_the_slot() {
    let mut h = harness(StudioApp::new(AppOptions::default()));
    h.run_steps(2);
    h.state_mut()
        .spawn_panicking_job("loading best.safetensors", "boom in loader");
    assert!(h.state().background_busy());
    step_until(&mut h, "the job never ended", |a| !a.background_busy());
    let want = "loading best.safetensors failed: internal error in dapt-job: boom in loader";
    assert!(
        h.state().messages.iter().any(|m| m == want),
        "{:?}",
        h.state().messages
    );
    assert!(has_label(&h, want));
    assert!(
        !has_label(&h, "loading best.safetensors ..."),
        "no spinner left"
    );

    // the slot is free: the next job runs and reports its own (ordinary) error
    let missing = std::env::temp_dir().join("dapt-app-workers-no-such-model.safetensors");
    h.state_mut().load_model(missing.clone());
    step_until(&mut h, "the second job never ended", |a| {
        !a.background_busy()
    });
    let loaded = format!("could not load the model {}", missing.display());
    assert!(
        h.state().messages.iter().any(|m| m.starts_with(&loaded)),
        "{:?}",
        h.state().messages
    );
    // and the banner can still be dismissed
    let n = h.state().messages.len();
    h.get_all_by_label("Dismiss").next().unwrap().click();
    h.run_steps(2);
    assert_eq!(h.state().messages.len(), n - 1);
}

#[test]
fn a_panicking_training_thread_shows_the_run_as_failed_and_start_works_again() {
    let mut app = StudioApp::new(AppOptions {
        launcher: Some(Arc::new(PanickingLauncher)),
        ..Default::default()
    });
    app.tab = SideTab::Run;
    let mut h = harness(app);
    h.run_steps(2);
    assert!(has_label(&h, "status: idle"));
    let want = "internal error in dapt-train: boom in training";
    for attempt in 0..2 {
        h.get_by_label("Start").click();
        h.run_steps(1);
        step_until(&mut h, "the run never ended", |a| !a.run.is_active());
        assert_eq!(
            h.state().run.status,
            RunStatus::Failed(want.into()),
            "attempt {attempt}"
        );
        assert!(has_label(&h, &format!("status: failed: {want}")));
        assert!(!has_label(&h, "ended unexpectedly"));
    }
    // the rest of the app still answers: back to the viewer tab
    h.get_by_label("Viewer").click();
    h.run_steps(2);
    assert_eq!(h.state().tab, SideTab::Viewer);
    assert!(has_label(&h, "no model loaded"));
}

#[test]
fn the_helper_delivers_a_panic_as_an_error_naming_the_thread() {
    let (tx, rx) = std::sync::mpsc::channel();
    dapt::app::worker::spawn(
        "dapt-probe",
        || -> u8 { std::panic::panic_any(String::from("owned message")) },
        move |r| {
            let _ = tx.send(r);
        },
    )
    .unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        Err("internal error in dapt-probe: owned message".into())
    );
}
