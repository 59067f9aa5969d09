//! Command-line front end: one file per subcommand, all over the same library calls the app uses.

use clap::{Parser, Subcommand};

pub mod args;
pub mod bench;
pub mod eval;
pub mod fewshot;
pub mod info;
pub mod interrupt;
pub mod output;
pub mod predict;
pub mod pretrain;
pub mod recipe;
pub mod train;
pub mod view;

#[derive(Parser, Debug)]
#[command(
    name = "dapt",
    version,
    about = "DAPT Studio: parameter-efficient fine-tuning of Point-MAE point-cloud transformers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Fine-tune (DAPT, full or linear probe); with no arguments, a demo on synthetic shapes.
    Train(Box<train::TrainArgs>),
    /// Pre-train a Point-MAE backbone (masked point modelling); with no arguments, a demo on
    /// synthetic shapes.
    Pretrain(Box<pretrain::PretrainArgs>),
    /// Evaluate a checkpoint on a data set's test split.
    Eval(eval::EvalArgs),
    /// Classify point-cloud files.
    Predict(predict::PredictArgs),
    /// Parameter and token counts of a configuration.
    Info(info::InfoArgs),
    /// Time the training or inference path.
    Bench(bench::BenchArgs),
    /// Open the desktop viewer (the default with no subcommand).
    View(view::ViewArgs),
}

/// Entry point used by `src/main.rs`; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        None => view::run(view::ViewArgs::default()),
        Some(Command::Train(args)) => train::run(*args),
        Some(Command::Pretrain(args)) => pretrain::run(*args),
        Some(Command::Eval(args)) => eval::run(args),
        Some(Command::Predict(args)) => predict::run(args),
        Some(Command::Info(args)) => info::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::View(args)) => view::run(args),
    };
    match result {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<interrupt::Interrupted>().is_some() => {
            eprintln!("{e}");
            interrupt::EXIT_INTERRUPTED
        }
        Err(e) => {
            eprintln!("error: {}", output::error_chain(&e));
            1
        }
    }
}
