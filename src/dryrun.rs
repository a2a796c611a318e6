//! `posthook match`: a dry run. Which hooks a message would fire (in order, with the trigger
//! word each reports) and, for each callback URL, the exact request a delivery would send —
//! method, URL, header lines as on the wire, body — with nothing sent. Decided and encoded by
//! the code a real delivery uses ([`Live::matches`], [`admits_author`], [`Payload`], and the
//! request builder and signer of [`crate::webhook`]); a dry run has no real post, so the post
//! id and timestamp are placeholders, and the hook token (and a signature) are masked.
//!
//! Without `--resolve` nothing is asked of Mattermost: the channel and user are ids, the
//! channel type is `--type` (default `O`), the names in the payload are placeholders, hooks
//! scoped to a team need `--team`, and hooks filtering on the author need `--resolve`; such
//! hooks are listed as undecided. With `--resolve` the bot token looks them up (the channel
//! and user may then be names: `team/channel`, `username`).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::config::ContentType;
use crate::config::{Config, Event, MASKED};
use crate::dispatch::admits_author;
use crate::live::Live;
use crate::mattermost::model::{is_valid_id, User};
use crate::mattermost::MattermostClient;
use crate::net::guard::SystemResolver;
use crate::stats::Stats;
use crate::webhook::{
    add_signing, build_request, mime, DeliveryError, Extras, Payload, SendOptions,
};
use url::Url;

/// The placeholder post id of a dry run (26 characters, as an id).
pub const POST_ID: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxx";
/// The placeholder `webhook-id` of a dry run.
pub const WEBHOOK_ID: &str = "msg_xxxxxxxxxxxxxxxxxxxxxxxxxx";

/// What is asked: the message and where it is posted.
#[derive(Debug, Clone, Default)]
pub struct Question {
    /// A channel id, or with `resolve` also `team-name/channel-name`.
    pub channel: String,
    /// A user id, or with `resolve` also a username.
    pub user: String,
    pub team: Option<String>,
    /// `O`, `P`, `D` or `G`; `None`: the server's (with `resolve`), else `O`.
    pub channel_type: Option<String>,
    pub root: String,
    pub edited: bool,
    pub resolve: bool,
    pub message: String,
}

/// One request a delivery would send.
#[derive(Debug, Clone)]
pub struct DryRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A hook the message fires.
#[derive(Debug, Clone)]
pub struct Fired {
    /// The hook's `id`, else its position.
    pub id: String,
    pub trigger_word: String,
    pub requests: Vec<DryRequest>,
}

/// The answer: the hooks that fire, and those that cannot be decided without more.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub fired: Vec<Fired>,
    /// (hook, what it needs).
    pub undecided: Vec<(String, &'static str)>,
}

/// Where the post is, and by whom, as far as known.
struct Place {
    channel_id: String,
    team_id: Option<String>,
    channel_type: String,
    channel_name: String,
    team_name: String,
    author: Option<User>,
    user_id: String,
}

/// Answers `q` against `config`'s hooks (asking Mattermost with `q.resolve`).
pub async fn answer(config: &Config, q: &Question) -> Result<Answer, String> {
    let place = if q.resolve {
        resolved(config, q).await?
    } else {
        let channel_type = q.channel_type.clone().unwrap_or_else(|| "O".into());
        if !is_valid_id(&q.channel) || !is_valid_id(&q.user) {
            return Err(
                "--channel and --user must be ids without --resolve (names need --resolve)".into(),
            );
        }
        Place {
            channel_id: q.channel.clone(),
            team_id: q.team.clone(),
            channel_type: channel_type.clone(),
            channel_name: "CHANNEL_NAME".into(),
            // A direct or group message has no team.
            team_name: if matches!(channel_type.as_str(), "D" | "G") {
                ""
            } else {
                "TEAM_NAME"
            }
            .into(),
            author: None,
            user_id: q.user.clone(),
        }
    };
    let live = Live::build(config, Arc::new(SystemResolver)).map_err(|e| e.to_string())?;
    let event = if q.edited {
        Event::Edited
    } else {
        Event::Posted
    };
    let at = |team: &str| {
        let where_ = (place.channel_id.as_str(), team, place.channel_type.as_str());
        live.matches(event, where_, &q.root, &q.message)
    };
    let mut out = Answer::default();
    let matches = at(place.team_id.as_deref().unwrap_or(""));
    if place.team_id.is_none() {
        // Which team-scoped hooks would fire in some team: undecided without one.
        let mut teams: Vec<&str> = live
            .hooks
            .iter()
            .filter_map(|h| h.team_id.as_deref())
            .collect();
        teams.sort_unstable();
        teams.dedup();
        for team in teams {
            for m in at(team) {
                if live.hooks[m.hook].team_id.as_deref() != Some(team) {
                    continue;
                }
                let name = name(&live, m.hook);
                if !out.undecided.iter().any(|(n, _)| *n == name) {
                    out.undecided
                        .push((name, "its team: give --team TEAM_ID or --resolve"));
                }
            }
        }
    }
    for m in matches {
        let hook = &live.hooks[m.hook];
        // Without the author's record, only its id proves anything (as for the dispatcher
        // when the look-up fails): a from_users entry equal to it.
        let by_id = !hook.beyond.exclude_bots
            && hook
                .beyond
                .from_users
                .as_ref()
                .is_some_and(|u| u.contains(&place.user_id));
        if hook.beyond.needs_author() && place.author.is_none() && !by_id {
            out.undecided
                .push((name(&live, m.hook), "its author filters: give --resolve"));
            continue;
        }
        if !admits_author(&hook.beyond, &place.user_id, place.author.as_ref()) {
            continue;
        }
        let payload = Payload {
            token: MASKED,
            team_id: hook
                .team_id
                .as_deref()
                .or(place.team_id.as_deref())
                .unwrap_or(if place.team_name.is_empty() {
                    ""
                } else {
                    "TEAM_ID"
                }),
            team_domain: &place.team_name,
            channel_id: &place.channel_id,
            channel_name: &place.channel_name,
            create_at_ms: 0,
            user_id: &place.user_id,
            user_name: place
                .author
                .as_ref()
                .map_or("USER_NAME", |a| a.username.as_str()),
            post_id: POST_ID,
            text: &q.message,
            trigger_word: m.trigger_word,
            file_ids: "",
            extras: hook.beyond.payload_extras.then_some(Extras {
                root_id: &q.root,
                channel_type: &place.channel_type,
                event: event.as_str(),
                edit_at: 0,
            }),
        };
        let body = Bytes::from(payload.encode(hook.content_type));
        let options = SendOptions {
            webhook_id: hook.sending.has_webhook_id().then_some(WEBHOOK_ID),
            secrets: &hook.sending.signing_secrets,
            timeout: None,
        };
        let mut requests = Vec::new();
        for url in &hook.callback_urls {
            let mut headers = wire_headers(url, hook.content_type, &body, options, 0)
                .map_err(|e| e.to_string())?;
            for (k, v) in headers.iter_mut() {
                if k == "Webhook-Signature" {
                    *v = format!("v1,{MASKED}");
                }
            }
            requests.push(DryRequest {
                method: "POST",
                url: url.to_string(),
                headers,
                body: body.clone(),
            });
        }
        out.fired.push(Fired {
            id: name(&live, m.hook),
            trigger_word: m.trigger_word.to_string(),
            requests,
        });
    }
    Ok(out)
}

fn name(live: &Live, i: usize) -> String {
    match &live.hooks[i].beyond.id {
        Some(id) => id.clone(),
        None => format!("hooks[{i}]"),
    }
}

/// The channel, team and author, asked of Mattermost with the bot token.
async fn resolved(config: &Config, q: &Question) -> Result<Place, String> {
    let mm = MattermostClient::from_config(config, Arc::new(Stats::default()))
        .map_err(|e| e.to_string())?;
    let channel = match q.channel.split_once('/') {
        Some((team, channel)) => {
            let team = mm
                .team_by_name(team)
                .await
                .map_err(|e| format!("team {team}: {e}"))?;
            mm.channel_by_name(&team.id, channel)
                .await
                .map_err(|e| format!("channel {}: {e}", q.channel))?
        }
        None => mm
            .channel(&q.channel)
            .await
            .map_err(|e| format!("channel {}: {e}", q.channel))?
            .as_ref()
            .clone(),
    };
    let team = match channel.team_id.as_str() {
        "" => None,
        id => Some(
            mm.team(id)
                .await
                .map_err(|e| format!("team {id}: {e}"))?
                .as_ref()
                .clone(),
        ),
    };
    let author = match mm.user(&q.user).await {
        Ok(u) => u.as_ref().clone(),
        Err(_) => mm
            .user_by_username(&q.user)
            .await
            .map_err(|e| format!("user {}: {e}", q.user))?,
    };
    Ok(Place {
        channel_id: channel.id.clone(),
        team_id: Some(channel.team_id.clone()),
        channel_type: q.channel_type.clone().unwrap_or(channel.channel_type),
        channel_name: channel.name,
        team_name: team.map(|t| t.name).unwrap_or_default(),
        user_id: author.id.clone(),
        author: Some(author),
    })
}

/// The answer for a terminal.
pub fn text(a: &Answer) -> String {
    let mut out = String::new();
    for f in &a.fired {
        out.push_str(&format!(
            "hook {} fires (trigger word {:?})\n",
            f.id, f.trigger_word
        ));
        for r in &f.requests {
            out.push_str(&format!("\n  {} {}\n", r.method, r.url));
            for (k, v) in &r.headers {
                out.push_str(&format!("  {k}: {v}\n"));
            }
            out.push_str(&format!("\n  {}\n\n", String::from_utf8_lossy(&r.body)));
        }
    }
    if a.fired.is_empty() {
        out.push_str("no hook fires\n");
    }
    for (hook, needs) in &a.undecided {
        out.push_str(&format!("hook {hook} undecided: needs {needs}\n"));
    }
    out
}

/// The answer as one JSON object.
pub fn json(a: &Answer) -> Value {
    let hooks: Vec<Value> = a
        .fired
        .iter()
        .map(|f| {
            let requests: Vec<Value> = f
                .requests
                .iter()
                .map(|r| {
                    json!({
                        "method": r.method,
                        "url": r.url,
                        "headers": r.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                        "body": String::from_utf8_lossy(&r.body),
                    })
                })
                .collect();
            json!({"id": f.id, "trigger_word": f.trigger_word, "requests": requests})
        })
        .collect();
    let undecided: Vec<Value> = a
        .undecided
        .iter()
        .map(|(h, n)| json!({"id": h, "needs": n}))
        .collect();
    json!({"hooks": hooks, "undecided": undecided})
}

/// The header lines of a delivery's first request to `url` as they go on the wire (built by
/// the functions a delivery uses; names in the title case hyper writes, `Host` and
/// `Content-Length` last, as hyper adds them): what `posthook match` shows.
fn wire_headers(
    url: &Url,
    content_type: ContentType,
    body: &Bytes,
    options: SendOptions<'_>,
    timestamp: i64,
) -> Result<Vec<(String, String)>, DeliveryError> {
    let mut request = build_request(url, mime(content_type), Some(body), None)?;
    add_signing(&mut request, options, timestamp, body)?;
    let title = |name: &str| -> String {
        name.split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-")
    };
    let mut lines: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                title(k.as_str()),
                String::from_utf8_lossy(v.as_bytes()).into(),
            )
        })
        .collect();
    let host = url.host_str().unwrap_or_default();
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    lines.push(("Host".into(), host));
    lines.push(("Content-Length".into(), body.len().to_string()));
    Ok(lines)
}
