//! `zk://[user:password@]h1:2181,h2:2181/path`: where an ensemble is, which path under it, and
//! the digest credentials a client authenticates with (Mesos' and Marathon's `--zk`/`--master`).
//!
//! The password never leaves through `Debug`, `Display` or a parse error: a URL is logged and
//! shown (`/v1/config`, `/v2/info`) as `zk://user:***@hosts/path`. A password that holds `/`,
//! `@` or `%` is written percent-encoded (`%2F`, `%40`, `%25`), as in any URL's user part.

use std::fmt;

use crate::acl::perm;
use crate::client::ClientConfig;
use crate::proto::Acl;

/// A parsed `zk://[user:password@]h1:2181,h2:2181/path`.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkUrl {
    pub hosts: String,
    pub path: String,
    /// `user:password`: sent as a digest auth on every connection, and the nodes created get
    /// an ACL for that digest.
    pub credentials: Option<String>,
}

impl fmt::Debug for ZkUrl {
    /// Without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ZkUrl {
    /// Without the password: `zk://user:***@hosts/path`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self
            .credentials
            .as_deref()
            .map(|c| format!("{}:***@", c.split(':').next().unwrap_or("")))
            .unwrap_or_default();
        write!(f, "zk://{user}{}{}", self.hosts, self.path)
    }
}

/// The ACL nodes created through a [`ZkUrl`] with credentials get.
#[derive(Clone, Copy, Debug)]
pub enum ZkAcl {
    /// `world:anyone` ALL: nothing is protected (a reader's URL).
    Open,
    /// Mesos' EVERYONE_READ_CREATOR_ALL: anyone reads (frameworks find the leader), only the
    /// credentials' digest changes anything.
    EveryoneReadCreatorAll,
    /// ZooKeeper's CREATOR_ALL_ACL: only the credentials' digest (Marathon's state).
    CreatorAll,
}

impl ZkUrl {
    /// A client of this URL's ensemble: authenticated with its credentials, creating nodes with
    /// `acl` when it has some (open without).
    pub fn client_config(&self, acl: ZkAcl) -> Result<ClientConfig, String> {
        let mut config = ClientConfig::from_hosts(&self.hosts)?;
        if let Some(credentials) = &self.credentials {
            config.auth = vec![("digest".into(), credentials.as_bytes().to_vec())];
            let creator = Acl {
                perms: perm::ALL,
                scheme: "auth".into(),
                id: String::new(),
            };
            let read = Acl {
                perms: perm::READ,
                scheme: "world".into(),
                id: "anyone".into(),
            };
            config.acl = match acl {
                ZkAcl::Open => vec![Acl::open()],
                ZkAcl::EveryoneReadCreatorAll => vec![read, creator],
                ZkAcl::CreatorAll => vec![creator],
            };
        }
        Ok(config)
    }

    /// The ensemble's servers, `(host, port)`; an error for hosts that do not parse (a URL
    /// built by hand rather than parsed).
    pub fn servers(&self) -> Result<Vec<(String, u16)>, String> {
        ClientConfig::from_hosts(&self.hosts).map(|c| c.servers)
    }
}

impl std::str::FromStr for ZkUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<ZkUrl, String> {
        let rest = text.trim().strip_prefix("zk://").ok_or_else(|| {
            "expected zk://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/PATH".to_string()
        })?;
        // Errors never repeat the text: it may hold a password.
        let (credentials, rest) = match rest.split_once('@') {
            // The user part ends at the last `@` before the path (a raw `@` in a password works;
            // a `/` must be `%2F`).
            Some(_) => {
                let end = rest.find('/').unwrap_or(rest.len());
                match rest[..end].rfind('@') {
                    Some(at) => (Some(user_info(&rest[..at])?), &rest[at + 1..]),
                    None => (None, rest),
                }
            }
            None => (None, rest),
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| "expected a /PATH after the hosts".to_string())?;
        ClientConfig::from_hosts(hosts)?;
        let path = format!("/{}", path.trim_end_matches('/'));
        if path == "/" || path.contains("//") {
            return Err(format!("{path:?}: expected a path such as /mesos"));
        }
        Ok(ZkUrl {
            hosts: hosts.to_string(),
            path,
            credentials,
        })
    }
}

/// `user:password`, percent-decoded.
fn user_info(raw: &str) -> Result<String, String> {
    let decoded = percent_decode(raw)
        .ok_or_else(|| "expected USER:PASSWORD@ with %XX escapes of two hex digits".to_string())?;
    match decoded.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(decoded),
        _ => Err("expected USER:PASSWORD@ before the hosts (both non-empty)".into()),
    }
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zk_urls_parse_or_say_why() {
        let url: ZkUrl = "zk://a:2181,b:2181/mesos".parse().unwrap();
        assert_eq!(url.hosts, "a:2181,b:2181");
        assert_eq!(url.path, "/mesos");
        assert_eq!(
            url.servers(),
            Ok(vec![("a".into(), 2181), ("b".into(), 2181)])
        );
        assert!("http://a/mesos"
            .parse::<ZkUrl>()
            .unwrap_err()
            .contains("expected zk://"));
        assert!("zk://a:2181"
            .parse::<ZkUrl>()
            .unwrap_err()
            .contains("/PATH"));
        assert!("zk://a/mesos"
            .parse::<ZkUrl>()
            .unwrap_err()
            .contains("HOST:PORT"));
        // Hosts set by hand that do not parse are an error, not an empty ensemble.
        let by_hand = ZkUrl {
            hosts: "a".into(),
            ..url.clone()
        };
        assert!(by_hand.servers().unwrap_err().contains("HOST:PORT"));
        // A path may hold `@`; it is not taken for credentials.
        let url: ZkUrl = "zk://a:2181/mesos@1".parse().unwrap();
        assert_eq!((url.credentials, url.path.as_str()), (None, "/mesos@1"));
    }

    #[test]
    fn zk_urls_with_credentials_authenticate_and_protect_what_they_create() {
        let url: ZkUrl = "zk://ops:p@ss:w@a:2181,b:2181/mesos".parse().unwrap();
        assert_eq!(url.hosts, "a:2181,b:2181");
        assert_eq!(url.credentials.as_deref(), Some("ops:p@ss:w"));
        // Neither its Debug and Display (logs, /v1/config) nor a parse error repeats the password.
        assert_eq!(format!("{url:?}"), "zk://ops:***@a:2181,b:2181/mesos");
        assert_eq!(url.to_string(), "zk://ops:***@a:2181,b:2181/mesos");
        for bad in [
            "zk://ops:secret@a/mesos",
            "zk://ops:secret%4@a:1/mesos",
            "zk://:secret@a:1/mesos",
        ] {
            let error = bad.parse::<ZkUrl>().unwrap_err();
            assert!(!error.contains("secret"), "{error}");
        }
        assert!("zk://nocolon@a:1/m".parse::<ZkUrl>().is_err());
        assert!("zk://ops:@a:1/m".parse::<ZkUrl>().is_err());
        // A password with `/` (or `%`) is percent-encoded.
        let url: ZkUrl = "zk://ops:a%2Fb%25c@a:1/m".parse().unwrap();
        assert_eq!(url.credentials.as_deref(), Some("ops:a/b%c"));
        assert_eq!(url.path, "/m");

        let master = url.client_config(ZkAcl::EveryoneReadCreatorAll).unwrap();
        assert_eq!(master.auth, vec![("digest".into(), b"ops:a/b%c".to_vec())]);
        let shape: Vec<(i32, &str)> = master
            .acl
            .iter()
            .map(|a| (a.perms, a.scheme.as_str()))
            .collect();
        assert_eq!(shape, vec![(1, "world"), (31, "auth")]);
        let scheduler = url.client_config(ZkAcl::CreatorAll).unwrap();
        assert_eq!(scheduler.acl.len(), 1);
        // Without credentials: no auth, open nodes, whatever was asked.
        let open: ZkUrl = "zk://a:2181/mesos".parse().unwrap();
        let config = open.client_config(ZkAcl::CreatorAll).unwrap();
        assert!(config.auth.is_empty() && config.acl == vec![Acl::open()]);
    }
}
