use clap::{Parser, Subcommand};
use ffrtmp::client::{self, GlobalOpts, JobsCommand, NodesCommand};
use ffrtmp::master::MasterArgs;
use ffrtmp::up::UpArgs;
use ffrtmp::worker::WorkerArgs;

// The master's writer and actors allocate and free many small objects per job (rows,
// bind buffers, JSON, SQLite's page buffers); under dispatch load glibc's malloc spent
// about a fifth of the writer thread's time consolidating its bins.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Master and one local worker in one process; --demo runs a sample transcode.
    Up(UpArgs),
    /// Submit, list, follow and control jobs.
    Jobs {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Performance harness P1–P11 and P14 against real processes on loopback (see bench/run.sh).
    Bench(ffrtmp::bench::BenchArgs),
    /// Consistency checks of the shipped dashboards and rules.
    Audit {
        #[command(subcommand)]
        command: ffrtmp::audit::AuditCommand,
    },
    /// List, show, create and delete job templates.
    Templates {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        command: client::templates::TemplatesCommand,
    },
    /// List, describe, drain and remove worker nodes.
    Nodes {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        command: NodesCommand,
    },
}

fn main() {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Jobs { .. } | Command::Nodes { .. } | Command::Templates { .. } => "warn",
        Command::Up(_) | Command::Audit { .. } | Command::Bench(_) => "warn",
        _ => "info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_log)).init();
    // Before any runtime or database starts (it covers what is mapped already, too);
    // after the logger, so a refusal is logged.
    ffrtmp::os::disable_transparent_huge_pages();
    let system = actix_web::rt::System::new();
    let code = match cli.command {
        Command::Master(args) => system.block_on(ffrtmp::master::run(args)).map(|_| 0),
        Command::Worker(args) => system.block_on(ffrtmp::worker::run(args)).map(|_| 0),
        Command::Up(args) => system.block_on(ffrtmp::up::run(args)),
        Command::Audit { command } => Ok(ffrtmp::audit::run(command)),
        Command::Bench(args) => system.block_on(ffrtmp::bench::run(args)),
        Command::Jobs { global, command } => {
            run_client(&system, &global, |s| Box::pin(async move { client::run_jobs(&s, command).await }))
        }
        Command::Templates { global, command } => {
            run_client(&system, &global, |s| Box::pin(async move { client::templates::run(&s, command).await }))
        }
        Command::Nodes { global, command } => {
            run_client(&system, &global, |s| Box::pin(async move { client::run_nodes(&s, command).await }))
        }
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

type ClientFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<i32, client::CliError>>>>;

fn run_client(
    system: &actix_web::rt::SystemRunner,
    g: &GlobalOpts,
    f: impl FnOnce(client::Settings) -> ClientFuture,
) -> anyhow::Result<i32> {
    let settings = match client::resolve(g) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    match system.block_on(f(settings)) {
        Ok(c) => Ok(c),
        Err(client::CliError(msg, code)) => {
            eprintln!("error: {msg}");
            Ok(code)
        }
    }
}
