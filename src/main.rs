//! The `posthook` binary: parse arguments, load the config, run the server.
//!
//! ```text
//! posthook -c posthook.yaml        # run until SIGTERM (graceful) or SIGINT (fast);
//!                                  # SIGHUP reloads the hooks and settings
//! posthook -c posthook.yaml -t     # check the config and exit
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use posthook::config::Config;

/// Outgoing webhooks for Mattermost, from a proxy in front of it.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The YAML configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(short = 't', long = "test")]
    test: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            // env_logger's default layout, without styles. env_logger is built without its
            // `color` feature: a line is written as formatted, with no escape-stripping pass
            // and no terminal check (an `isatty` ioctl per line); at info there is one line
            // per delivery and one per reply.
            .format(|buf, record| {
                use std::io::Write;
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
    if log::set_boxed_logger(Box::new(posthook::logging::SecretSafe::new(logger))).is_ok() {
        log::set_max_level(max_level);
    }
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if args.test {
        println!("config ok: {} hooks", config.hooks.len());
        return ExitCode::SUCCESS;
    }
    let options = posthook::app::Options {
        config_path: Some(args.config.clone()),
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
