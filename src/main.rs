use clap::{Parser, Subcommand};
use ffrtmp::master::MasterArgs;
use ffrtmp::worker::WorkerArgs;

/// ffrtmp: distributed FFmpeg/RTMP transcoding farm.
#[derive(Debug, Parser)]
#[command(name = "ffrtmp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the master: scheduler, database and REST API.
    Master(MasterArgs),
    /// Run a worker: probe this machine, register, run jobs with ffmpeg.
    Worker(WorkerArgs),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Master(args) => actix_web::rt::System::new().block_on(ffrtmp::master::run(args)),
        Command::Worker(args) => actix_web::rt::System::new().block_on(ffrtmp::worker::run(args)),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
