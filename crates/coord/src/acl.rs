//! ZooKeeper's access control: who a connection has proven to be (its ids), what a znode's ACL
//! lets each id do, and the ACL a create or setACL asks for made concrete.
//!
//! Schemes, as ZooKeeper 3.8 has them: `world:anyone`; `digest:user:base64(sha1(user:password))`,
//! proven by an auth packet with `user:password`; `ip:addr` or `ip:addr/bits`, which every
//! connection proves by its address; and `auth`, which at create and setACL stands for every
//! digest id the connection has proven.

use std::net::IpAddr;
use std::sync::LazyLock;

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

use crate::proto::{Acl, ErrorCode};

/// ZooKeeper's permission bits.
pub mod perm {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const CREATE: i32 = 4;
    pub const DELETE: i32 = 8;
    pub const ADMIN: i32 = 16;
    pub const ALL: i32 = 31;
}

/// An identity a connection has proven: (scheme, id).
pub type Id = (String, String);

/// The scheme of the servers' own identity, which every ACL allows (no client can prove it).
pub const SUPER: &str = "super";

/// `world:anyone` with every permission, ZooKeeper's OPEN_ACL_UNSAFE: the ACL of a node that was
/// not given another.
pub static OPEN: LazyLock<Vec<Acl>> = LazyLock::new(|| vec![Acl::open()]);

/// The digest id of `user:password`: `user:base64(sha1(user:password))`.
pub fn digest(user_password: &str) -> Option<String> {
    let (user, _) = user_password.split_once(':')?;
    let hash = Sha1::digest(user_password.as_bytes());
    Some(format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    ))
}

/// What an auth packet of `scheme` with `data` proves: `Ok(Some(id))`, `Ok(None)` (accepted,
/// nothing new: `ip`, which every connection proves by its address), or AuthFailed (an unknown
/// scheme, or digest data that is not `user:password`).
pub fn authenticate(scheme: &str, data: &[u8]) -> Result<Option<Id>, ErrorCode> {
    match scheme {
        "digest" => {
            let text = std::str::from_utf8(data).map_err(|_| ErrorCode::AuthFailed)?;
            let id = digest(text).ok_or(ErrorCode::AuthFailed)?;
            Ok(Some(("digest".into(), id)))
        }
        "ip" => Ok(None),
        _ => Err(ErrorCode::AuthFailed),
    }
}

/// An `ip` ACL id: an address, or an address and the number of leading bits that must match.
fn ip_expression(expression: &str) -> Option<(IpAddr, u32)> {
    let (address, bits) = match expression.split_once('/') {
        Some((address, bits)) => (address, Some(bits.parse::<u32>().ok()?)),
        None => (expression, None),
    };
    let address: IpAddr = address.parse().ok()?;
    let width = if address.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(width);
    (bits <= width).then_some((address, bits))
}

fn ip_matches(client: &str, expression: &str) -> bool {
    let (Ok(client), Some((network, bits))) = (client.parse::<IpAddr>(), ip_expression(expression))
    else {
        return false;
    };
    let mask = |width: u32| -> u128 {
        if bits == 0 {
            0
        } else {
            (!0u128 << (width - bits)) & (!0u128 >> (128 - width))
        }
    };
    match (client, network) {
        (IpAddr::V4(c), IpAddr::V4(n)) => {
            (u128::from(u32::from(c)) ^ u128::from(u32::from(n))) & mask(32) == 0
        }
        (IpAddr::V6(c), IpAddr::V6(n)) => (u128::from(c) ^ u128::from(n)) & mask(128) == 0,
        _ => false,
    }
}

fn proves(id: &Id, acl: &Acl) -> bool {
    if acl.scheme == "world" {
        return acl.id == "anyone";
    }
    id.0 == acl.scheme
        && match acl.scheme.as_str() {
            "digest" => id.1 == acl.id,
            "ip" => ip_matches(&id.1, &acl.id),
            _ => false,
        }
}

/// Whether a connection with `ids` may do what `perm` (one or more bits: any of them is enough,
/// as ZooKeeper checks getACL's READ|ADMIN) to a node with `acl`. An empty ACL allows everything.
pub fn allows(acl: &[Acl], ids: &[Id], perm: i32) -> Result<(), ErrorCode> {
    let allowed = acl.is_empty()
        || ids.iter().any(|(scheme, _)| scheme == SUPER)
        || acl.iter().any(|a| {
            a.perms & perm != 0
                && (a.scheme == "world" && a.id == "anyone" || ids.iter().any(|id| proves(id, a)))
        });
    if allowed {
        Ok(())
    } else {
        Err(ErrorCode::NoAuth)
    }
}

/// The ACL a create or setACL asking for `acl` gives a node, as ZooKeeper's `fixupACL`: `auth`
/// becomes the connection's digest ids (none: InvalidACL), every other entry must be a valid
/// `world:anyone`, `digest:user:hash` or `ip:addr[/bits]`, and duplicates go.
pub fn fixup(acl: &[Acl], ids: &[Id]) -> Result<Vec<Acl>, ErrorCode> {
    if acl.is_empty() {
        return Err(ErrorCode::InvalidAcl);
    }
    let mut out: Vec<Acl> = Vec::new();
    let mut push = |entry: Acl| {
        if !out.contains(&entry) {
            out.push(entry);
        }
    };
    for entry in acl {
        match entry.scheme.as_str() {
            "world" if entry.id == "anyone" => push(entry.clone()),
            "auth" => {
                let mut any = false;
                for (scheme, id) in ids.iter().filter(|(scheme, _)| scheme == "digest") {
                    push(Acl {
                        perms: entry.perms,
                        scheme: scheme.clone(),
                        id: id.clone(),
                    });
                    any = true;
                }
                if !any {
                    return Err(ErrorCode::InvalidAcl);
                }
            }
            "digest" if entry.id.split(':').count() == 2 => push(entry.clone()),
            "ip" if ip_expression(&entry.id).is_some() => push(entry.clone()),
            _ => return Err(ErrorCode::InvalidAcl),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            scheme: scheme.into(),
            id: id.into(),
        }
    }

    #[test]
    fn digests_are_zookeepers() {
        // The example of ZooKeeper's administrator guide (superDigest for `super:test`).
        assert_eq!(
            digest("super:test").as_deref(),
            Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=")
        );
        assert_eq!(digest("no-colon"), None);
        assert_eq!(
            authenticate("digest", b"u:p"),
            Ok(Some(("digest".into(), digest("u:p").unwrap())))
        );
        assert_eq!(
            authenticate("digest", b"nocolon"),
            Err(ErrorCode::AuthFailed)
        );
        assert_eq!(authenticate("kerberos", b"x"), Err(ErrorCode::AuthFailed));
        assert_eq!(authenticate("ip", b"1.2.3.4"), Ok(None));
    }

    #[test]
    fn ids_are_allowed_what_their_entries_grant() {
        let alice = ("digest".to_string(), digest("alice:pw").unwrap());
        let local = ("ip".to_string(), "10.1.2.3".to_string());
        let node = vec![
            acl(perm::READ, "world", "anyone"),
            acl(perm::ALL, "digest", &alice.1),
            acl(perm::WRITE, "ip", "10.1.0.0/16"),
        ];
        assert_eq!(allows(&node, &[], perm::READ), Ok(()));
        assert_eq!(allows(&node, &[], perm::WRITE), Err(ErrorCode::NoAuth));
        assert_eq!(
            allows(&node, std::slice::from_ref(&alice), perm::ADMIN),
            Ok(())
        );
        assert_eq!(
            allows(&node, std::slice::from_ref(&local), perm::WRITE),
            Ok(())
        );
        assert_eq!(
            allows(&node, &[local], perm::DELETE),
            Err(ErrorCode::NoAuth)
        );
        let other = ("ip".to_string(), "10.2.0.1".to_string());
        assert_eq!(allows(&node, &[other], perm::WRITE), Err(ErrorCode::NoAuth));
        // Either bit of a mask is enough (getACL asks READ | ADMIN).
        assert_eq!(allows(&node, &[], perm::READ | perm::ADMIN), Ok(()));
        assert_eq!(allows(&[], &[], perm::ADMIN), Ok(()));
        assert!(ip_matches("::1", "::1/128") && !ip_matches("::1", "10.0.0.0/8"));
        assert!(ip_matches("192.168.7.9", "0.0.0.0/0"));
    }

    #[test]
    fn fixup_expands_auth_and_refuses_what_is_not_an_acl() {
        let alice = ("digest".to_string(), digest("alice:pw").unwrap());
        let ip = ("ip".to_string(), "127.0.0.1".to_string());
        let ids = [ip.clone(), alice.clone()];
        assert_eq!(
            fixup(&[acl(perm::ALL, "auth", "")], &ids),
            Ok(vec![acl(perm::ALL, "digest", &alice.1)])
        );
        assert_eq!(
            fixup(&[acl(perm::ALL, "auth", "")], &[ip]),
            Err(ErrorCode::InvalidAcl)
        );
        let twice = [Acl::open(), Acl::open()];
        assert_eq!(fixup(&twice, &[]), Ok(vec![Acl::open()]));
        for bad in [
            acl(perm::ALL, "world", "someone"),
            acl(perm::ALL, "digest", "no-hash"),
            acl(perm::ALL, "ip", "10.0.0.0/33"),
            acl(perm::ALL, "ip", "not-an-address"),
            acl(perm::ALL, "sasl", "x"),
        ] {
            assert_eq!(
                fixup(std::slice::from_ref(&bad), &ids),
                Err(ErrorCode::InvalidAcl),
                "{bad:?}"
            );
        }
        assert_eq!(fixup(&[], &ids), Err(ErrorCode::InvalidAcl));
    }
}
