//! The client's half of the codec: requests and the handshake encoded, replies, handshake
//! answers and notifications decoded (drover's own client and the tests use it).

use super::*;

/// Encodes a request (for drover's own client and for tests).
pub fn encode_request(request: &Request) -> Vec<u8> {
    let mut w = Writer::default();
    w.int(request.xid);
    write_op(&mut w, &request.op);
    w.into_packet()
}

fn opcode_of(op: &Op) -> i32 {
    match op {
        Op::Create { opcode, .. } => *opcode,
        Op::Delete { .. } => op::DELETE,
        Op::Exists { .. } => op::EXISTS,
        Op::GetData { .. } => op::GET_DATA,
        Op::SetData { .. } => op::SET_DATA,
        Op::GetAcl { .. } => op::GET_ACL,
        Op::SetAcl { .. } => op::SET_ACL,
        Op::GetChildren {
            with_stat: false, ..
        } => op::GET_CHILDREN,
        Op::GetChildren {
            with_stat: true, ..
        } => op::GET_CHILDREN2,
        Op::Sync { .. } => op::SYNC,
        Op::Check { .. } => op::CHECK,
        Op::Multi { .. } => op::MULTI,
        Op::SetWatches { .. } => op::SET_WATCHES,
        Op::Auth { .. } => op::AUTH,
        Op::CloseSession => op::CLOSE_SESSION,
        Op::Ping => op::PING,
        Op::Unsupported { opcode } => *opcode,
    }
}

fn write_op(w: &mut Writer, op: &Op) {
    w.int(opcode_of(op));
    write_op_body(w, op);
}

fn write_op_body(w: &mut Writer, op: &Op) {
    match op {
        Op::Create {
            path,
            data,
            acl,
            flags,
            opcode,
        } => {
            w.string(path);
            w.buffer(data);
            w.acls(acl);
            w.int(*flags);
            if *opcode == op::CREATE_TTL {
                w.long(0);
            }
        }
        Op::Delete { path, version } | Op::Check { path, version } => {
            w.string(path);
            w.int(*version);
        }
        Op::Exists { path, watch }
        | Op::GetData { path, watch }
        | Op::GetChildren { path, watch, .. } => {
            w.string(path);
            w.boolean(*watch);
        }
        Op::SetData {
            path,
            data,
            version,
        } => {
            w.string(path);
            w.buffer(data);
            w.int(*version);
        }
        Op::GetAcl { path } | Op::Sync { path } => w.string(path),
        Op::SetAcl { path, acl, version } => {
            w.string(path);
            w.acls(acl);
            w.int(*version);
        }
        Op::Multi { ops } => {
            for inner in ops {
                w.int(opcode_of(inner));
                w.boolean(false);
                w.int(-1);
                write_op_body(w, inner);
            }
            w.int(-1);
            w.boolean(true);
            w.int(-1);
        }
        Op::SetWatches {
            relative_zxid,
            data,
            exist,
            child,
        } => {
            w.long(*relative_zxid);
            w.strings(data);
            w.strings(exist);
            w.strings(child);
        }
        Op::Auth { scheme, data } => {
            w.int(0);
            w.string(scheme);
            w.buffer(data);
        }
        Op::CloseSession | Op::Ping | Op::Unsupported { .. } => {}
    }
}

/// A decoded reply, for drover's client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyHeader {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
}

pub fn decode_reply_header(r: &mut Reader<'_>) -> Result<ReplyHeader, DecodeError> {
    Ok(ReplyHeader {
        xid: r.int("xid")?,
        zxid: r.long("zxid")?,
        err: r.int("err")?,
    })
}

pub fn decode_connect_response(body: &[u8]) -> Result<ConnectResponse, DecodeError> {
    let mut r = Reader::new(body);
    Ok(ConnectResponse {
        protocol_version: r.int("protocolVersion")?,
        timeout_ms: r.int("timeOut")?,
        session_id: r.long("sessionId")?,
        password: r.buffer("passwd")?,
        read_only: if r.remaining() > 0 {
            Some(r.boolean("readOnly")?)
        } else {
            None
        },
    })
}

pub fn encode_connect(request: &ConnectRequest) -> Vec<u8> {
    let mut w = Writer::default();
    w.int(request.protocol_version);
    w.long(request.last_zxid_seen);
    w.int(request.timeout_ms);
    w.long(request.session_id);
    w.buffer(&request.password);
    if let Some(read_only) = request.read_only {
        w.boolean(read_only);
    }
    w.into_packet()
}

pub fn decode_event(r: &mut Reader<'_>) -> Result<WatcherEvent, DecodeError> {
    Ok(WatcherEvent {
        kind: r.int("event type")?,
        state: r.int("event state")?,
        path: r.string("event path")?,
    })
}
