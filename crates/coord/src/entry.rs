//! What a coord log entry carries: who proposed it (so the proposing server can answer its client),
//! the proposer's wall time (znode ctime/mtime), and the transaction. Encoded with the jute
//! primitives of [`crate::proto`], so a client's write is stored about as compactly as it arrived.

use crate::proto::{decode_request, encode_request, DecodeError, Reader, Request, Writer};
use crate::tree::Txn;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// (server id, request number on that server); (0, 0) for entries nobody waits for.
    pub origin: (u64, u64),
    pub time_ms: i64,
    pub txn: Txn,
}

const CREATE_SESSION: i32 = 1;
const CLOSE_SESSION: i32 = 2;
const WRITE: i32 = 3;
const NOOP: i32 = 4;
/// A write with the ids its connection proved (WRITE, of earlier versions, had none).
const WRITE_AS: i32 = 5;

impl LogEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.long(self.origin.0 as i64);
        w.long(self.origin.1 as i64);
        w.long(self.time_ms);
        match &self.txn {
            Txn::CreateSession {
                id,
                password,
                timeout_ms,
            } => {
                w.int(CREATE_SESSION);
                w.long(*id);
                w.buffer(password);
                w.int(*timeout_ms);
            }
            Txn::CloseSession { id } => {
                w.int(CLOSE_SESSION);
                w.long(*id);
            }
            Txn::Write { session, op, ids } => {
                if ids.is_empty() {
                    w.int(WRITE);
                    w.long(*session);
                } else {
                    w.int(WRITE_AS);
                    w.long(*session);
                    w.int(ids.len() as i32);
                    for (scheme, id) in ids {
                        w.string(scheme);
                        w.string(id);
                    }
                }
                // Reuse the request encoding (xid 0) for the operation itself.
                let packet = encode_request(&Request {
                    xid: 0,
                    op: op.clone(),
                });
                w.buffer(&packet[4..]);
            }
            Txn::Noop => w.int(NOOP),
        }
        w.bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<LogEntry, DecodeError> {
        let mut r = Reader::new(bytes);
        let origin = (
            r.long("origin server")? as u64,
            r.long("origin request")? as u64,
        );
        let time_ms = r.long("time")?;
        let txn = match r.int("txn kind")? {
            CREATE_SESSION => Txn::CreateSession {
                id: r.long("session id")?,
                password: r.buffer("password")?,
                timeout_ms: r.int("timeout")?,
            },
            CLOSE_SESSION => Txn::CloseSession {
                id: r.long("session id")?,
            },
            kind @ (WRITE | WRITE_AS) => {
                let session = r.long("session id")?;
                let mut ids = Vec::new();
                if kind == WRITE_AS {
                    let count = r.int("id count")?;
                    for _ in 0..count.max(0) {
                        ids.push((r.string("id scheme")?, r.string("id")?));
                    }
                }
                let body = r.buffer("operation")?;
                Txn::Write {
                    session,
                    op: decode_request(&body)?.op,
                    ids,
                }
            }
            NOOP => Txn::Noop,
            other => {
                return Err(DecodeError {
                    offset: 24,
                    expected: format!("a txn kind from 1 to 5, found {other}"),
                })
            }
        };
        Ok(LogEntry {
            origin,
            time_ms,
            txn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{op, Acl, Op};

    #[test]
    fn entries_round_trip() {
        let txns = vec![
            Txn::CreateSession {
                id: 1 << 56,
                password: vec![9; 16],
                timeout_ms: 10_000,
            },
            Txn::CloseSession { id: 3 },
            Txn::Noop,
            Txn::Write {
                session: 3,
                ids: vec![
                    ("ip".into(), "10.0.0.1".into()),
                    ("digest".into(), "u:h".into()),
                ],
                op: Op::Multi {
                    ops: vec![
                        Op::Create {
                            path: "/a".into(),
                            data: vec![1, 2],
                            acl: vec![Acl::open()],
                            flags: 1,
                            opcode: op::CREATE,
                        },
                        Op::Delete {
                            path: "/b".into(),
                            version: 4,
                        },
                    ],
                },
            },
        ];
        for txn in txns {
            let entry = LogEntry {
                origin: (2, 77),
                time_ms: 1_700_000_000_000,
                txn,
            };
            assert_eq!(LogEntry::decode(&entry.encode()), Ok(entry));
        }
        assert!(LogEntry::decode(&[0; 10]).is_err());
    }
}
