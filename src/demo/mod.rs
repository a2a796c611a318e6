//! `posthook demo`: posthook in front of an embedded, in-memory Mattermost API, with an example
//! webhook that answers `echo …`, nothing else installed. It prints the addresses and a ready
//! `curl` line, then each step as it happens: the post, the exact webhook request (tokens
//! masked), the answer, the reply post. `--webhook URL` aims the demo hook at your own
//! integration (Mattermost-exact payloads without Mattermost); `-c FILE` takes your hooks
//! (callback URLs included; their upstream and bot token are not used); `--listen ADDR` fixes
//! posthook's port (the embedded API, the example webhook and the tap take ephemeral loopback
//! ports, so several demos run side by side). Ctrl-C (or SIGTERM) stops it.
//!
//! - [`model`]: the API's data and Mattermost's rules for posts (shared with the tests'
//!   stand-in).
//! - [`routes`]: the REST routes over it, with Mattermost's JSON.
//! - `serve`: the three small servers (API, example webhook, tap).

mod ids;
pub mod model;
pub mod routes;
mod serve;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::net::client::HttpClient;
use crate::net::guard::{GuardedResolver, SystemResolver};
use model::{new_id, Directory};

/// What `posthook demo` was asked for.
#[derive(Debug, Default, Clone)]
pub struct DemoOptions {
    /// posthook's address (default: an ephemeral loopback port).
    pub listen: Option<SocketAddr>,
    /// Aim the demo hook at this URL instead of the example webhook.
    pub webhook: Option<String>,
    /// Take the hooks of this config file.
    pub config: Option<PathBuf>,
}

/// The terminal: each step of a post's way, one block at a time, tokens masked.
#[derive(Clone)]
pub(crate) struct Screen {
    masks: Arc<Vec<String>>,
    out: Arc<Mutex<Box<dyn std::io::Write + Send>>>,
}

impl Screen {
    fn mask(&self, text: &str) -> String {
        let mut text = text.to_string();
        for m in self.masks.iter().filter(|m| !m.is_empty()) {
            text = text.replace(m.as_str(), "***");
        }
        text
    }

    fn block(&self, title: &str, text: &str) {
        let mut rule = format!("── {title} ");
        while rule.chars().count() < 78 {
            rule.push('─');
        }
        let text = self.mask(text);
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "\n{rule}\n{}", text.trim_end());
            let _ = out.flush();
        }
    }

    /// A post created (or edited) through the embedded API.
    fn post(&self, dir: &Directory, id: &str, edited: bool) {
        let Some((author, channel, post)) = serve::describe_post(dir, id) else {
            return;
        };
        let is_bot = dir.user(&post.user_id).is_some_and(|u| u.is_bot);
        let title = match (is_bot, edited) {
            (true, _) => "reply post (posthook → Mattermost API, as the bot)",
            (false, true) => "post edited",
            (false, false) => "post created (client → posthook → Mattermost API: 201)",
        };
        let thread = if post.root_id.is_empty() {
            String::new()
        } else {
            format!(" (in the thread of {})", post.root_id)
        };
        self.block(
            title,
            &format!(
                "@{author} in ~{channel}{thread}: {}\npost id {}",
                post.message, post.id
            ),
        );
    }

    fn webhook_request(&self, url: &str, head: &str, body: &[u8]) {
        let text = format!(
            "{}\r\n\r\n{}",
            head.trim_end_matches("\r\n"),
            String::from_utf8_lossy(body)
        );
        self.block(&format!("webhook request (posthook → {url})"), &text);
    }

    fn webhook_answer(&self, status: u16, took: Duration, content_type: &str, body: &[u8]) {
        self.block(
            &format!("webhook answer ({status}, {} ms)", took.as_millis()),
            &format!(
                "Content-Type: {content_type}\n{}",
                String::from_utf8_lossy(body)
            ),
        );
    }

    fn webhook_failed(&self, error: &str) {
        self.block("webhook failed", error);
    }
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub fn run(options: DemoOptions) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("posthook-demo")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the demo's runtime: {e}"))?;
    rt.block_on(demo(options, Box::new(std::io::stdout())))
}

/// A free loopback port's address (posthook binds it itself a moment later).
fn free_address() -> Result<SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))
}

async fn bind() -> Result<(TcpListener, SocketAddr), String> {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    Ok((l, addr))
}

async fn demo(options: DemoOptions, out: Box<dyn std::io::Write + Send>) -> Result<(), String> {
    let own = match &options.config {
        Some(path) => Some(Config::load(path).map_err(|e| e.to_string())?),
        None => None,
    };
    // The embedded Mattermost: one team, a public and a private channel, a user and the bot.
    let mut dir = Directory::default();
    let (team, town) = (new_id(), new_id());
    dir.add_team(&team, "demo");
    dir.add_channel(&town, &team, "town-square", "O");
    dir.add_channel(&new_id(), &team, "secret", "P");
    let (alice, bot) = (new_id(), new_id());
    dir.add_user(&alice, "alice", false);
    dir.add_user(&bot, "posthook-bot", true);
    let (user_token, bot_token, hook_token) = (new_id(), new_id(), new_id());
    dir.add_token(&user_token, &alice);
    dir.add_token(&bot_token, &bot);

    let (api_listener, api) = bind().await?;
    let (tap_listener, tap) = bind().await?;
    let listen = match options.listen {
        Some(a) => a,
        None => free_address()?,
    };
    let mut text = format!(
        "listen: \"{listen}\"\nupstream: \"http://{api}\"\nbot_token: \"{bot_token}\"\nsettings:\n  allowed_untrusted_internal_connections: [\"127.0.0.1\"]\n"
    );
    let mut targets: Vec<url::Url> = Vec::new();
    let mut example = None;
    if own.is_none() {
        let target = match &options.webhook {
            Some(url) => url.clone(),
            None => {
                let (l, addr) = bind().await?;
                example = Some(l);
                format!("http://{addr}/hooks/echo")
            }
        };
        let url = url::Url::parse(&target).map_err(|e| format!("--webhook {target}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "--webhook {target}: must be an http:// or https:// URL"
            ));
        }
        targets.push(url);
        text.push_str(&format!(
            "hooks:\n  - id: echo\n    display_name: \"posthook demo\"\n    trigger_words: [\"echo\"]\n    callback_urls: [\"http://{tap}/0\"]\n    content_type: \"application/json\"\n    token: \"{hook_token}\"\n"
        ));
    }
    let mut config = Config::from_yaml("demo", &text, &|_| None).map_err(|e| e.to_string())?;
    let mut masks = vec![user_token.clone(), bot_token.clone(), hook_token.clone()];
    if let Some(own) = own {
        // Your hooks, each callback URL behind the tap; their channels and teams exist.
        config.hooks = own.hooks;
        for (i, hook) in config.hooks.iter_mut().enumerate() {
            masks.push(hook.token.clone());
            // Named teams and channels exist in the embedded API under those names.
            let (team_name, channel_name) = (
                hook.beyond.team_name.clone(),
                hook.beyond.channel_name.clone(),
            );
            for name in team_name.iter().chain(channel_name.iter().map(|(t, _)| t)) {
                if !dir.teams.iter().any(|t| &t.name == name) {
                    dir.add_team(&new_id(), name);
                }
            }
            if let Some((t, c)) = &channel_name {
                let team_id = dir
                    .teams
                    .iter()
                    .find(|x| &x.name == t)
                    .map(|x| x.id.clone());
                if let Some(team_id) = team_id {
                    if !dir
                        .channels
                        .iter()
                        .any(|x| x.team_id == team_id && &x.name == c)
                    {
                        dir.add_channel(&new_id(), &team_id, c, "O");
                    }
                }
            }
            if let Some(t) = &hook.team_id {
                if dir.team(t).is_none() {
                    dir.add_team(t, &format!("team-{i}"));
                }
            }
            if let Some(c) = &hook.channel_id {
                if dir.channel(c).is_none() {
                    let team = hook.team_id.clone().unwrap_or_else(|| team.clone());
                    dir.add_channel(c, &team, &format!("channel-{i}"), "O");
                }
            }
            for url in hook.callback_urls.iter_mut() {
                let tapped = url::Url::parse(&format!("http://{tap}/{}", targets.len()))
                    .map_err(|e| e.to_string())?;
                targets.push(std::mem::replace(url, tapped));
            }
        }
    }
    let screen = Screen {
        masks: Arc::new(masks),
        out: Arc::new(Mutex::new(out)),
    };
    let dir = Arc::new(Mutex::new(dir));
    let (d, s) = (dir.clone(), screen.clone());
    tokio::spawn(serve::serve(api_listener, move |req| {
        serve::api(d.clone(), s.clone(), req)
    }));
    if let Some(l) = example {
        tokio::spawn(serve::serve(l, serve::echo));
    }
    let client = HttpClient::new(
        GuardedResolver::new(Arc::new(SystemResolver), None),
        Duration::from_secs(10),
        8,
        Duration::from_secs(30),
    )
    .map_err(|e| format!("cannot build the tap's client: {e}"))?;
    tokio::spawn(serve::tap(
        tap_listener,
        Arc::new(targets.clone()),
        Arc::new(client),
        screen.clone(),
    ));
    let running =
        crate::app::spawn(&config, crate::app::Options::default()).map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("posthook did not start listening on {listen}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hooks: Vec<String> = targets.iter().map(|t| format!("  {t}")).collect();
    let banner = format!(
        "posthook demo: posthook in front of an embedded, in-memory Mattermost API (no Mattermost needed)\n\
         \n  posthook                {listen}   (point a Mattermost client here)\n  Mattermost API          http://{api}   (team \"demo\", channel ~town-square, user alice)\n  webhook(s)\n{}\n\
         \nPost a message that fires the demo hook (trigger word \"echo\"):\n\n  \
         curl -s -H 'Authorization: Bearer {user_token}' -H 'Content-Type: application/json' \\\n       \
         -d '{{\"channel_id\":\"{town}\",\"message\":\"echo hello world\"}}' http://{listen}/api/v4/posts\n\
         \nEach step is shown below as it happens (tokens masked as ***). Ctrl-C stops the demo.",
        hooks.join("\n")
    );
    if let Ok(mut out) = screen.out.lock() {
        let _ = writeln!(out, "{banner}");
        let _ = out.flush();
    }
    stop_signal().await;
    running.stop(false);
    if let Ok(mut out) = screen.out.lock() {
        let _ = writeln!(out, "\ndemo stopped");
        let _ = out.flush();
    }
    Ok(())
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
