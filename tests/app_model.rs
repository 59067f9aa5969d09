//! The app's seams wired to the real library: a checkpoint analyses a cloud (prediction,
//! patches, dynamic scales in the displayed cloud's indices), and the run panel's launcher
//! trains through the engine on a worker thread.

mod common;

use common::*;
use dapt::app::model_hook::{EngineLauncher, analyzer_from_checkpoint, sample_indices};
use dapt::app::training::{RunSettings, TrainingLauncher};
use dapt::data::PointCloud;
use dapt::train::TrainEvent;

#[test]
fn an_official_checkpoint_analyses_a_cloud_like_the_pytorch_model() {
    let case = fixture_dir("dapt_small");
    let a =
        analyzer_from_checkpoint(&case.join("model.pth"), Some(&case.join("config.yaml"))).unwrap();
    let io = load_io("dapt_small");
    let n = io["points"].shape[1];
    let pts = to_points(&io["points"]);
    let cloud = PointCloud::from_positions(pts[..n].to_vec());
    let r = a.analyze(&cloud).unwrap();
    assert_eq!(r.class_names.len(), 5);
    let p: f32 = r.probabilities.iter().sum();
    assert!((p - 1.0).abs() < 1e-4);
    // same prediction as the official logits for this cloud
    let logits = &io["logits"].data[..5];
    let want = (0..5)
        .max_by(|&i, &j| logits[i].total_cmp(&logits[j]))
        .unwrap();
    assert_eq!(r.predicted_class(), Some(want));
    assert_eq!(r.groups.len(), 16);
    assert!(
        r.groups
            .iter()
            .all(|g| g.len() == 8 && g.iter().all(|&i| i < n))
    );
    assert_eq!(r.patch_scales.len(), 3);
    assert!(
        r.patch_scales
            .iter()
            .all(|b| b.len() == 16 && b.iter().all(|s| *s >= 0.0))
    );
    // the official dynamic scales of block 0's patches (tokens after cls)
    let s0 = &io["scale.0"];
    let t = s0.shape[1];
    let want_patch: Vec<f64> = s0.data[t - 16..t].to_vec();
    assert_close(
        "scale.0 patches",
        &r.patch_scales[0],
        &Fx {
            shape: vec![16],
            data: want_patch,
        },
        1e-4,
    );
    assert_eq!(
        r.prompt_scales[2].len(),
        2,
        "block 2 sees the two earlier prompts"
    );
}

#[test]
fn sampling_indices_cover_short_exact_and_long_clouds() {
    let pts: Vec<[f32; 3]> = (0..50).map(|i| [i as f32, 0.0, 1.0]).collect();
    assert_eq!(sample_indices(&pts, 50), (0..50).collect::<Vec<_>>());
    let long = sample_indices(&pts, 10);
    assert_eq!(long.len(), 10);
    assert_eq!(long[0], 0);
    let short = sample_indices(&pts[..5], 12);
    assert_eq!(short.len(), 12);
    assert!(short.iter().all(|&i| i < 5));
}

#[test]
fn the_run_panel_launcher_trains_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let s = RunSettings {
        data: "synthetic:seed=2,train=2,test=1,points=600".into(),
        mode: "dapt".into(),
        epochs: 1,
        lr: 1e-3,
        batch: 8,
        shots: Some(1),
        out: Some(dir.path().join("run")),
        ..RunSettings::default()
    };
    let h = EngineLauncher.start(&s).unwrap();
    let mut saw = (false, false, false);
    for ev in h.events.iter() {
        match ev {
            TrainEvent::Started { .. } => saw.0 = true,
            TrainEvent::Metrics(_) => saw.1 = true,
            TrainEvent::Finished { .. } => saw.2 = true,
            TrainEvent::Failed { message } => panic!("{message}"),
            _ => {}
        }
    }
    assert_eq!(saw, (true, true, true));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        saved["shots"], 1,
        "the panel's few-shot setting reaches the run"
    );
    assert!(
        dir.path()
            .join("run/checkpoints/best.safetensors")
            .is_file()
    );
    assert!(
        EngineLauncher
            .start(&RunSettings {
                mode: "lora".into(),
                ..s.clone()
            })
            .is_err()
    );

    // the finished run opens in the panel, and its best checkpoint becomes the viewer's model
    let run_dir = dir.path().join("run");
    let run = dapt::app::run_history::read_run(&run_dir).unwrap();
    assert!(run.finished(), "{}", run.summary());
    assert_eq!(run.points.len(), 2, "one train and one test line");
    let mut panel = dapt::app::RunPanel::default();
    panel.open_run(&run_dir);
    assert_eq!((panel.train_loss.len(), panel.test_acc.len()), (1, 1));
    assert_eq!(
        panel.settings.resume, None,
        "a finished run is not offered for resume"
    );

    let mut app = dapt::app::StudioApp::new(dapt::app::AppOptions::default());
    app.add_cloud(
        "ring".into(),
        PointCloud::from_positions(
            (0..300)
                .map(|i| {
                    let t = i as f32 * 0.05;
                    [t.cos(), t.sin(), 0.1 * (3.0 * t).sin()]
                })
                .collect(),
        ),
    );
    app.load_model(run.best_checkpoint.clone().unwrap());
    let mut h = egui_kittest::Harness::builder()
        .with_size([900.0, 600.0])
        .build_ui_state(|ui, app: &mut dapt::app::StudioApp| app.ui_root(ui), app);
    let t0 = std::time::Instant::now();
    while h.state().background_busy() || !h.state().analyses_settled() {
        assert!(t0.elapsed().as_secs() < 60, "model never loaded");
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.step();
    }
    assert!(h.state().has_analyzer(), "{:?}", h.state().messages);
    let analysis = h.state().clouds[0]
        .analysis()
        .expect("the open cloud was analysed");
    assert_eq!(analysis.probabilities.len(), 10, "the synthetic classes");
}

#[test]
fn a_part_segmentation_checkpoint_labels_every_point_with_its_categorys_parts() {
    let case = fixture_dir("partseg_small");
    let a = analyzer_from_checkpoint(&case.join("model.pth"), None).unwrap();
    assert!(a.name().contains("parts"));
    let io = load_io("partseg_small");
    let n = io["points"].shape[1];
    let pts = to_points(&io["points"]);
    let cat = io["category"].usize()[0];
    let mut cloud = PointCloud::from_positions(pts[..n].to_vec());
    cloud.class_label = Some(cat);
    let r = a.analyze(&cloud).unwrap();
    let labels = r.part_pred.clone().expect("part labels");
    assert_eq!(labels.len(), n);
    let parts = &dapt::data::dataset::SHAPENETPART_CATEGORIES[cat].2;
    assert!(
        labels.iter().all(|l| parts.contains(l)),
        "labels outside the category's parts"
    );
    assert_eq!(r.predicted_class(), Some(cat), "a given category is kept");
    // without a category every one is tried and the best-scoring one is shown
    cloud.class_label = None;
    let r = a.analyze(&cloud).unwrap();
    assert!((r.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    assert_eq!(r.part_pred.unwrap().len(), n);
}

fn wait_for_sample(b: &mut dapt::app::dataset_browser::DatasetBrowser) -> (String, PointCloud) {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(s) = b.poll() {
            return s;
        }
        assert!(b.error.is_none(), "{:?}", b.error);
        assert!(
            t0.elapsed().as_secs() < 30,
            "the browser never delivered a sample"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn the_data_set_browser_opens_filters_and_steps_through_samples() {
    let mut b = dapt::app::dataset_browser::DatasetBrowser::default();
    b.spec = "synthetic:seed=1,train=3,test=2,points=300".into();
    b.open();
    let (name, cloud) = wait_for_sample(&mut b);
    assert!(name.contains("train #0"), "{name}");
    assert_eq!(cloud.len(), 300);
    let ds = b.dataset.clone().unwrap();
    assert_eq!(b.filtered().len(), ds.train.len());
    b.test_split = true;
    b.class_filter = Some(3);
    let list = b.filtered();
    assert_eq!(list.len(), 2, "two test clouds of class 3");
    assert!(list.iter().all(|&i| ds.test[i].label == 3));
    b.index = 1;
    b.load_current();
    let (name, cloud) = wait_for_sample(&mut b);
    assert!(name.contains("test"), "{name}");
    assert_eq!(cloud.class_label, Some(3));
    // a bad spec is an error in the panel, not a crash
    b.spec = "/no/such/data/set".into();
    b.open();
    let t0 = std::time::Instant::now();
    while b.error.is_none() {
        b.poll();
        assert!(t0.elapsed().as_secs() < 30);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(b.error.as_ref().unwrap().contains("/no/such/data/set"));
}
