//! Retries: what one attempt's result means, and when a hook with `retry` tries again
//! (README "Retries").
//!
//! An answer that yields a reply is a delivery, whatever its status: the reply is posted and
//! never repeated. A hook without `retry` has one attempt, and any answer counts as delivered,
//! as it always has. With `retry`, a 2xx answer is delivered; 5xx, 429, timeouts and failures
//! to connect or read are tried again while attempts remain; any other status, a refused
//! address or an unusable request is final. `410 Gone` disables the hook in every case.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

use crate::config::{Retry, Sending};
use crate::reply::decode_response;
use crate::webhook::{DeliveryError, WebhookAnswer};

/// What to do after an attempt.
#[derive(Debug)]
pub(super) enum Verdict {
    /// The answer ends the delivery (as delivered); the reply stage gets it.
    Delivered,
    /// The delivery failed for good.
    Failed(DeliveryError),
    /// Try again after this delay.
    Retry(Duration),
}

/// Whether an answer disables its hook (`410 Gone`: the receiver wants no more).
pub(super) fn is_gone(answer: &WebhookAnswer) -> bool {
    answer.status == 410
}

/// The verdict on attempt `attempt` (1 for the first) of a hook sending as `sending`.
pub(super) fn judge(
    result: Result<&WebhookAnswer, &DeliveryError>,
    sending: &Sending,
    attempt: u32,
) -> Verdict {
    let retry = sending.retry;
    let again = |retry_after: Option<Duration>| match retry {
        Some(r) if attempt < r.attempts => Some(Verdict::Retry(delay(&r, attempt, retry_after))),
        _ => None,
    };
    match result {
        Ok(answer) => {
            if retry.is_none() || yields_reply(answer) || (200..300).contains(&answer.status) {
                return Verdict::Delivered;
            }
            let retryable = answer.status >= 500 || answer.status == 429;
            if retryable && !is_gone(answer) {
                if let Some(v) = again(answer.retry_after) {
                    return v;
                }
            }
            Verdict::Failed(DeliveryError::Status(answer.status))
        }
        Err(e) => {
            let retryable = matches!(
                e,
                DeliveryError::Timeout(_) | DeliveryError::Request(_) | DeliveryError::Body(_)
            );
            match (retryable, again(None)) {
                (true, Some(v)) => v,
                _ => Verdict::Failed(clone_error(e)),
            }
        }
    }
}

/// Whether `answer` makes the reply stage post something (then it is never retried).
pub(super) fn yields_reply(answer: &WebhookAnswer) -> bool {
    matches!(decode_response(&answer.body), Ok(Some(r)) if r.wants_reply())
}

/// The wait before retry `n` (1 for the first): min(max, initial·2ⁿ⁻¹) ±20 %, and at least
/// min(`Retry-After`, max).
pub(super) fn delay(retry: &Retry, n: u32, retry_after: Option<Duration>) -> Duration {
    let factor = 2u32.saturating_pow(n.saturating_sub(1));
    let base = retry.initial.saturating_mul(factor).min(retry.max);
    let jittered = base.mul_f64(0.8 + 0.4 * unit_random());
    match retry_after {
        Some(asked) => jittered.max(asked.min(retry.max)),
        None => jittered,
    }
}

/// A uniform number in [0, 1).
fn unit_random() -> f64 {
    let mut bytes = [0u8; 4];
    // The system's generator failing is not expected; no jitter is the safe fallback.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// The final error, kept for the log and the accounting (hyper's errors cannot be cloned:
/// their text is kept).
fn clone_error(e: &DeliveryError) -> DeliveryError {
    match e {
        DeliveryError::Refused(s) => DeliveryError::Refused(s.clone()),
        DeliveryError::Timeout(d) => DeliveryError::Timeout(*d),
        DeliveryError::Status(s) => DeliveryError::Status(*s),
        DeliveryError::TooLarge => DeliveryError::TooLarge,
        other => DeliveryError::Http(
            other
                .to_string()
                .trim_start_matches("request failed: ")
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn answer(status: u16, body: &str) -> WebhookAnswer {
        WebhookAnswer {
            status,
            body: Bytes::from(body.to_string()),
            retry_after: None,
        }
    }

    fn retried(attempts: u32) -> Sending {
        Sending {
            retry: Some(Retry {
                attempts,
                initial: Duration::from_secs(5),
                max: Duration::from_secs(60),
            }),
            ..Sending::default()
        }
    }

    /// Sending, result, attempt, expected verdict, why.
    type Row<'a> = (
        &'a Sending,
        Result<WebhookAnswer, &'a DeliveryError>,
        u32,
        &'a str,
        &'a str,
    );

    #[test]
    fn verdicts_follow_the_status_the_reply_and_the_attempts_left() {
        let once = Sending::default();
        let three = retried(3);
        let timeout = DeliveryError::Timeout(Duration::from_secs(1));
        let refused = DeliveryError::Refused("10.0.0.1 is internal".into());
        let reply = r#"{"text":"on it"}"#;
        let is_retry = |v: &Verdict| matches!(v, Verdict::Retry(_));
        let rows: &[Row<'_>] = &[
            (
                &once,
                Ok(answer(500, "")),
                1,
                "delivered",
                "no retry: any answer, as today",
            ),
            (&once, Err(&timeout), 1, "failed", "no retry: one attempt"),
            (&three, Ok(answer(204, "")), 1, "delivered", "2xx"),
            (&three, Ok(answer(500, "")), 1, "retry", "5xx"),
            (&three, Ok(answer(429, "")), 2, "retry", "429"),
            (&three, Ok(answer(503, "")), 3, "failed", "no attempt left"),
            (
                &three,
                Ok(answer(500, reply)),
                1,
                "delivered",
                "a reply is never retried",
            ),
            (
                &three,
                Ok(answer(404, "")),
                1,
                "failed",
                "other statuses are final",
            ),
            (&three, Ok(answer(410, "")), 1, "failed", "gone is final"),
            (&three, Err(&timeout), 1, "retry", "a timeout"),
            (
                &three,
                Err(&refused),
                1,
                "failed",
                "a refused address is final",
            ),
        ];
        for (sending, result, attempt, want, why) in rows {
            let v = judge(result.as_ref().map_err(|e| *e), sending, *attempt);
            let got = match &v {
                Verdict::Delivered => "delivered",
                Verdict::Failed(_) => "failed",
                v if is_retry(v) => "retry",
                _ => unreachable!(),
            };
            assert_eq!(got, *want, "{why}");
        }
    }

    #[test]
    fn delays_double_up_to_the_bound_with_jitter_and_honour_retry_after() {
        let r = Retry {
            attempts: 10,
            initial: Duration::from_secs(5),
            max: Duration::from_secs(60),
        };
        for (n, base) in [
            (1, 5.0),
            (2, 10.0),
            (3, 20.0),
            (4, 40.0),
            (5, 60.0),
            (9, 60.0),
        ] {
            for _ in 0..50 {
                let d = delay(&r, n, None).as_secs_f64();
                assert!(d >= base * 0.8 && d <= base * 1.2, "retry {n}: {d}");
            }
        }
        let long = delay(&r, 1, Some(Duration::from_secs(30)));
        assert_eq!(long, Duration::from_secs(30), "Retry-After lengthens");
        let capped = delay(&r, 1, Some(Duration::from_secs(3600)));
        assert_eq!(capped, Duration::from_secs(60), "up to max_seconds");
        let short = delay(&r, 3, Some(Duration::from_secs(1))).as_secs_f64();
        assert!(short >= 16.0, "never shortens: {short}");
    }
}
