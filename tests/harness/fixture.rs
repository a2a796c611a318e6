//! A builder for the set-up most end-to-end tests share: the stand-in with the standard
//! fixtures ([`standin`]), one webhook receiver, and posthook in front of the stand-in with
//! hooks that point at the receiver. A test states only what differs (how the receiver
//! answers, the settings, the hooks) and gets the three parts back by name:
//!
//! ```ignore
//! let Fixture { mm, rx, ph } = Fixture::builder()
//!     .responder(Responder::Hang)
//!     .setting("max_post_size: 10")
//!     .hook(|rx| form_hook("#build", &rx.url("/h")))
//!     .start()
//!     .await;
//! ```
//!
//! Bind all three, in that order (`mm: _mm` for one a test does not use; `_` or `..` would drop
//! it at once and stop that server). Locals are dropped in reverse order, so posthook stops
//! before the servers it talks to, as when the three were started one by one.

use std::net::SocketAddr;

use crate::support::{MattermostStandIn, Responder, WebhookReceiver};

use super::{config_text, standin, start, start_with_metrics, Posthook, ALLOW_LOOPBACK};

/// What [`FixtureBuilder::start`] started. The fields are declared in the order they are
/// dropped when a test keeps the whole value: posthook first.
pub struct Fixture {
    pub ph: Posthook,
    pub rx: WebhookReceiver,
    pub mm: MattermostStandIn,
}

/// One or more entries of the `hooks:` list, written once the receiver's address is known.
type HookEntries<'a> = Box<dyn FnOnce(&WebhookReceiver) -> String + 'a>;

/// See [`Fixture::builder`].
#[must_use]
pub struct FixtureBuilder<'a> {
    responder: Responder,
    settings: String,
    hooks: Vec<HookEntries<'a>>,
}

impl Fixture {
    /// By default: the receiver answers an empty 200, the settings allow loopback callbacks
    /// ([`ALLOW_LOOPBACK`]), and there are no hooks.
    pub fn builder<'a>() -> FixtureBuilder<'a> {
        FixtureBuilder {
            responder: Responder::Status(200, String::new()),
            settings: ALLOW_LOOPBACK.to_string(),
            hooks: Vec::new(),
        }
    }
}

impl<'a> FixtureBuilder<'a> {
    /// How the receiver answers.
    pub fn responder(mut self, responder: Responder) -> Self {
        self.responder = responder;
        self
    }

    /// The whole `settings:` section, verbatim, instead of [`ALLOW_LOOPBACK`] (`""`: none).
    pub fn settings(mut self, settings: &str) -> Self {
        self.settings = settings.to_string();
        self
    }

    /// Adds `line` (e.g. `"max_post_size: 10"`) under `settings:`, after the settings so far.
    pub fn setting(mut self, line: &str) -> Self {
        if self.settings.is_empty() {
            self.settings.push_str("settings:\n");
        }
        self.settings.push_str(&format!("  {line}\n"));
        self
    }

    /// Appends entries to the `hooks:` list, written by `entries` from the started receiver
    /// (e.g. `|rx| form_hook("#build", &rx.url("/h"))`; other receivers the test started can
    /// be borrowed).
    pub fn hook(mut self, entries: impl FnOnce(&WebhookReceiver) -> String + 'a) -> Self {
        self.hooks.push(Box::new(entries));
        self
    }

    /// Starts the stand-in, the receiver, then posthook, and waits until posthook accepts
    /// connections.
    pub async fn start(self) -> Fixture {
        let (mm, rx, extra) = self.servers().await;
        let (text, listen) = config_text(&mm.base_url(), &extra);
        let ph = start(&text, listen).await;
        Fixture { ph, rx, mm }
    }

    /// [`start`](Self::start), with posthook's metrics endpoint on a port of its own; returns
    /// the endpoint's address too.
    pub async fn start_with_metrics(self) -> (Fixture, SocketAddr) {
        let (mm, rx, extra) = self.servers().await;
        let (ph, metrics) = start_with_metrics(&mm.base_url(), &extra).await;
        (Fixture { ph, rx, mm }, metrics)
    }

    /// The stand-in and the receiver, started; and posthook's config past the fixed part
    /// (`settings:`, then `hooks:` when there are any).
    async fn servers(self) -> (MattermostStandIn, WebhookReceiver, String) {
        let mm = standin().await;
        let rx = WebhookReceiver::start(self.responder).await;
        let hooks: String = self.hooks.into_iter().map(|entries| entries(&rx)).collect();
        let extra = if hooks.is_empty() {
            self.settings
        } else {
            format!("{}hooks:\n{hooks}", self.settings)
        };
        (mm, rx, extra)
    }
}
