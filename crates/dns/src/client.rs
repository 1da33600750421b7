//! The asking side, for drover's own resolvers (the simulator's `resolver` role): one A query
//! out, its answer read back, over hickory-proto's wire format.

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// An answer to an A query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub id: u16,
    /// The response code's mnemonic (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...).
    pub rcode: String,
    /// The A records, in the order they came.
    pub addresses: Vec<Ipv4Addr>,
}

/// The bytes of an A query for `name` with id `id`.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut fqdn = name.to_string();
    if !fqdn.ends_with('.') {
        fqdn.push('.');
    }
    let owner = Name::from_ascii(&fqdn).map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(owner, RecordType::A));
    message.to_vec().map_err(|e| e.to_string())
}

/// Reads an answer; an error when it is not a DNS response.
pub fn read(reply: &[u8]) -> Result<Answer, String> {
    let message = Message::from_vec(reply).map_err(|e| format!("not a DNS message: {e}"))?;
    if message.message_type() != MessageType::Response {
        return Err("a query, not an answer".into());
    }
    let addresses = message
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    Ok(Answer {
        id: message.id(),
        rcode: rcode(message.response_code()),
        addresses,
    })
}

fn rcode(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::{Task, Zone};
    use rand::SeedableRng;

    #[test]
    fn a_query_and_its_answer_round_trip_through_the_server_side() {
        let tasks = [Task {
            id: "u1.00000001".into(),
            name: "/u1".into(),
            framework: "marathon".into(),
            hostname: Some("ubuntu1.weave.local".into()),
            addresses: vec![Ipv4Addr::new(10, 0, 3, 2)],
            agent: None,
            ports: vec![],
        }];
        let zone = Zone::build(&tasks, None, &[]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let reply = crate::answer::answer(&zone, &query(9, "ubuntu1").unwrap(), &mut rng).unwrap();
        assert_eq!(
            read(&reply).unwrap(),
            Answer {
                id: 9,
                rcode: "NOERROR".into(),
                addresses: vec![Ipv4Addr::new(10, 0, 3, 2)]
            }
        );
        let reply = crate::answer::answer(&zone, &query(10, "ubuntu2").unwrap(), &mut rng).unwrap();
        assert_eq!(read(&reply).unwrap().rcode, "NXDOMAIN");
        // Before the first sync there is nothing to say.
        let reply =
            crate::answer::answer(&Zone::default(), &query(11, "ubuntu1").unwrap(), &mut rng)
                .unwrap();
        assert_eq!(read(&reply).unwrap().rcode, "SERVFAIL");
        assert!(read(&query(12, "x").unwrap()).is_err());
        assert!(read(b"junk").is_err());
        assert!(query(1, "a..b").is_err());
    }
}
