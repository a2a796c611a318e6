//! Mattermost's own shapes, as far as posthook reads or writes them: the post being created (the
//! request the proxy watches), the created post (Mattermost's 201), the channel, team and user
//! look-ups, and the API paths. Each is decoded the way Mattermost's Go code reads it (see the
//! spec §6 and `../shared/spec/mattermost-api.md`); nothing here does I/O.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

use crate::go;

/// The path whose `POST` creates a post.
pub const POSTS_PATH: &str = "/api/v4/posts";

/// The post id of an edit's path: `/api/v4/posts/{id}` (the whole post) or
/// `/api/v4/posts/{id}/patch` (some of its fields), the two `PUT`s that edit a post.
pub fn edited_post_id(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(POSTS_PATH)?.strip_prefix('/')?;
    let id = rest.strip_suffix("/patch").unwrap_or(rest);
    is_valid_id(id).then_some(id)
}

/// Where replies are posted.
pub const REPLY_PATH: &str = "/api/v4/posts?set_online=false";

/// What the request-side decision needs from the post being created, read the way
/// Mattermost's Go decoder reads it: keys match case-insensitively (Go's folding) and the
/// last of duplicate keys wins; other members are skipped without being built.
#[derive(Default)]
pub struct PostRequest<'a> {
    pub channel_id: Cow<'a, str>,
    pub message: Cow<'a, str>,
    /// Whether `message` was given, not `null` (a patch without it keeps the post's message).
    pub has_message: bool,
}

/// A string that borrows from the input when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for PostRequest<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PostRequest<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a post object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<PostRequest<'de>, A::Error> {
                let mut post = PostRequest::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    let is_message = go::key_matches(&key, "message");
                    let slot = if go::key_matches(&key, "channel_id") {
                        &mut post.channel_id
                    } else if is_message {
                        &mut post.message
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        continue;
                    };
                    // Go leaves a field alone for `null` (a patch's message then stays).
                    if let Some(Text(v)) = map.next_value::<Option<Text<'de>>>()? {
                        *slot = v;
                        post.has_message |= is_message;
                    }
                }
                Ok(post)
            }
        }
        d.deserialize_map(V)
    }
}

/// The created post, as Mattermost's 201 returns it (only what webhooks use).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreatedPost {
    pub id: String,
    #[serde(default)]
    pub create_at: i64,
    /// When the message was last edited (ms), `0` for a post never edited.
    #[serde(default)]
    pub edit_at: i64,
    /// When the post was last changed in any way (ms).
    #[serde(default)]
    pub update_at: i64,
    #[serde(default)]
    pub user_id: String,
    pub channel_id: String,
    #[serde(default)]
    pub root_id: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub file_ids: Option<Vec<String>>,
    /// Only `props.from_webhook` matters here; everything else in `props` is skipped
    /// without being built, so deep nesting (Go accepts 10 000 levels) cannot fail the parse.
    #[serde(default)]
    pub props: Option<PostProps>,
}

/// The part of a post's `props` that posthook reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PostProps {
    /// `props.from_webhook == "true"` (the string; any other value is false).
    #[serde(default)]
    pub from_webhook: StringIsTrue,
}

/// A JSON value that is true only when it is the string `"true"`; any other value is skipped
/// without being built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StringIsTrue(pub bool);

impl<'de> Deserialize<'de> for StringIsTrue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringIsTrue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(v == "true"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_unit<E>(self) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_none<E>(self) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<StringIsTrue, D::Error> {
                StringIsTrue::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<StringIsTrue, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(StringIsTrue(false))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<StringIsTrue, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(StringIsTrue(false))
            }
        }
        d.deserialize_any(V)
    }
}

impl CreatedPost {
    pub fn has_from_webhook_prop(&self) -> bool {
        self.props.as_ref().is_some_and(|p| p.from_webhook.0)
    }
}

/// A channel, as far as webhooks need it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Channel {
    pub id: String,
    #[serde(default)]
    pub team_id: String,
    /// `O` public, `P` private, `D` direct, `G` group.
    #[serde(rename = "type", default)]
    pub channel_type: String,
    #[serde(default)]
    pub name: String,
}

/// A team, as far as webhooks need it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Team {
    pub id: String,
    /// The URL slug, sent as `team_domain`.
    #[serde(default)]
    pub name: String,
}

/// A user, as far as webhooks need it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub username: String,
    /// A bot account (`omitempty`: absent for a person).
    #[serde(default)]
    pub is_bot: bool,
}

/// Mattermost ids are 26 lower-case letters and digits; anything that could change the
/// request path is refused before it reaches a URL.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_paths_name_their_post() {
        let id = "4xp9fdt8zjbqfy5pnkb8bq7xyo";
        let rows: &[(&str, Option<&str>)] = &[
            ("/api/v4/posts/4xp9fdt8zjbqfy5pnkb8bq7xyo", Some(id)),
            ("/api/v4/posts/4xp9fdt8zjbqfy5pnkb8bq7xyo/patch", Some(id)),
            ("/api/v4/posts", None),
            ("/api/v4/posts/", None),
            ("/api/v4/posts/4xp9fdt8zjbqfy5pnkb8bq7xyo/pin", None),
            ("/api/v4/posts/4xp9fdt8zjbqfy5pnkb8bq7xyo/reactions", None),
            ("/api/v4/posts/4xp9fdt8zjbqfy5pnkb8bq7xyo/patch/", None),
            ("/api/v4/posts/../users/me", None),
            ("/api/v4/postsx/4xp9fdt8zjbqfy5pnkb8bq7xyo", None),
        ];
        for (path, want) in rows {
            assert_eq!(edited_post_id(path), *want, "{path}");
        }
    }

    #[test]
    fn a_patch_without_a_message_says_so() {
        let read = |json: &str| {
            let p: PostRequest = serde_json::from_str(json).unwrap();
            (p.message.into_owned(), p.has_message)
        };
        assert_eq!(read(r#"{"message":"hi"}"#), ("hi".into(), true));
        assert_eq!(read(r#"{"MESSAGE":""}"#), ("".into(), true), "Go's folding");
        assert_eq!(read(r#"{"is_pinned":true}"#), ("".into(), false));
        assert_eq!(
            read(r#"{"message":null}"#),
            ("".into(), false),
            "null leaves the message as it was"
        );
    }

    #[test]
    fn created_post_parses_real_shapes() {
        let p: CreatedPost = serde_json::from_str(
            r#"{"id":"p","create_at":1,"update_at":1,"user_id":"u","channel_id":"c","root_id":"","message":"m","type":"","props":{"from_webhook":"true"},"hashtags":"","file_ids":null,"metadata":{}}"#,
        )
        .unwrap();
        assert!(p.has_from_webhook_prop());
        assert!(p.file_ids.is_none());
        let p: CreatedPost =
            serde_json::from_str(r#"{"id":"p","channel_id":"c","props":{"from_webhook":true}}"#)
                .unwrap();
        assert!(
            !p.has_from_webhook_prop(),
            "only the string \"true\" counts"
        );
    }
}
