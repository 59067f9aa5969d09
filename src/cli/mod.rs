//! Command-line front end: one file per subcommand, all over the same library calls the app uses.

use clap::{Parser, Subcommand};

pub mod view;

#[derive(Parser, Debug)]
#[command(name = "dapt", version, about = "DAPT Studio: parameter-efficient fine-tuning of Point-MAE point-cloud transformers")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the desktop viewer (the default with no subcommand).
    View(view::ViewArgs),
}

/// Entry point used by `src/main.rs`; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        None => view::run(view::ViewArgs::default()),
        Some(Command::View(args)) => view::run(args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
