//! HTTP Basic authentication, as Mesos (`--credentials`, `--authenticate_*`) and Marathon
//! (`--http_credentials`, `--http_realm`) do it: who may call is a set of principals with their
//! secrets; a request without a matching `Authorization: Basic` header gets 401 with a
//! `WWW-Authenticate: Basic realm="..."` challenge, and nothing else happens.

use std::collections::BTreeMap;
use std::fmt;

use axum::body::Body;
use axum::response::Response;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;

/// Principals and their secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials(BTreeMap<String, String>);

impl fmt::Debug for Credentials {
    /// The principals only: secrets never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    credentials: Vec<CredentialEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialEntry {
    principal: String,
    #[serde(default)]
    secret: String,
}

impl CredentialEntry {
    /// The principal and its secret, both non-empty; `what` names the entry in an error.
    fn checked(self, what: &str) -> Result<(String, String), String> {
        if self.principal.is_empty() {
            return Err(format!("{what} has an empty principal"));
        }
        if self.secret.is_empty() {
            return Err(format!(
                "{what} (principal {:?}) has no secret",
                self.principal
            ));
        }
        Ok((self.principal, self.secret))
    }
}

impl Credentials {
    /// One principal (Marathon's `--http_credentials user:password`).
    pub fn pair(text: &str) -> Result<Credentials, String> {
        let (user, password) = text
            .split_once(':')
            .ok_or_else(|| "expected USER:PASSWORD".to_string())?;
        if user.is_empty() || password.is_empty() {
            return Err("expected USER:PASSWORD, both non-empty".into());
        }
        Ok(Credentials(BTreeMap::from([(
            user.to_string(),
            password.to_string(),
        )])))
    }

    /// A Mesos credentials file: JSON `{"credentials": [{"principal": .., "secret": ..}]}`, or
    /// Mesos' text form, one `principal secret` per line. Every principal needs a secret (an
    /// empty one would let anyone in); errors name the line or entry, never a secret.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let mut out = BTreeMap::new();
        if text.trim_start().starts_with('{') {
            let file: CredentialsFile =
                serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text))
                    .map_err(|e| format!("at {}: {}", e.path(), e.inner()))?;
            for (index, entry) in file.credentials.into_iter().enumerate() {
                let (principal, secret) = entry.checked(&format!("credentials[{index}]"))?;
                out.insert(principal, secret);
            }
        } else {
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                let [principal, secret] = words[..] else {
                    return Err(format!(
                        "line {}: expected `principal secret`, found {} words",
                        number + 1,
                        words.len()
                    ));
                };
                out.insert(principal.to_string(), secret.to_string());
            }
        }
        if out.is_empty() {
            return Err("no credentials".into());
        }
        Ok(Credentials(out))
    }

    /// Reads a credentials file (see [`Credentials::parse`]).
    pub fn load(path: &std::path::Path) -> Result<Credentials, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("credentials file {}: {e}", path.display()))?;
        Credentials::parse(&text).map_err(|e| format!("credentials file {}: {e}", path.display()))
    }

    /// The principal's secret (to answer or check a challenge), if it is known.
    pub fn secret_of(&self, principal: &str) -> Option<&str> {
        self.0.get(principal).map(String::as_str)
    }

    /// Whether `secret` is the principal's (compared in time independent of where they differ).
    pub fn accepts(&self, principal: &str, secret: &str) -> bool {
        self.0
            .get(principal)
            .is_some_and(|known| same_bytes(known.as_bytes(), secret.as_bytes()))
    }

    /// The principal a request's `Authorization: Basic` header proves, if any.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let (principal, secret) = basic(headers)?;
        self.accepts(&principal, &secret).then_some(principal)
    }
}

/// One principal and its secret: what an agent proves to the master (Mesos' `--credential`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub principal: String,
    pub secret: String,
}

impl fmt::Debug for Credential {
    /// The principal only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Mesos' `--credential` file: JSON `{"principal": .., "secret": ..}`, or one
    /// `principal secret` line; a credentials file with exactly one entry is taken too.
    pub fn parse(text: &str) -> Result<Credential, String> {
        let single = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) if value.get("credentials").is_none() => Some(value),
            Ok(_) => None,
            Err(e) if text.trim_start().starts_with('{') => return Err(e.to_string()),
            Err(_) => None,
        };
        if let Some(value) = single {
            let entry: CredentialEntry = serde_path_to_error::deserialize(value)
                .map_err(|e| format!("at {}: {}", e.path(), e.inner()))?;
            let (principal, secret) = entry.checked("the credential")?;
            return Ok(Credential { principal, secret });
        }
        let mut entries = Credentials::parse(text)?.0.into_iter();
        match (entries.next(), entries.next()) {
            (Some((principal, secret)), None) => Ok(Credential { principal, secret }),
            _ => Err("expected one credential, found several".into()),
        }
    }

    /// Reads a credential file (see [`Credential::parse`]).
    pub fn load(path: &std::path::Path) -> Result<Credential, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("credential file {}: {e}", path.display()))?;
        Credential::parse(&text).map_err(|e| format!("credential file {}: {e}", path.display()))
    }
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The (principal, secret) of an `Authorization: Basic` header.
pub fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (principal, secret) = text.split_once(':')?;
    Some((principal.to_string(), secret.to_string()))
}

/// The `Authorization` header value that proves `principal`.
pub fn authorization(principal: &str, secret: &str) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{principal}:{secret}"));
    HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"))
}

/// 401 with the challenge for `realm`, and a JSON body saying why.
pub fn unauthorized(realm: &str) -> Response {
    let mut response = Response::new(Body::from(
        serde_json::json!({"message": "Invalid username or password."}).to_string(),
    ));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let challenge = format!("Basic realm=\"{}\"", realm.replace(['"', '\\'], ""));
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Challenge-response with a shared secret, for node-to-node links (coord's peers): the side that
/// accepts sends a fresh nonce, the side that connects answers with
/// `HMAC-SHA256(secret, context || nonce)`. The answer proves the secret without showing it and
/// is worth nothing on another connection (another nonce).
pub mod challenge {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    /// The nonce's length.
    pub const NONCE_BYTES: usize = 32;

    /// A fresh nonce drawn from `rng` (the node's: the simulation stays reproducible).
    pub fn nonce(rng: &mut impl rand::RngCore) -> Vec<u8> {
        use rand::Rng as _;
        (0..NONCE_BYTES).map(|_| rng.random::<u8>()).collect()
    }

    /// The MAC over `context` and `nonce` keyed by `secret` (HMAC takes a key of any length).
    fn mac(secret: &[u8], context: &str, nonce: &[u8]) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        mac.update(context.as_bytes());
        mac.update(&[0]);
        mac.update(nonce);
        Some(mac)
    }

    /// The answer to `nonce` for a link of kind `context`.
    pub fn answer(secret: &[u8], context: &str, nonce: &[u8]) -> Vec<u8> {
        mac(secret, context, nonce)
            .map(|mac| mac.finalize().into_bytes().to_vec())
            .unwrap_or_default()
    }

    /// Whether `answer` is the answer to `nonce` (compared in constant time).
    pub fn verify(secret: &[u8], context: &str, nonce: &[u8], answer: &[u8]) -> bool {
        mac(secret, context, nonce).is_some_and(|mac| mac.verify_slice(answer).is_ok())
    }

    /// One direction of a connection whose frames are sealed with a key of that connection:
    /// each frame carries a tag over its sequence number and bytes (HMAC-SHA256, 16 bytes), so
    /// a frame that was changed, inserted, dropped, replayed or moved from another connection
    /// fails to open. The bytes themselves travel in the clear.
    pub struct Seal {
        mac: Hmac<Sha256>,
        sequence: u64,
    }

    impl Seal {
        /// What sealing adds to a frame.
        pub const TAG_BYTES: usize = 16;

        /// Both ends build it from the same key (derived with [`answer`] from the secret and
        /// both ends' nonces).
        pub fn new(key: &[u8]) -> Seal {
            Seal {
                // HMAC takes a key of any length: this does not fail.
                mac: Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!()),
                sequence: 0,
            }
        }

        fn tag(&self, frame: &[u8]) -> Hmac<Sha256> {
            let mut mac = self.mac.clone();
            mac.update(&self.sequence.to_be_bytes());
            mac.update(frame);
            mac
        }

        /// `frame` followed by its tag; the next frame gets the next sequence number.
        pub fn seal(&mut self, frame: &[u8]) -> Vec<u8> {
            let tag = self.tag(frame).finalize().into_bytes();
            self.sequence += 1;
            let mut out = Vec::with_capacity(frame.len() + Self::TAG_BYTES);
            out.extend_from_slice(frame);
            out.extend_from_slice(&tag[..Self::TAG_BYTES]);
            out
        }

        /// The frame inside `sealed` if its tag is right for the next sequence number (compared
        /// in constant time); `None` otherwise, after which the connection is to be closed.
        pub fn open<'a>(&mut self, sealed: &'a [u8]) -> Option<&'a [u8]> {
            let split = sealed.len().checked_sub(Self::TAG_BYTES)?;
            let (frame, tag) = sealed.split_at(split);
            self.tag(frame).verify_truncated_left(tag).ok()?;
            self.sequence += 1;
            Some(frame)
        }
    }
}

/// A shared secret's bytes (coord's `--peer-secret-file`): cheap to clone, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(std::sync::Arc<[u8]>);

impl Secret {
    pub fn new(bytes: &[u8]) -> Secret {
        Secret(bytes.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn mesos_credentials_files_in_both_forms() {
        let json = Credentials::parse(
            r#"{"credentials": [{"principal": "marathon", "secret": "s3"}, {"principal": "ops", "secret": "x"}]}"#,
        )
        .unwrap();
        assert!(json.accepts("marathon", "s3") && json.accepts("ops", "x"));
        assert!(!json.accepts("marathon", "s4") && !json.accepts("nobody", "s3"));
        let text = Credentials::parse("# comment\nmarathon s3\n\nops x\n").unwrap();
        assert_eq!(text, json);
        assert_eq!(format!("{json:?}"), r#"{"marathon", "ops"}"#);
        for bad in [
            "",
            "{}",
            r#"{"credentials": []}"#,
            r#"{"credentials": [{"principal": "", "secret": "a"}]}"#,
            r#"{"credentials": [{"principal": "a", "secret": "b", "extra": 1}]}"#,
            "a b c",
            // No secret: anyone could prove that principal.
            "a",
            r#"{"credentials": [{"principal": "a"}]}"#,
            r#"{"credentials": [{"principal": "a", "secret": ""}]}"#,
        ] {
            assert!(Credentials::parse(bad).is_err(), "{bad:?} was accepted");
        }
        // Errors name the place, never a secret.
        let e = Credentials::parse("ops hunter2 extra").unwrap_err();
        assert_eq!(e, "line 1: expected `principal secret`, found 3 words");
        let e = Credentials::parse(r#"{"credentials": [{"principal": "a", "secret": "b"}, {"principal": "ops", "secret": ""}]}"#).unwrap_err();
        assert_eq!(e, r#"credentials[1] (principal "ops") has no secret"#);
        assert!(Credentials::pair("u:").is_err() && Credentials::pair(":p").is_err());
        let e = Credentials::parse(r#"{"credentials": [{"principal": 5}]}"#).unwrap_err();
        assert!(e.contains("credentials[0].principal"), "{e}");
    }

    #[test]
    fn an_agent_credential_in_each_of_mesos_forms() {
        let json = Credential::parse(r#"{"principal": "agent", "secret": "s3"}"#).unwrap();
        assert_eq!(
            (json.principal.as_str(), json.secret.as_str()),
            ("agent", "s3")
        );
        assert_eq!(Credential::parse("agent s3\n").unwrap(), json);
        let list = r#"{"credentials": [{"principal": "agent", "secret": "s3"}]}"#;
        assert_eq!(Credential::parse(list).unwrap(), json);
        assert_eq!(
            format!("{json:?}"),
            r#"Credential { principal: "agent", .. }"#
        );
        for bad in [
            "",
            "a b\nc d",
            r#"{"principal": ""}"#,
            r#"{"principal": "a", "secret": "b", "x": 1}"#,
            r#"{"principal": "a"}"#,
            "agent",
            "{not json",
        ] {
            assert!(Credential::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = Credential::parse(r#"{"principal": 5}"#).unwrap_err();
        assert!(e.contains("principal"), "{e}");
    }

    #[test]
    fn sealed_frames_open_once_in_order_and_only_unchanged() {
        use challenge::Seal;
        let (mut sender, mut receiver) = (Seal::new(b"key"), Seal::new(b"key"));
        let first = sender.seal(b"raft 1");
        let second = sender.seal(b"raft 2");
        assert_eq!(first.len(), 6 + Seal::TAG_BYTES);
        // Out of order, changed, truncated, or under another key: refused.
        assert_eq!(Seal::new(b"key").open(&second), None);
        let mut changed = first.clone();
        changed[0] ^= 1;
        assert_eq!(Seal::new(b"key").open(&changed), None);
        assert_eq!(Seal::new(b"key").open(&first[..10]), None);
        assert_eq!(Seal::new(b"other").open(&first), None);
        assert_eq!(receiver.open(&first), Some(&b"raft 1"[..]));
        // A replay of the first frame is out of order now.
        assert_eq!(receiver.open(&first), None);
        assert_eq!(receiver.open(&second), Some(&b"raft 2"[..]));
        assert_eq!(format!("{:?}", Secret::new(b"s3cret")), "Secret(..)");
    }

    #[test]
    fn challenge_answers_prove_the_secret_for_one_nonce_only() {
        let nonce = [7u8; challenge::NONCE_BYTES];
        let answer = challenge::answer(b"s3cret", "coord-peer", &nonce);
        assert_eq!(answer.len(), 32);
        assert!(challenge::verify(b"s3cret", "coord-peer", &nonce, &answer));
        assert!(!challenge::verify(b"other", "coord-peer", &nonce, &answer));
        assert!(!challenge::verify(
            b"s3cret",
            "coord-peer",
            &[8u8; 32],
            &answer
        ));
        assert!(!challenge::verify(b"s3cret", "agent", &nonce, &answer));
        assert!(!challenge::verify(
            b"s3cret",
            "coord-peer",
            &nonce,
            &answer[..31]
        ));
    }

    #[test]
    fn basic_headers_prove_a_principal_or_nothing() {
        let creds = Credentials::pair("admin:pa:ss").unwrap();
        assert_eq!(
            creds.authenticate(&headers(authorization("admin", "pa:ss").to_str().unwrap())),
            Some("admin".into())
        );
        for bad in [
            authorization("admin", "wrong")
                .to_str()
                .unwrap()
                .to_string(),
            authorization("other", "pa:ss")
                .to_str()
                .unwrap()
                .to_string(),
            "Bearer abc".into(),
            "Basic !!!not-base64".into(),
            "Basic".into(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("no-colon")
            ),
        ] {
            assert_eq!(creds.authenticate(&headers(&bad)), None, "{bad}");
        }
        assert_eq!(creds.authenticate(&HeaderMap::new()), None);
        assert!(Credentials::pair("nocolon").is_err() && Credentials::pair(":x").is_err());
        let r = unauthorized("Mesosphere");
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[http::header::WWW_AUTHENTICATE],
            "Basic realm=\"Mesosphere\""
        );
    }
}
