//! The embedded Mattermost API's routes: the REST calls posthook and a client make, answered
//! from a [`Directory`] with Mattermost's JSON (field order, `omitempty`s, AppError bodies).
//! Authentication is the caller's (it knows where the token came from); the tests' stand-in
//! adds its failure knobs around the same routes.

use http::header::HeaderMap;
use http::Method;
use serde::Serialize;
use serde_json::Value;

use super::model::{create_post, edit_post, AppErr, Channel, Directory, Team, User};

/// `X-Version-Id` (`version.build.confighash.licensed`, like the real server).
pub const VERSION_ID: &str = "10.11.0.10.11.0.6f9a1c0e2d8b4a7c9e3f5b1d0a2c4e6f.false";

/// An answer before it is written: a status and JSON, or an AppError.
#[derive(Debug)]
pub enum Reply {
    Json(u16, Vec<u8>),
    Error(AppErr),
}

impl Reply {
    /// The status and body, an AppError written as Mattermost writes it.
    pub fn into_parts(self, request_id: &str) -> (u16, Vec<u8>) {
        match self {
            Reply::Json(status, body) => (status, body),
            Reply::Error(err) => (
                err.status,
                to_json(&AppErrorJson {
                    id: err.id,
                    message: &err.message,
                    detailed_error: &err.detailed,
                    request_id,
                    status_code: err.status,
                    is_oauth: false,
                }),
            ),
        }
    }
}

#[derive(Serialize)]
struct AppErrorJson<'a> {
    id: &'a str,
    message: &'a str,
    detailed_error: &'a str,
    request_id: &'a str,
    status_code: u16,
    is_oauth: bool,
}

#[derive(Serialize)]
struct ChannelJson<'a> {
    id: &'a str,
    create_at: i64,
    update_at: i64,
    delete_at: i64,
    team_id: &'a str,
    #[serde(rename = "type")]
    channel_type: &'a str,
    display_name: &'a str,
    name: &'a str,
    header: &'a str,
    purpose: &'a str,
    last_post_at: i64,
    total_msg_count: i64,
    extra_update_at: i64,
    creator_id: &'a str,
    scheme_id: Option<&'a str>,
    props: Option<Value>,
    group_constrained: Option<bool>,
    shared: Option<bool>,
    total_msg_count_root: i64,
    policy_id: Option<&'a str>,
    last_root_post_at: i64,
}

#[derive(Serialize)]
struct TeamJson<'a> {
    id: &'a str,
    create_at: i64,
    update_at: i64,
    delete_at: i64,
    display_name: &'a str,
    name: &'a str,
    description: &'a str,
    email: &'a str,
    #[serde(rename = "type")]
    team_type: &'a str,
    company_name: &'a str,
    allowed_domains: &'a str,
    invite_id: &'a str,
    allow_open_invite: bool,
    scheme_id: Option<&'a str>,
    group_constrained: Option<bool>,
    policy_id: Option<&'a str>,
    cloud_limits_archived: bool,
}

#[derive(Serialize)]
struct TimezoneJson {
    #[serde(rename = "automaticTimezone")]
    automatic: &'static str,
    #[serde(rename = "manualTimezone")]
    manual: &'static str,
    #[serde(rename = "useAutomaticTimezone")]
    use_automatic: &'static str,
}

/// A sanitised user as `GET /api/v4/users/{id}` returns it; `is_bot` and `bot_description`
/// are omitted for humans, like the real server (`omitempty`).
#[derive(Serialize)]
struct UserJson<'a> {
    id: &'a str,
    create_at: i64,
    update_at: i64,
    delete_at: i64,
    username: &'a str,
    auth_data: &'a str,
    auth_service: &'a str,
    email: String,
    nickname: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    position: &'a str,
    roles: &'a str,
    locale: &'a str,
    timezone: TimezoneJson,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_bot: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bot_description: Option<&'a str>,
    disable_welcome_email: bool,
}

/// `v` as JSON (the types above cannot fail to serialize).
pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub fn channel_json(c: &Channel) -> Vec<u8> {
    to_json(&ChannelJson {
        id: &c.id,
        create_at: c.create_at,
        update_at: c.create_at,
        delete_at: 0,
        team_id: &c.team_id,
        channel_type: &c.channel_type,
        display_name: &c.name,
        name: &c.name,
        header: "",
        purpose: "",
        last_post_at: c.last_post_at,
        total_msg_count: c.total_msg_count,
        extra_update_at: 0,
        creator_id: "",
        scheme_id: None,
        props: None,
        group_constrained: None,
        shared: Some(false),
        total_msg_count_root: c.total_msg_count_root,
        policy_id: None,
        last_root_post_at: c.last_root_post_at,
    })
}

pub fn team_json(t: &Team) -> Vec<u8> {
    to_json(&TeamJson {
        id: &t.id,
        create_at: t.create_at,
        update_at: t.create_at,
        delete_at: 0,
        display_name: &t.name,
        name: &t.name,
        description: "",
        email: "",
        team_type: "O",
        company_name: "",
        allowed_domains: "",
        invite_id: "",
        allow_open_invite: false,
        scheme_id: None,
        group_constrained: None,
        policy_id: None,
        cloud_limits_archived: false,
    })
}

fn user_value(u: &User, is_me: bool) -> UserJson<'_> {
    UserJson {
        id: &u.id,
        create_at: u.create_at,
        update_at: u.create_at,
        delete_at: 0,
        username: &u.username,
        auth_data: "",
        auth_service: "",
        email: if is_me {
            format!("{}@example.com", u.username)
        } else {
            String::new()
        },
        nickname: "",
        first_name: "",
        last_name: "",
        position: "",
        roles: "system_user",
        locale: "en",
        timezone: TimezoneJson {
            automatic: "",
            manual: "",
            use_automatic: "true",
        },
        is_bot: u.is_bot,
        bot_description: u.is_bot.then_some(""),
        disable_welcome_email: false,
    }
}

/// A look-up's answer: 200 with the object's JSON, or the 404 AppError Mattermost gives when it
/// does not exist.
fn found(json: Option<Vec<u8>>, id: &'static str, message: &str) -> Reply {
    match json {
        Some(json) => Reply::Json(200, json),
        None => Reply::Error(AppErr::new(404, id, message)),
    }
}

/// Where the request's session token came from (`ParseAuthTokenFromRequest` order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenLocation {
    Cookie,
    Header,
    Query,
}

/// The value of cookie `name`.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
}

/// The session token as Mattermost finds it: cookie `MMAUTHTOKEN`, then `Authorization:
/// Bearer|Token …`, then `?access_token=`.
pub fn parse_auth_token(headers: &HeaderMap, query: &str) -> Option<(String, TokenLocation)> {
    if let Some(token) = cookie_value(headers, "MMAUTHTOKEN") {
        return Some((token, TokenLocation::Cookie));
    }
    if let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        for (scheme, len) in [("bearer", 6), ("token", 5)] {
            if auth.len() > len
                && auth
                    .get(..len)
                    .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            {
                let token = auth.get(len + 1..).unwrap_or("").to_string();
                return Some((token, TokenLocation::Header));
            }
        }
    }
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty())
        .map(|t| (t, TokenLocation::Query))
}

/// Whether `method` and `segments` (the path split on `/`, without the leading one) name a
/// route [`Directory::answer`] serves.
pub fn is_api_route(method: &Method, segments: &[&str]) -> bool {
    matches!(
        (method, segments),
        (&Method::POST, ["api", "v4", "posts"])
            | (
                &Method::GET,
                ["api", "v4", "channels" | "teams" | "users" | "posts", _]
            )
            | (&Method::POST, ["api", "v4", "users", "ids"])
            | (&Method::PUT, ["api", "v4", "posts", _])
            | (&Method::PUT, ["api", "v4", "posts", _, "patch"])
            | (&Method::GET, ["api", "v4", "users", "username", _])
            | (&Method::GET, ["api", "v4", "teams", "name", _])
            | (
                &Method::GET,
                ["api", "v4", "teams", _, "channels", "name", _]
            )
            | (&Method::POST, ["api", "v4", "channels", "direct"])
    )
}

impl Directory {
    /// The answer of an authenticated `user`'s request, for the routes [`is_api_route`] names;
    /// `None` for any other.
    pub fn answer(
        &mut self,
        method: &Method,
        segments: &[&str],
        user: &User,
        body: &[u8],
    ) -> Option<Reply> {
        let reply = match (method, segments) {
            (&Method::POST, ["api", "v4", "posts"]) => match create_post(self, user, body) {
                Ok((post, _)) => Reply::Json(201, to_json(&post)),
                Err(e) => Reply::Error(e),
            },
            (&Method::PUT, ["api", "v4", "posts", id, rest @ ..]) => {
                match edit_post(self, user, id, body, rest == ["patch"]) {
                    Ok(post) => Reply::Json(200, to_json(&post)),
                    Err(e) => Reply::Error(e),
                }
            }
            (&Method::GET, ["api", "v4", "channels", id]) => found(
                self.channel(id).map(channel_json),
                "app.channel.get.existing.app_error",
                "Unable to find the existing channel.",
            ),
            (&Method::GET, ["api", "v4", "posts", id]) => found(
                self.posts.iter().find(|p| p.id == *id).map(to_json),
                "app.post.get.app_error",
                "Unable to get the post.",
            ),
            (&Method::GET, ["api", "v4", "teams", "name", name]) => found(
                self.teams.iter().find(|t| t.name == *name).map(team_json),
                "app.team.get_by_name.missing.app_error",
                "Unable to find the existing team.",
            ),
            (&Method::GET, ["api", "v4", "teams", team, "channels", "name", name]) => found(
                self.channels
                    .iter()
                    .find(|c| c.team_id == *team && c.name == *name)
                    .map(channel_json),
                "app.channel.get_by_name.missing.app_error",
                "Unable to find the existing channel.",
            ),
            (&Method::GET, ["api", "v4", "teams", id]) => found(
                self.team(id).map(team_json),
                "app.team.get.find.app_error",
                "Unable to find the existing team.",
            ),
            (&Method::GET, ["api", "v4", "users", "username", name]) => found(
                self.users
                    .iter()
                    .find(|u| u.username == *name)
                    .map(|u| to_json(&user_value(u, u.id == user.id))),
                "app.user.get_by_username.app_error",
                "Unable to find an existing account matching your username for this team. This team may require an invite from the team owner to join.",
            ),
            (&Method::GET, ["api", "v4", "users", id]) => {
                let wanted = if *id == "me" { user.id.as_str() } else { id };
                found(
                    self.user(wanted)
                        .map(|u| to_json(&user_value(u, u.id == user.id))),
                    "app.user.missing_account.const",
                    "Unable to find the user.",
                )
            }
            (&Method::POST, ["api", "v4", "channels", "direct"]) => self.direct_channel(body),
            (&Method::POST, ["api", "v4", "users", "ids"]) => {
                let ids: Option<Vec<String>> = serde_json::from_slice(body).ok();
                match ids {
                    Some(ids) if !ids.is_empty() => {
                        let mut seen = Vec::new();
                        let users: Vec<UserJson<'_>> = ids
                            .iter()
                            .filter_map(|id| self.user(id))
                            .filter(|u| {
                                let fresh = !seen.contains(&u.id);
                                seen.push(u.id.clone());
                                fresh
                            })
                            .map(|u| user_value(u, u.id == user.id))
                            .collect();
                        Reply::Json(200, to_json(&users))
                    }
                    _ => Reply::Error(AppErr::invalid_body("user_ids")),
                }
            }
            _ => return None,
        };
        Some(reply)
    }

    /// Mattermost's createDirectChannel: two user ids; the channel is made once, named by the
    /// sorted ids joined with "__", with no team.
    fn direct_channel(&mut self, body: &[u8]) -> Reply {
        let ids: Option<Vec<String>> = serde_json::from_slice(body).ok();
        match ids {
            Some(ids) if ids.len() == 2 && ids.iter().all(|id| self.user(id).is_some()) => {
                let mut sorted = ids.clone();
                sorted.sort();
                let name = sorted.join("__");
                if !self.channels.iter().any(|c| c.name == name) {
                    self.add_channel(&super::model::new_id(), "", &name, "D");
                }
                match self.channels.iter().find(|c| c.name == name) {
                    Some(c) => Reply::Json(201, channel_json(c)),
                    None => Reply::Error(AppErr::invalid_body("user_ids")),
                }
            }
            _ => Reply::Error(AppErr::invalid_body("user_ids")),
        }
    }
}
