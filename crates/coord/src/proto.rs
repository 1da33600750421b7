//! The ZooKeeper client wire protocol (jute encoding), without any I/O.
//!
//! Every packet is a 4-byte big-endian length and a body. The first packet of a connection is a
//! `ConnectRequest`; after it, each request is a `RequestHeader { xid, type }` followed by the
//! operation's record, and each reply is a `ReplyHeader { xid, zxid, err }` followed by the
//! response record (none when `err` is not 0). Watch notifications are replies with xid -1.
//! The protocol facts follow ZooKeeper's `zookeeper.jute`; the code is ours.
//!
//! Decoding never panics: a malformed, truncated or oversized packet is a [`DecodeError`].

use std::fmt;

mod client_side;
mod jute;

pub use client_side::*;
pub use jute::{DecodeError, Reader, Writer};

/// The default bound on one packet, like ZooKeeper's `jute.maxbuffer`.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Special xids.
pub const XID_NOTIFICATION: i32 = -1;
pub const XID_PING: i32 = -2;
pub const XID_AUTH: i32 = -4;
pub const XID_SET_WATCHES: i32 = -8;

/// Operation codes.
pub mod op {
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_ACL: i32 = 6;
    pub const SET_ACL: i32 = 7;
    pub const GET_CHILDREN: i32 = 8;
    pub const SYNC: i32 = 9;
    pub const PING: i32 = 11;
    pub const GET_CHILDREN2: i32 = 12;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const CREATE_TTL: i32 = 21;
    pub const MULTI_READ: i32 = 22;
    pub const AUTH: i32 = 100;
    pub const SET_WATCHES: i32 = 101;
    pub const SET_WATCHES2: i32 = 105;
    pub const CLOSE_SESSION: i32 = -11;
    pub const ERROR: i32 = -1;
}

/// ZooKeeper's error codes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ErrorCode {
    Ok,
    SystemError,
    RuntimeInconsistency,
    ConnectionLoss,
    MarshallingError,
    Unimplemented,
    OperationTimeout,
    BadArguments,
    ApiError,
    NoNode,
    NoAuth,
    BadVersion,
    NoChildrenForEphemerals,
    NodeExists,
    NotEmpty,
    SessionExpired,
    InvalidAcl,
    AuthFailed,
    SessionMoved,
    NotReadOnly,
}

impl ErrorCode {
    pub fn code(self) -> i32 {
        match self {
            ErrorCode::Ok => 0,
            ErrorCode::SystemError => -1,
            ErrorCode::RuntimeInconsistency => -2,
            ErrorCode::ConnectionLoss => -4,
            ErrorCode::MarshallingError => -5,
            ErrorCode::Unimplemented => -6,
            ErrorCode::OperationTimeout => -7,
            ErrorCode::BadArguments => -8,
            ErrorCode::ApiError => -100,
            ErrorCode::NoNode => -101,
            ErrorCode::NoAuth => -102,
            ErrorCode::BadVersion => -103,
            ErrorCode::NoChildrenForEphemerals => -108,
            ErrorCode::NodeExists => -110,
            ErrorCode::NotEmpty => -111,
            ErrorCode::SessionExpired => -112,
            ErrorCode::InvalidAcl => -114,
            ErrorCode::AuthFailed => -115,
            ErrorCode::SessionMoved => -118,
            ErrorCode::NotReadOnly => -119,
        }
    }

    pub fn from_code(code: i32) -> Option<ErrorCode> {
        const ALL: [ErrorCode; 20] = [
            ErrorCode::Ok,
            ErrorCode::SystemError,
            ErrorCode::RuntimeInconsistency,
            ErrorCode::ConnectionLoss,
            ErrorCode::MarshallingError,
            ErrorCode::Unimplemented,
            ErrorCode::OperationTimeout,
            ErrorCode::BadArguments,
            ErrorCode::ApiError,
            ErrorCode::NoNode,
            ErrorCode::NoAuth,
            ErrorCode::BadVersion,
            ErrorCode::NoChildrenForEphemerals,
            ErrorCode::NodeExists,
            ErrorCode::NotEmpty,
            ErrorCode::SessionExpired,
            ErrorCode::InvalidAcl,
            ErrorCode::AuthFailed,
            ErrorCode::SessionMoved,
            ErrorCode::NotReadOnly,
        ];
        ALL.into_iter().find(|e| e.code() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} ({})", self.code())
    }
}

/// Watch event types and the one connection state we report.
pub mod event {
    pub const NODE_CREATED: i32 = 1;
    pub const NODE_DELETED: i32 = 2;
    pub const NODE_DATA_CHANGED: i32 = 3;
    pub const NODE_CHILDREN_CHANGED: i32 = 4;
    pub const STATE_SYNC_CONNECTED: i32 = 3;
}

/// Create modes (the `flags` of a create request).
pub mod mode {
    pub const PERSISTENT: i32 = 0;
    pub const EPHEMERAL: i32 = 1;
    pub const SEQUENTIAL: i32 = 2;
    pub const CONTAINER: i32 = 4;
    pub const PERSISTENT_WITH_TTL: i32 = 5;
    pub const PERSISTENT_SEQUENTIAL_WITH_TTL: i32 = 6;
}

/// A znode's metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Acl {
    pub perms: i32,
    pub scheme: String,
    pub id: String,
}

impl Acl {
    /// `world:anyone` with every permission: the only ACL drover accepts.
    pub fn open() -> Acl {
        Acl {
            perms: 31,
            scheme: "world".into(),
            id: "anyone".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: Vec<u8>,
    /// Newer clients send a read-only flag; the reply mirrors its presence.
    pub read_only: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: Vec<u8>,
    pub read_only: Option<bool>,
}

/// One operation of a request (also the operations inside a multi).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    Create {
        path: String,
        data: Vec<u8>,
        acl: Vec<Acl>,
        flags: i32,
        opcode: i32,
    },
    Delete {
        path: String,
        version: i32,
    },
    Exists {
        path: String,
        watch: bool,
    },
    GetData {
        path: String,
        watch: bool,
    },
    SetData {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    GetAcl {
        path: String,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    GetChildren {
        path: String,
        watch: bool,
        with_stat: bool,
    },
    Sync {
        path: String,
    },
    Check {
        path: String,
        version: i32,
    },
    Multi {
        ops: Vec<Op>,
    },
    SetWatches {
        relative_zxid: i64,
        data: Vec<String>,
        exist: Vec<String>,
        child: Vec<String>,
    },
    Auth {
        scheme: String,
        data: Vec<u8>,
    },
    CloseSession,
    Ping,
    /// A valid header with an operation drover does not implement.
    Unsupported {
        opcode: i32,
    },
}

impl Op {
    /// Whether the operation changes the tree (and so goes through the replicated log).
    pub fn is_write(&self) -> bool {
        match self {
            Op::Create { .. }
            | Op::Delete { .. }
            | Op::SetData { .. }
            | Op::SetAcl { .. }
            | Op::Check { .. } => true,
            Op::Multi { ops } => ops.iter().any(Op::is_write),
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub xid: i32,
    pub op: Op,
}

/// The body of a reply.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Response {
    Empty,
    Path(String),
    PathStat(String, Stat),
    Stat(Stat),
    Data(Vec<u8>, Stat),
    Children(Vec<String>),
    Children2(Vec<String>, Stat),
    Acl(Vec<Acl>, Stat),
    /// One result per operation of a multi.
    Multi(Vec<MultiResult>),
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MultiResult {
    Ok { opcode: i32, response: Response },
    Error(ErrorCode),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherEvent {
    pub kind: i32,
    pub state: i32,
    pub path: String,
}

pub fn decode_connect(body: &[u8]) -> Result<ConnectRequest, DecodeError> {
    let mut r = Reader::new(body);
    let request = ConnectRequest {
        protocol_version: r.int("protocolVersion")?,
        last_zxid_seen: r.long("lastZxidSeen")?,
        timeout_ms: r.int("timeOut")?,
        session_id: r.long("sessionId")?,
        password: r.buffer("passwd")?,
        read_only: if r.remaining() > 0 {
            Some(r.boolean("readOnly")?)
        } else {
            None
        },
    };
    Ok(request)
}

pub fn encode_connect_response(response: &ConnectResponse) -> Vec<u8> {
    let mut w = Writer::default();
    w.int(response.protocol_version);
    w.int(response.timeout_ms);
    w.long(response.session_id);
    w.buffer(&response.password);
    if let Some(read_only) = response.read_only {
        w.boolean(read_only);
    }
    w.into_packet()
}

fn decode_op(r: &mut Reader<'_>, opcode: i32, depth: usize) -> Result<Op, DecodeError> {
    let op = match opcode {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
            let path = r.string("path")?;
            let data = r.buffer("data")?;
            let acl = r.acls()?;
            let flags = r.int("flags")?;
            if opcode == op::CREATE_TTL {
                r.long("ttl")?;
            }
            Op::Create {
                path,
                data,
                acl,
                flags,
                opcode,
            }
        }
        op::DELETE => Op::Delete {
            path: r.string("path")?,
            version: r.int("version")?,
        },
        op::EXISTS => Op::Exists {
            path: r.string("path")?,
            watch: r.boolean("watch")?,
        },
        op::GET_DATA => Op::GetData {
            path: r.string("path")?,
            watch: r.boolean("watch")?,
        },
        op::SET_DATA => Op::SetData {
            path: r.string("path")?,
            data: r.buffer("data")?,
            version: r.int("version")?,
        },
        op::GET_ACL => Op::GetAcl {
            path: r.string("path")?,
        },
        op::SET_ACL => Op::SetAcl {
            path: r.string("path")?,
            acl: r.acls()?,
            version: r.int("version")?,
        },
        op::GET_CHILDREN | op::GET_CHILDREN2 => Op::GetChildren {
            path: r.string("path")?,
            watch: r.boolean("watch")?,
            with_stat: opcode == op::GET_CHILDREN2,
        },
        op::SYNC => Op::Sync {
            path: r.string("path")?,
        },
        op::CHECK => Op::Check {
            path: r.string("path")?,
            version: r.int("version")?,
        },
        op::MULTI | op::MULTI_READ => {
            if depth > 0 {
                return Err(r.error("no multi inside a multi"));
            }
            let mut ops = Vec::new();
            loop {
                let kind = r.int("multi header type")?;
                let done = r.boolean("multi header done")?;
                r.int("multi header err")?;
                if done {
                    break;
                }
                if ops.len() >= 10_000 {
                    return Err(r.error("at most 10000 operations in a multi"));
                }
                ops.push(decode_op(r, kind, depth + 1)?);
            }
            Op::Multi { ops }
        }
        op::SET_WATCHES | op::SET_WATCHES2 => {
            let relative_zxid = r.long("relativeZxid")?;
            let data = r.strings("dataWatches")?;
            let exist = r.strings("existWatches")?;
            let child = r.strings("childWatches")?;
            if opcode == op::SET_WATCHES2 {
                let persistent = r.strings("persistentWatches")?;
                let recursive = r.strings("persistentRecursiveWatches")?;
                if !persistent.is_empty() || !recursive.is_empty() {
                    return Ok(Op::Unsupported { opcode });
                }
            }
            Op::SetWatches {
                relative_zxid,
                data,
                exist,
                child,
            }
        }
        op::AUTH => {
            r.int("auth type")?;
            let scheme = r.string("auth scheme")?;
            let data = r.buffer("auth data")?;
            Op::Auth { scheme, data }
        }
        op::CLOSE_SESSION => Op::CloseSession,
        op::PING => Op::Ping,
        other if depth > 0 => {
            return Err(r.error(&format!("a multi operation type, found {other}")))
        }
        other => Op::Unsupported { opcode: other },
    };
    Ok(op)
}

/// Decodes a request packet body (after the connect handshake).
pub fn decode_request(body: &[u8]) -> Result<Request, DecodeError> {
    let mut r = Reader::new(body);
    let xid = r.int("xid")?;
    let opcode = r.int("type")?;
    let op = decode_op(&mut r, opcode, 0)?;
    Ok(Request { xid, op })
}

fn write_response(w: &mut Writer, response: &Response) {
    match response {
        Response::Empty => {}
        Response::Path(path) => w.string(path),
        Response::PathStat(path, stat) => {
            w.string(path);
            w.stat(stat);
        }
        Response::Stat(stat) => w.stat(stat),
        Response::Data(data, stat) => {
            w.buffer(data);
            w.stat(stat);
        }
        Response::Children(children) => w.strings(children),
        Response::Children2(children, stat) => {
            w.strings(children);
            w.stat(stat);
        }
        Response::Acl(acl, stat) => {
            w.acls(acl);
            w.stat(stat);
        }
        Response::Multi(results) => {
            for result in results {
                match result {
                    MultiResult::Ok { opcode, response } => {
                        w.int(*opcode);
                        w.boolean(false);
                        w.int(0);
                        write_response(w, response);
                    }
                    MultiResult::Error(code) => {
                        w.int(op::ERROR);
                        w.boolean(false);
                        w.int(code.code());
                        w.int(code.code());
                    }
                }
            }
            w.int(-1);
            w.boolean(true);
            w.int(-1);
        }
    }
}

/// Encodes a reply: header, and the body when there is no error.
pub fn encode_reply(xid: i32, zxid: i64, result: &Result<Response, ErrorCode>) -> Vec<u8> {
    let mut w = Writer::default();
    w.int(xid);
    w.long(zxid);
    match result {
        Ok(response) => {
            w.int(0);
            write_response(&mut w, response);
        }
        Err(code) => w.int(code.code()),
    }
    w.into_packet()
}

pub fn encode_event(zxid: i64, event: &WatcherEvent) -> Vec<u8> {
    let mut w = Writer::default();
    w.int(XID_NOTIFICATION);
    w.long(zxid);
    w.int(0);
    w.int(event.kind);
    w.int(event.state);
    w.string(&event.path);
    w.into_packet()
}

/// Splits complete packets off the front of a buffer: `Ok(Some(body))`, `Ok(None)` when more bytes
/// are needed, or an error for a negative or oversized length.
pub fn split_packet(
    buffer: &mut bytes::BytesMut,
    max: usize,
) -> Result<Option<bytes::Bytes>, DecodeError> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let length = i32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
    if length < 0 || length as usize > max {
        return Err(DecodeError {
            offset: 0,
            expected: format!("a packet length from 0 to {max}, found {length}"),
        });
    }
    let length = length as usize;
    if buffer.len() < 4 + length {
        return Ok(None);
    }
    let mut packet = buffer.split_to(4 + length);
    Ok(Some(packet.split_off(4).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(packet: Vec<u8>) -> Vec<u8> {
        packet[4..].to_vec()
    }

    #[test]
    fn requests_round_trip() {
        let ops = vec![
            Op::Create {
                path: "/a".into(),
                data: b"x".to_vec(),
                acl: vec![Acl::open()],
                flags: 3,
                opcode: op::CREATE2,
            },
            Op::Delete {
                path: "/a".into(),
                version: -1,
            },
            Op::GetChildren {
                path: "/".into(),
                watch: true,
                with_stat: true,
            },
            Op::Multi {
                ops: vec![
                    Op::Check {
                        path: "/a".into(),
                        version: 2,
                    },
                    Op::SetData {
                        path: "/a".into(),
                        data: vec![],
                        version: 2,
                    },
                ],
            },
            Op::SetWatches {
                relative_zxid: 9,
                data: vec!["/a".into()],
                exist: vec![],
                child: vec!["/".into()],
            },
        ];
        for (xid, op) in ops.into_iter().enumerate() {
            let request = Request {
                xid: xid as i32,
                op,
            };
            assert_eq!(decode_request(&body(encode_request(&request))), Ok(request));
        }
    }

    #[test]
    fn connect_round_trip_with_and_without_read_only() {
        for read_only in [None, Some(false)] {
            let request = ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: 5,
                timeout_ms: 10_000,
                session_id: 0,
                password: vec![0; 16],
                read_only,
            };
            assert_eq!(decode_connect(&body(encode_connect(&request))), Ok(request));
        }
    }

    #[test]
    fn truncated_request_names_the_field() {
        let mut packet = body(encode_request(&Request {
            xid: 1,
            op: Op::GetData {
                path: "/abc".into(),
                watch: false,
            },
        }));
        packet.truncate(13);
        let err = decode_request(&packet).unwrap_err();
        assert_eq!(err.expected, "path (4 bytes, 1 left)");
    }

    #[test]
    fn oversized_packet_is_refused() {
        let mut buffer = bytes::BytesMut::from(&[0x7f, 0, 0, 0][..]);
        assert!(split_packet(&mut buffer, MAX_PACKET_BYTES).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_request(&bytes);
            let _ = decode_connect(&bytes);
            let mut buffer = bytes::BytesMut::from(&bytes[..]);
            while let Ok(Some(packet)) = split_packet(&mut buffer, 64) {
                let _ = decode_request(&packet);
            }
        }

        #[test]
        fn stat_round_trips(v in proptest::collection::vec(any::<i64>(), 11)) {
            let stat = Stat {
                czxid: v[0], mzxid: v[1], ctime: v[2], mtime: v[3], version: v[4] as i32,
                cversion: v[5] as i32, aversion: v[6] as i32, ephemeral_owner: v[7],
                data_length: v[8] as i32, num_children: v[9] as i32, pzxid: v[10],
            };
            let mut w = Writer::default();
            w.stat(&stat);
            prop_assert_eq!(Reader::new(&w.bytes).stat(), Ok(stat));
        }
    }
}
