//! The `posthook` binary: parse arguments, load the config, run the server (or one of the
//! store's commands).
//!
//! ```text
//! posthook -c posthook.yaml        # run until SIGTERM (graceful) or SIGINT (fast);
//!                                  # SIGHUP reloads the hooks and settings
//! posthook -c posthook.yaml -t     # check the config and exit
//! posthook deliveries -c posthook.yaml list|show|replay …   # the delivery log
//! posthook hooks -c posthook.yaml list|enable …              # hooks disabled by a 410
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use posthook::cli;
use posthook::config::{Config, LogFormat};
use posthook::logging;

/// jemalloc rather than glibc's malloc: beside a dead endpoint with retries, glibc's arenas kept
/// growing the process (RSS 34 → 72 MiB in 60 s at 2 000 posts/s) while the live heap stayed
/// flat at ~32 MiB after 15 s (heaptrack); jemalloc levels off, and the load bench measured it
/// faster too (C~/C 1.071, Cs~/Cs 1.177 in the same rounds: BENCHMARKS.md, session 7).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (its `malloc_conf`, read at start; `_RJEM_MALLOC_CONF` in the
/// environment overrides them): a background thread returns freed memory to the system after
/// 1 s, idle or not. Without it, memory freed while the process then idles stays with it: 3 000
/// half-open connections took RSS from 12.6 to 130 MiB and it stayed at 130 MiB after they
/// closed; with it, back to 17 MiB within 6 s (issue 14).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Outgoing webhooks for Mattermost, from a proxy in front of it.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The YAML configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Check the configuration, print it as in force (defaults filled in, ${NAME}s applied,
    /// secrets as ***) and exit.
    #[arg(short = 'T', long = "effective")]
    effective: bool,
    /// With -t: also resolve the hooks' team and channel names against the server.
    #[arg(long, requires = "test")]
    resolve: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// posthook in front of an embedded, in-memory Mattermost API and an example webhook:
    /// nothing else needed. Prints a ready curl line, then each step as it happens.
    Demo {
        /// posthook's address (default: a free loopback port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Aim the demo hook at your own integration instead of the example webhook.
        #[arg(long, value_name = "URL")]
        webhook: Option<String>,
        /// Use the hooks of this config file (its upstream and bot token are not used).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// A dry run: which hooks MESSAGE fires and, per callback URL, the exact request
    /// (tokens masked); nothing is sent. Exit 0 when a hook fires, 1 when none, 2 on errors.
    Match {
        /// The YAML configuration file.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// The channel: an id (or team-name/channel-name with --resolve).
        #[arg(long)]
        channel: String,
        /// The author: a user id (or a username with --resolve).
        #[arg(long)]
        user: String,
        /// The channel's team id (without --resolve; team-scoped hooks need it).
        #[arg(long, value_name = "TEAM_ID")]
        team: Option<String>,
        /// The channel's type: O, P, D or G (default O, or the server's with --resolve).
        #[arg(long = "type", value_name = "O|P|D|G")]
        channel_type: Option<String>,
        /// The thread root the message replies to.
        #[arg(long, value_name = "ROOT_ID", default_value = "")]
        root: String,
        /// As an edit of a post rather than a new one.
        #[arg(long)]
        edited: bool,
        /// Look up the channel, team and user with the bot token (names allowed).
        #[arg(long)]
        resolve: bool,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// The message.
        message: String,
    },
    /// The delivery log of the store the config names (store.url).
    Deliveries {
        /// The YAML configuration file.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        #[command(subcommand)]
        action: Deliveries,
    },
    /// The hooks of the config, and those a 410 Gone disabled.
    Hooks {
        /// The YAML configuration file.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        #[command(subcommand)]
        action: Hooks,
    },
}

#[derive(Subcommand)]
enum Deliveries {
    /// Deliveries, newest first.
    List {
        /// Only this hook's (its id, or its position).
        #[arg(long)]
        hook: Option<String>,
        /// Only in this state: pending, delivered, failed or dropped.
        #[arg(long)]
        state: Option<String>,
        /// Only those created this recently (e.g. 30m, 1h, 2d).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// JSON lines, one object per delivery.
        #[arg(long)]
        json: bool,
    },
    /// One delivery: every attempt, the request body and the answer.
    Show {
        /// The full webhook-id (msg_…).
        webhook_id: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Sends a delivery again (same webhook-id), through the running service.
    Replay {
        /// The full webhook-id (msg_…).
        webhook_id: String,
    },
}

#[derive(Subcommand)]
enum Hooks {
    /// Each hook, enabled or disabled (with the reason).
    List {
        /// JSON lines, one object per hook.
        #[arg(long)]
        json: bool,
    },
    /// Enables a hook a 410 Gone disabled.
    Enable {
        /// The hook's id (or its position).
        id: String,
    },
}

/// The config at `path`; its error printed and `Err(exit status code)` when it does not load.
fn load(path: &std::path::Path, code: u8) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(code)
    })
}

/// Runs a store command: its output on stdout, or its error on stderr (exit 1).
fn store_command(
    config: &std::path::Path,
    run: impl FnOnce(&Config) -> Result<String, cli::CliError>,
) -> ExitCode {
    let config = match load(config, 1) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match run(&config) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("posthook: {e}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr in `format`, at `RUST_LOG` or else `default_level`, through posthook's
/// secret policy.
fn init_logging(format: LogFormat, default_level: &str) {
    let json = format == LogFormat::Json;
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
            // env_logger's default layout, without styles. env_logger is built without its
            // `color` feature: a line is written as formatted, with no escape-stripping pass
            // and no terminal check (an `isatty` ioctl per line); at info there is one line
            // per delivery and one per reply.
            .format(move |buf, record| {
                use std::io::Write;
                if json {
                    let ts = buf.timestamp_millis().to_string();
                    let text = record.args().to_string();
                    let line = logging::json_line(&ts, record.level(), record.target(), &text);
                    return writeln!(buf, "{line}");
                }
                writeln!(
                    buf,
                    "[{} {:<5} {}] {}",
                    buf.timestamp(),
                    record.level(),
                    record.target(),
                    record.args()
                )
            })
            .build();
    let max_level = logger.filter();
    // Every line goes through posthook's policy: dependencies capped at info (Pingora logs
    // request headers, credentials included, at debug).
    if log::set_boxed_logger(Box::new(logging::SecretSafe::new(logger))).is_ok() {
        log::set_max_level(max_level);
    }
}

fn masked_secrets_message(hooks: &[String]) -> String {
    format!(
        "signing_secret of {} is masked (***, as posthook -T prints it): posthook does not run with it; write the secret back",
        hooks.join(", ")
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Deliveries { config, action }) => {
            return store_command(&config, |c| match action {
                Deliveries::List {
                    hook,
                    state,
                    since,
                    limit,
                    json,
                } => {
                    let since = since.as_deref().map(cli::parse_since).transpose()?;
                    let options = cli::ListOptions {
                        hook,
                        state,
                        since,
                        limit,
                        json,
                    };
                    cli::list(c, &options)
                }
                Deliveries::Show { webhook_id, json } => cli::show(c, &webhook_id, json),
                Deliveries::Replay { webhook_id } => cli::replay(c, &webhook_id),
            })
        }
        Some(Command::Hooks { config, action }) => {
            return store_command(&config, |c| match action {
                Hooks::List { json } => cli::hooks(c, json),
                Hooks::Enable { id } => cli::enable(c, &id),
            })
        }
        Some(Command::Match {
            config,
            channel,
            user,
            team,
            channel_type,
            root,
            edited,
            resolve,
            json,
            message,
        }) => {
            let config = match load(&config, 2) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if channel_type
                .as_deref()
                .is_some_and(|t| !matches!(t, "O" | "P" | "D" | "G"))
            {
                eprintln!("posthook match: --type must be O, P, D or G");
                return ExitCode::from(2);
            }
            let question = posthook::dryrun::Question {
                channel,
                user,
                team,
                channel_type,
                root,
                edited,
                resolve,
                message,
            };
            let answer = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(posthook::dryrun::answer(&config, &question)));
            return match answer {
                Ok(a) => {
                    if json {
                        println!("{}", posthook::dryrun::json(&a));
                    } else {
                        print!("{}", posthook::dryrun::text(&a));
                    }
                    if a.fired.is_empty() {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("posthook match: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Demo {
            listen,
            webhook,
            config,
        }) => {
            init_logging(LogFormat::Text, "warn");
            let options = posthook::demo::DemoOptions {
                listen,
                webhook,
                config,
            };
            return match posthook::demo::run(options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("posthook demo: {e}");
                    ExitCode::from(1)
                }
            };
        }
        None => {}
    }
    let Some(config_path) = args.config else {
        eprintln!("posthook: -c FILE is required (see posthook --help)");
        return ExitCode::from(2);
    };
    let config = match load(&config_path, 1) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(config.log_format, "info");
    let masked = config.hooks_with_masked_secrets();
    if args.effective {
        print!("{}", config.effective_yaml());
        return ExitCode::SUCCESS;
    }
    if args.test && args.resolve && posthook::names::has_names(&config.hooks) {
        match posthook::names::resolve_blocking(&config, None) {
            Ok((_, failed)) if failed.is_empty() => {}
            Ok((_, failed)) => {
                for f in failed {
                    eprintln!("posthook: {f}");
                }
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("posthook: cannot resolve names: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if args.test {
        println!("config ok: {} hooks", config.hooks.len());
        if !masked.is_empty() {
            eprintln!("posthook: note: {}", masked_secrets_message(&masked));
        }
        return ExitCode::SUCCESS;
    }
    if !masked.is_empty() {
        eprintln!("posthook: {}", masked_secrets_message(&masked));
        return ExitCode::from(1);
    }
    let options = posthook::app::Options {
        config_path: Some(config_path.clone()),
        ..Default::default()
    };
    match posthook::app::build(&config, options) {
        Ok((server, handle)) => {
            posthook::app::exit_when_drained(&server, &handle, config.server.grace_period);
            log::info!(
                "posthook listening on {} for {} with {} hooks",
                config.listen,
                config.upstream.base_url,
                config.hooks.len()
            );
            if let Some(addr) = config.metrics_listen {
                log::info!("metrics on http://{addr}/metrics");
            }
            // run_forever never returns: without this, the parsed file (every hook) would be
            // kept for the life of the process next to the running copy.
            drop(config);
            server.run_forever()
        }
        Err(e) => {
            eprintln!("posthook: {e}");
            ExitCode::from(1)
        }
    }
}
