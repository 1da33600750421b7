//! One DNS query in, one answer out, from a [`Zone`]: the wire format is hickory-proto's, the
//! decisions drover's. A and SRV (and ANY) for the names the zone has; NXDOMAIN for other names
//! of drover's domains (SERVFAIL while the zone has not been synced with a master yet, so that
//! a resolver asks another server rather than cache a wrong NXDOMAIN); REFUSED for the rest,
//! which [`serve`](crate::serve) forwards instead when it has upstream resolvers; FORMERR for a
//! query that does not parse but has a header; NOTIMP for what is not a QUERY. Several A records
//! come in an order drawn from the caller's RNG, so that clients spread over the tasks (WeaveDNS'
//! load balancing). An answer that does not fit the client's size (512 bytes, or its EDNS size)
//! keeps the records that fit and says TC.

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::zone::Zone;

/// Whether `query` asks for a name outside drover's domains (what goes to upstream resolvers).
pub fn is_foreign(query: &[u8]) -> bool {
    let Ok(request) = Message::from_vec(query) else {
        return false;
    };
    request.message_type() == MessageType::Query
        && request.op_code() == OpCode::Query
        && request.queries().first().is_some_and(|q| {
            let name = q.name().to_lowercase().to_ascii();
            !Zone::is_ours(name.trim_end_matches('.'))
        })
}

/// How long clients may keep an answer: tasks come and go, so briefly (Mesos-DNS' default TTL).
pub const TTL: u32 = 60;

/// The answer to `query` (a DNS message's bytes); `None` when it is too broken to answer (no
/// header) or is itself an answer.
pub fn answer(zone: &Zone, query: &[u8], rng: &mut impl Rng) -> Option<Vec<u8>> {
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => {
            // A header at least: say the query was malformed.
            let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
            if query.len() < 12 || query[2] & 0x80 != 0 {
                return None;
            }
            let reply = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            return reply.to_vec().ok();
        }
    };
    if request.message_type() != MessageType::Query {
        return None;
    }
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(false);
    if let Some(edns) = request.extensions() {
        let mut ours = Edns::new();
        ours.set_max_payload(edns.max_payload().max(512));
        reply.set_edns(ours);
    }
    if request.op_code() != OpCode::Query {
        reply.set_response_code(ResponseCode::NotImp);
        return reply.to_vec().ok();
    }
    let Some(question) = request.queries().first().cloned() else {
        reply.set_response_code(ResponseCode::FormErr);
        return reply.to_vec().ok();
    };
    reply.add_query(question.clone());
    let name = question
        .name()
        .to_lowercase()
        .to_ascii()
        .trim_end_matches('.')
        .to_string();
    if !Zone::is_ours(&name) {
        reply.set_response_code(ResponseCode::Refused);
        return reply.to_vec().ok();
    }
    if !zone.synced {
        reply.set_response_code(ResponseCode::ServFail);
        return reply.to_vec().ok();
    }
    reply.set_authoritative(true);
    if !zone.knows(&name) {
        reply.set_response_code(ResponseCode::NXDomain);
        return reply.to_vec().ok();
    }
    let (answers, additionals) = records(zone, &name, &question, rng);
    let limit = usize::from(request.max_payload());
    fit(reply, answers, additionals, limit)
}

/// The answer's records for a name the zone has (none for a type it has none of: NODATA).
fn records(
    zone: &Zone,
    name: &str,
    question: &Query,
    rng: &mut impl Rng,
) -> (Vec<Record>, Vec<Record>) {
    let owner = question.name().clone();
    let a_records = |owner: &Name, ips: &[Ipv4Addr]| -> Vec<Record> {
        ips.iter()
            .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(*ip))))
            .collect()
    };
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    let wants =
        |t: RecordType| question.query_type() == t || question.query_type() == RecordType::ANY;
    if wants(RecordType::A) {
        if let Some(ips) = zone.a.get(name) {
            let mut ips = ips.clone();
            ips.shuffle(rng);
            answers.extend(a_records(&owner, &ips));
        }
    }
    if wants(RecordType::SRV) {
        if let Some(services) = zone.srv.get(name) {
            let mut services = services.clone();
            services.shuffle(rng);
            for service in services {
                let Ok(target) = Name::from_ascii(format!("{}.", service.target)) else {
                    continue;
                };
                let srv = SRV::new(0, 1, service.port, target.clone());
                answers.push(Record::from_rdata(owner.clone(), TTL, RData::SRV(srv)));
                if let Some(ips) = zone.a.get(&service.target) {
                    let already = additionals.iter().any(|r: &Record| r.name() == &target);
                    if !already {
                        additionals.extend(a_records(&target, ips));
                    }
                }
            }
        }
    }
    (answers, additionals)
}

/// The reply with as many records as fit in `limit` bytes; TC when some did not.
fn fit(
    reply: Message,
    answers: Vec<Record>,
    additionals: Vec<Record>,
    limit: usize,
) -> Option<Vec<u8>> {
    let mut kept_answers = answers.len();
    let mut kept_additionals = additionals.len();
    loop {
        let mut attempt = reply.clone();
        attempt.add_answers(answers.iter().take(kept_answers).cloned());
        attempt.add_additionals(additionals.iter().take(kept_additionals).cloned());
        let truncated = kept_answers < answers.len() || kept_additionals < additionals.len();
        attempt.set_truncated(truncated);
        let bytes = attempt.to_vec().ok()?;
        if bytes.len() <= limit || (kept_answers == 0 && kept_additionals == 0) {
            return Some(bytes);
        }
        // Additional records go first, then answers from the end.
        if kept_additionals > 0 {
            kept_additionals -= 1;
        } else {
            kept_answers -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::Task;
    use rand::SeedableRng;
    use std::str::FromStr;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn zone() -> Zone {
        let task = |id: &str, address: &str, ports: Vec<u16>| Task {
            id: id.into(),
            name: "/arm-demo/group1/ubuntu1".into(),
            framework: "marathon".into(),
            hostname: Some("ubuntu1.weave.local".into()),
            addresses: vec![ip(address)],
            agent: Some(ip("192.168.1.10")),
            ports,
        };
        Zone::build(
            &[
                task("u1.aaaa1111", "10.32.0.2", vec![31000]),
                task("u1.bbbb2222", "10.32.0.3", vec![31001]),
            ],
            Some(ip("192.168.1.5")),
            &[ip("192.168.1.5")],
        )
    }

    fn ask(zone: &Zone, name: &str, kind: RecordType, seed: u64) -> Message {
        let mut query = Message::new();
        query
            .set_id(4242)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_str(name).unwrap(), kind));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let bytes = answer(zone, &query.to_vec().unwrap(), &mut rng).expect("an answer");
        Message::from_vec(&bytes).expect("a message")
    }

    fn addresses(reply: &Message) -> Vec<Ipv4Addr> {
        reply
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn weave_names_answer_every_instance_in_both_orders() {
        let zone = zone();
        let mut orders = std::collections::BTreeSet::new();
        for seed in 0..20 {
            for name in ["ubuntu1.weave.local.", "ubuntu1.", "UBUNTU1.Weave.Local."] {
                let reply = ask(&zone, name, RecordType::A, seed);
                assert_eq!(reply.id(), 4242);
                assert_eq!(reply.response_code(), ResponseCode::NoError);
                assert!(reply.authoritative());
                let mut got = addresses(&reply);
                orders.insert(got.clone());
                got.sort();
                assert_eq!(got, vec![ip("10.32.0.2"), ip("10.32.0.3")]);
            }
        }
        assert_eq!(
            orders.len(),
            2,
            "both orders over twenty queries: {orders:?}"
        );
    }

    #[test]
    fn mesos_dns_names_srv_and_masters() {
        let zone = zone();
        let reply = ask(
            &zone,
            "ubuntu1-group1-arm-demo.marathon.mesos.",
            RecordType::A,
            1,
        );
        assert_eq!(addresses(&reply).len(), 2);
        let reply = ask(
            &zone,
            "_ubuntu1-group1-arm-demo._tcp.marathon.mesos.",
            RecordType::SRV,
            1,
        );
        let mut ports: Vec<u16> = reply
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::SRV(srv) => Some(srv.port()),
                _ => None,
            })
            .collect();
        ports.sort();
        assert_eq!(ports, vec![31000, 31001]);
        // The targets' addresses come along.
        assert_eq!(reply.additionals().len(), 2);
        assert_eq!(
            addresses(&ask(&zone, "leader.mesos.", RecordType::A, 1)),
            vec![ip("192.168.1.5")]
        );
        assert_eq!(
            addresses(&ask(&zone, "master.mesos.", RecordType::A, 1)),
            vec![ip("192.168.1.5")]
        );
    }

    #[test]
    fn unknown_names_foreign_names_and_bad_queries() {
        let zone = zone();
        let reply = ask(&zone, "nothing.marathon.mesos.", RecordType::A, 1);
        assert_eq!(reply.response_code(), ResponseCode::NXDomain);
        let reply = ask(&zone, "ubuntu9.", RecordType::A, 1);
        assert_eq!(reply.response_code(), ResponseCode::NXDomain);
        // No upstream resolver: refused, not made up.
        let reply = ask(&zone, "example.com.", RecordType::A, 1);
        assert_eq!(reply.response_code(), ResponseCode::Refused);
        // A name it has, a type it has not: no data, no error.
        let reply = ask(&zone, "ubuntu1.", RecordType::AAAA, 1);
        assert_eq!(reply.response_code(), ResponseCode::NoError);
        assert!(reply.answers().is_empty());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // Garbage with a header: FORMERR with its id; without one: nothing.
        let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        garbage.extend_from_slice(&[0xff; 5]);
        let reply = Message::from_vec(&answer(&zone, &garbage, &mut rng).unwrap()).unwrap();
        assert_eq!(
            (reply.id(), reply.response_code()),
            (0x1234, ResponseCode::FormErr)
        );
        assert!(answer(&zone, &[1, 2, 3], &mut rng).is_none());
        assert!(answer(&zone, &[], &mut rng).is_none());
    }

    #[test]
    fn an_answer_too_big_for_the_client_is_cut_and_says_so() {
        let tasks: Vec<Task> = (0..60)
            .map(|n| Task {
                id: format!("big.{n:08}"),
                name: "/big".into(),
                framework: "marathon".into(),
                hostname: Some("big.weave.local".into()),
                addresses: vec![Ipv4Addr::new(10, 1, 0, n as u8)],
                agent: None,
                ports: vec![],
            })
            .collect();
        let zone = Zone::build(&tasks, None, &[]);
        let reply = ask(&zone, "big.weave.local.", RecordType::A, 3);
        assert!(reply.truncated());
        let bytes = reply.to_vec().unwrap();
        assert!(bytes.len() <= 512, "{}", bytes.len());
        assert!(!reply.answers().is_empty());
        let small = ask(&zone, "big.", RecordType::A, 3);
        assert!(small.answers().len() < 60);
    }
}
