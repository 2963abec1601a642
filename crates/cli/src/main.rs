//! `evapi`: a SIP router with an event socket, routed by a KEMI-style Lua
//! script. This binary only wires the crates together: it parses the
//! command line and the config file, builds the parts and starts them.

mod config;
mod config_errors;
mod core_rpc;
mod ctl;
mod metrics;
mod run;
mod stats_rpc;
mod tap;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// `--version`: the package version and the commit built (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("EVAPI_COMMIT"),
    ")"
);

/// A SIP router with Kamailio's event socket (evapi), routed by Lua scripts
/// written the KEMI way.
///
/// Start with `evapi run`: it listens for SIP on 127.0.0.1:5060 (UDP and
/// TCP) and for event clients on 127.0.0.1:8448, with a built-in script
/// that suspends each INVITE and asks the event clients what to do. Watch
/// the events with `evapi tap` in another terminal; look inside the running
/// server with `evapi ctl` (its admin HTTP listener, 127.0.0.1:9060, also
/// serves /metrics and /health).
#[derive(Debug, Parser)]
#[command(name = "evapi", version = VERSION, propagate_version = true)]
struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q warnings and errors only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the SIP router and the event socket; run until SIGINT/SIGTERM
    /// (SIGHUP reloads the script).
    Run {
        /// Config file (TOML). Without it, the embedded default config and
        /// script are used (print them with `evapi defaults`).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        misplaced: MisplacedConfig,
    },
    /// Check a config file and its script; report every error with file and
    /// line. Exit 0 when all is well. Starts no listener.
    Check {
        /// Config file (TOML); without it, the embedded default is checked.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        misplaced: MisplacedConfig,
    },
    /// A client for people: connect to an event socket, print each message
    /// received on its own line, send each line typed on stdin as one
    /// message.
    Tap(tap::TapArgs),
    /// Call one admin RPC method on a running server, like kamcmd:
    /// `evapi ctl system.listMethods`, `evapi ctl core.uptime`. Numbers are
    /// sent as numbers, `s:5` as a string.
    Ctl(ctl::CtlArgs),
    /// Print the embedded default config and script, or write both as files
    /// to start your own: `evapi defaults --write DIR` gives DIR/evapi.toml
    /// and the DIR/router.lua it names, ready for `evapi run -c
    /// DIR/evapi.toml`. (The config alone is not enough: it names its script
    /// router.lua, beside it.)
    Defaults {
        /// Print only the config (it names router.lua: write that too, with
        /// --script, or use --write).
        #[arg(long, conflicts_with_all = ["script", "write"])]
        config: bool,
        /// Print only the script.
        #[arg(long, conflicts_with = "write")]
        script: bool,
        /// Write evapi.toml and router.lua into this folder (created if
        /// missing); existing files are never overwritten.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
}

/// A config file named the way other programs take it (`kamailio -f
/// FILE`, or a bare file name): not accepted, but answered with the
/// command that works. Hidden from the help.
#[derive(Debug, clap::Args)]
struct MisplacedConfig {
    #[arg(short = 'f', long = "file", value_name = "FILE", hide = true)]
    file_flag: Option<PathBuf>,
    #[arg(value_name = "FILE", hide = true)]
    bare: Option<PathBuf>,
}

impl MisplacedConfig {
    /// A usage error that says how to give the file, if one was given
    /// another way.
    fn check(&self, command: &str) -> Result<(), clap::Error> {
        use clap::CommandFactory;
        let (given, file) = match (&self.file_flag, &self.bare) {
            (Some(f), _) => (format!("-f {}", f.display()), f),
            (None, Some(f)) => (f.display().to_string(), f),
            (None, None) => return Ok(()),
        };
        let msg = format!(
            "unexpected argument '{given}': the config file is given with -c\n\n  \
             use: evapi {command} -c {}",
            file.display()
        );
        let mut cli = Cli::command();
        cli.build();
        let kind = clap::error::ErrorKind::UnknownArgument;
        Err(match cli.find_subcommand_mut(command) {
            Some(sub) => sub.error(kind, msg),
            None => cli.error(kind, msg),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, misplaced } => {
            misplaced.check("run").unwrap_or_else(|e| e.exit());
            config::load(config.as_deref()).and_then(|loaded| {
                let log = &loaded.file.log;
                init_logs(log.level, log.format, cli.verbose, cli.quiet);
                run::run(loaded)
            })
        }
        Command::Check { config, misplaced } => {
            misplaced.check("check").unwrap_or_else(|e| e.exit());
            init_logs(
                config::LogLevel::Warn,
                Default::default(),
                cli.verbose,
                cli.quiet,
            );
            config::load(config.as_deref()).and_then(run::check)
        }
        Command::Tap(args) => {
            init_logs(
                config::LogLevel::Warn,
                Default::default(),
                cli.verbose,
                cli.quiet,
            );
            tap::tap(args)
        }
        Command::Ctl(args) => {
            init_logs(
                config::LogLevel::Warn,
                Default::default(),
                cli.verbose,
                cli.quiet,
            );
            ctl::ctl(args)
        }
        Command::Defaults {
            write: Some(dir), ..
        } => config::write_defaults(&dir).map(|written| {
            for path in written {
                println!("wrote {}", path.display());
            }
            println!(
                "start it with: evapi run -c {}",
                dir.join("evapi.toml").display()
            );
        }),
        Command::Defaults {
            config: c,
            script: s,
            write: None,
        } => {
            if c {
                // On stderr, so `> evapi.toml` stays a clean config.
                eprintln!(
                    "note: this config names its script router.lua, beside it: \
                     write that with `evapi defaults --script > router.lua` \
                     (or use `evapi defaults --write DIR` for both)"
                );
            }
            if !s {
                print!("{}", config::DEFAULT_CONFIG);
            }
            if !c {
                if !s {
                    println!(
                        "\n-- router.lua --------------------------------------------------------"
                    );
                }
                print!("{}", config::DEFAULT_SCRIPT);
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evapi: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, one line per event, at `level` moved by -v/-q;
/// `RUST_LOG`, when set, wins. `format`: readable text, or one JSON
/// object per line for log shippers.
fn init_logs(level: config::LogLevel, format: config::LogFormat, verbose: u8, quiet: u8) {
    use config::LogLevel;
    let top = LogLevel::ALL.len() as i32 - 1;
    let at = (level.rank() as i32 + verbose as i32 - quiet as i32).clamp(0, top) as usize;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| LogLevel::ALL[at].to_string());
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = match format {
        config::LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        // The journal stamps each line itself: a second time would only
        // take room.
        config::LogFormat::Text if stderr_is_journal() => logs
            .with_target(false)
            .with_ansi(false)
            .without_time()
            .try_init(),
        config::LogFormat::Text => logs
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Whether stderr is connected to the systemd journal: `JOURNAL_STREAM`
/// names its device and inode (systemd sets it for a service's output).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream == format!("{}:{}", meta.dev(), meta.ino())
}
