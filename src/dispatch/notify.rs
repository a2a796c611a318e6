//! Notify: a hook's `notify` tells a person, by a direct message from the bot, that the hook
//! keeps failing (`after_failures` finally-failed deliveries in a row) or was disabled. At most
//! one message per hook per hour; a delivered request starts the count again. Counts and the
//! hourly limit are this process's (each replica counts what it sent).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::Shared;
use crate::config::Notify;
use crate::stats::Stats;
use crate::webhook::Delivery;

/// Messages per hook, at most one in this long.
const EVERY: Duration = Duration::from_secs(3600);

/// Per hook (by name): failures in a row, and when a message was last sent.
#[derive(Default)]
pub(super) struct Notifications {
    failures: Mutex<HashMap<String, u32>>,
    sent: Mutex<HashMap<String, Instant>>,
}

impl Shared {
    /// Counts how a request of `d`'s hook ended (`error`: finally failed) and tells its
    /// `notify` user when the failures in a row reach `after_failures`.
    pub(super) fn note_outcome(&self, d: &Delivery, error: Option<&str>) {
        let Some(notify) = &d.hook.sending.notify else {
            return;
        };
        let name = d.hook.name(d.hook_index).to_string();
        let Ok(mut failures) = self.notifications.failures.lock() else {
            return;
        };
        let Some(error) = error else {
            failures.remove(&name);
            return;
        };
        let n = failures.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n < notify.after_failures {
            return;
        }
        let count = *n;
        drop(failures);
        let text = format!(
            "posthook: hook `{name}` ({:?}) has failed {count} deliveries in a row; the last one, to {}: {error}. See `posthook deliveries list --hook {name} --state failed`.",
            d.hook.display_name, d.callback_host
        );
        if self.send_notice(&name, notify, text) {
            if let Ok(mut failures) = self.notifications.failures.lock() {
                failures.remove(&name);
            }
        }
    }

    /// Tells `d`'s hook's `notify` user that the hook was disabled, and why.
    pub(super) fn notify_disabled(&self, d: &Delivery, reason: &str, until: &str) {
        let Some(notify) = &d.hook.sending.notify else {
            return;
        };
        let name = d.hook.name(d.hook_index).to_string();
        let text = format!(
            "posthook: hook `{name}` ({:?}) is disabled: {reason}. It fires nothing {until}.",
            d.hook.display_name
        );
        self.send_notice(&name, notify, text);
    }

    /// Sends `text` to `notify.username` in the background unless hook `name` had a message
    /// within the hour; true when one goes out.
    fn send_notice(&self, name: &str, notify: &Notify, text: String) -> bool {
        let Ok(mut sent) = self.notifications.sent.lock() else {
            return false;
        };
        if sent.get(name).is_some_and(|at| at.elapsed() < EVERY) {
            return false;
        }
        sent.insert(name.to_string(), Instant::now());
        drop(sent);
        let mm = self.mm.clone();
        let stats = self.stats.clone();
        let username = notify.username.clone();
        let hook = name.to_string();
        tokio::spawn(async move {
            let result = async {
                let me = mm.me().await.map_err(|e| e.to_string())?;
                let user = mm
                    .user_by_username(&username)
                    .await
                    .map_err(|e| e.to_string())?;
                let channel = mm
                    .direct_channel(&me.id, &user.id)
                    .await
                    .map_err(|e| e.to_string())?;
                let post = serde_json::json!({"channel_id": channel.id, "message": text});
                mm.create_post::<serde::de::IgnoredAny>(&post)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match result {
                Ok(_) => {
                    Stats::inc(&stats.notifications_sent);
                    info!("notify hook={hook} user={username} outcome=sent");
                }
                Err(e) => {
                    Stats::inc(&stats.notifications_failed);
                    warn!("notify hook={hook} user={username} outcome=failed error={e:?}");
                }
            }
        });
        true
    }
}
