//! Reply: a webhook's answer → reply posts on Mattermost (spec §3).
//!
//! The stage reads like Mattermost's own code after the callback answered:
//! [`decode`] reads the answer as Go's decoder does, [`slack`] translates Slack markup,
//! [`build`] makes the `POST /api/v4/posts` bodies (props, overrides, splitting), all pure;
//! [`poster`] adds the I/O (user look-ups for mentions, posting with the bot token) and is the
//! dispatcher's [`AnswerSink`].

pub mod build;
pub mod decode;
pub mod poster;
pub mod slack;

pub use build::{build_reply_posts, HookInfo, ReplyError, ReplySettings, TriggerPost};
pub use decode::{decode_response, DecodeError, WebhookResponse};
pub use poster::{AnswerSink, LogAnswers, Poster};

#[cfg(test)]
mod tests;
