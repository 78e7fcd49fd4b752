//! etcd's v3 messages (`etcdpb`) as JSON, the way etcd 3.4's HTTP gateway (grpc-gateway v1,
//! jsonpb with `OrigName` and without `EmitDefaults`) writes and reads them, and how that
//! gateway renders gRPC errors and streams.
//!
//! Written: the proto's own field names (`create_revision`, `ID`, `grantedTTL`) in field
//! order; 64-bit integers as strings, 32-bit ones as numbers, bytes as padded standard
//! base64, enums by name. A field at its default (0, false, empty, absent) is left out; a
//! set message is written even when empty (`{}`), and so is the set member of a oneof.
//! `<`, `>` and `&` are escaped as Go's encoder escapes them.
//!
//! Read: the proto name or protoc's lowerCamelCase JSON name (`createRevision`; `ID` stays
//! `ID`, so `id` is not a field), integers as numbers or strings, enums by name or number,
//! `null` as absent. Unknown fields are ignored and a key given twice keeps its last value,
//! as etcd's gateway does (its jsonpb allows unknown fields). Errors use Go's wording where
//! it is simple to match.
//!
//! One mechanism for every message: `Field` says how each field type is written and read,
//! and `messages!` lists each message's fields (with the proto name where it differs from
//! the Rust one, and the enum or oneof a field holds).
//!
//! Pure: used by the node's HTTP connections (any shard executor) and by tests. Must not
//! touch node state.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::etcdpb::*;
use crate::grpc::{Code, Status};

/// Why a JSON body does not make the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError(pub String);

type R<T> = Result<T, JsonError>;

/// Go's `base64.StdEncoding`: padded, and lenient about the unused bits of the last symbol.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// A JSON object being written: its fields in order, commas between them.
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl Obj<'_> {
    fn key(&mut self, name: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
        self.out
    }
}

fn object(out: &mut String, f: impl FnOnce(&mut Obj)) {
    out.push('{');
    f(&mut Obj { out, first: true });
    out.push('}');
}

/// How a field's type is written and read.
pub trait Field: Sized {
    /// Left out when writing (jsonpb without `EmitDefaults`).
    fn is_default(&self) -> bool;
    fn write(&self, out: &mut String);
    /// From a JSON value other than `null`.
    fn read(v: Value) -> R<Self>;
}

/// A message's fields.
pub trait JsonMessage: Default {
    fn write_fields(&self, o: &mut Obj);
    /// Takes the fields it knows out of `m`.
    fn read_fields(&mut self, m: &mut Map<String, Value>) -> R<()>;
}

/// A oneof: at most one of its members is set.
pub trait Oneof: Sized {
    fn write(&self, o: &mut Obj);
    fn read(m: &mut Map<String, Value>) -> R<Option<Self>>;
}

/// An enum's Go name (in errors) and its names by value (etcd's enums number from 0).
pub struct EnumType {
    go: &'static str,
    names: &'static [&'static str],
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn cannot(what: &str, go: &str) -> JsonError {
    JsonError(format!(
        "json: cannot unmarshal {what} into Go value of type {go}"
    ))
}

/// A number, given bare or as a string holding one (jsonpb accepts both for integers), and
/// its text for errors.
fn number(v: Value, go: &str) -> R<(serde_json::Number, String)> {
    match v {
        Value::Number(n) => {
            let text = n.to_string();
            Ok((n, text))
        }
        Value::String(s) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Number(n)) => Ok((n, s.trim().to_string())),
            Ok(other) => Err(cannot(kind(&other), go)),
            Err(_) => Err(JsonError(match s.trim().chars().next() {
                None => "unexpected end of JSON input".to_string(),
                Some(c) => format!("invalid character '{c}' looking for beginning of value"),
            })),
        },
        other => Err(cannot(kind(&other), go)),
    }
}

macro_rules! integers {
    ($($t:ty, $go:literal, $quoted:literal;)*) => {$(
        impl Field for $t {
            fn is_default(&self) -> bool {
                *self == 0
            }
            fn write(&self, out: &mut String) {
                if $quoted {
                    out.push('"');
                    out.push_str(&self.to_string());
                    out.push('"');
                } else {
                    out.push_str(&self.to_string());
                }
            }
            fn read(v: Value) -> R<Self> {
                let (n, text) = number(v, $go)?;
                n.as_i64()
                    .and_then(|i| <$t>::try_from(i).ok())
                    .or_else(|| n.as_u64().and_then(|u| <$t>::try_from(u).ok()))
                    .ok_or_else(|| cannot(&format!("number {text}"), $go))
            }
        }
    )*};
}

// jsonpb writes 64-bit integers as strings (JavaScript's numbers hold 53 bits).
integers! {
    i64, "int64", true;
    u64, "uint64", true;
    i32, "int32", false;
    u32, "uint32", false;
}

impl Field for bool {
    fn is_default(&self) -> bool {
        !*self
    }
    fn write(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
    fn read(v: Value) -> R<Self> {
        v.as_bool().ok_or_else(|| cannot(kind(&v), "bool"))
    }
}

impl Field for String {
    fn is_default(&self) -> bool {
        self.is_empty()
    }
    fn write(&self, out: &mut String) {
        out.push_str(&Value::from(self.as_str()).to_string());
    }
    fn read(v: Value) -> R<Self> {
        match v {
            Value::String(s) => Ok(s),
            other => Err(cannot(kind(&other), "string")),
        }
    }
}

impl Field for Bytes {
    fn is_default(&self) -> bool {
        self.is_empty()
    }
    fn write(&self, out: &mut String) {
        out.push('"');
        B64.encode_string(self, out);
        out.push('"');
    }
    fn read(v: Value) -> R<Self> {
        let Value::String(s) = v else {
            return Err(cannot(kind(&v), "[]uint8"));
        };
        B64.decode(s.as_bytes()).map(Bytes::from).map_err(|e| {
            // Go names where the bad quantum starts.
            let at = match e {
                base64::DecodeError::InvalidByte(at, _)
                | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                base64::DecodeError::InvalidLength(n) => n / 4 * 4,
                base64::DecodeError::InvalidPadding => s.len().saturating_sub(4) / 4 * 4,
            };
            JsonError(format!("illegal base64 data at input byte {at}"))
        })
    }
}

impl<T: Field> Field for Vec<T> {
    fn is_default(&self) -> bool {
        self.is_empty()
    }
    fn write(&self, out: &mut String) {
        out.push('[');
        for (i, x) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            x.write(out);
        }
        out.push(']');
    }
    fn read(v: Value) -> R<Self> {
        let Value::Array(a) = v else {
            return Err(cannot(kind(&v), "[]json.RawMessage"));
        };
        a.into_iter().map(T::read).collect()
    }
}

/// A message field: written when set, even if empty.
impl<T: Field> Field for Option<T> {
    fn is_default(&self) -> bool {
        self.is_none()
    }
    fn write(&self, out: &mut String) {
        if let Some(x) = self {
            x.write(out);
        }
    }
    fn read(v: Value) -> R<Self> {
        T::read(v).map(Some)
    }
}

fn write_enum(t: &EnumType, v: i32, out: &mut String) {
    match usize::try_from(v).ok().and_then(|i| t.names.get(i)) {
        Some(name) => {
            out.push('"');
            out.push_str(name);
            out.push('"');
        }
        // A value without a name is written as its number.
        None => out.push_str(&v.to_string()),
    }
}

fn read_enum(t: &EnumType, v: Value) -> R<i32> {
    match v {
        Value::String(s) => t
            .names
            .iter()
            .position(|n| *n == s)
            .map(|i| i as i32)
            .ok_or_else(|| JsonError(format!("unknown value {s:?} for enum {}", t.go))),
        Value::Number(n) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| cannot(&format!("number {n}"), t.go)),
        other => Err(cannot(kind(&other), t.go)),
    }
}

/// protoc's JSON name of a field: `_x` becomes `X` (`create_revision` -> `createRevision`).
fn json_name(orig: &str) -> Cow<'_, str> {
    if !orig.contains('_') {
        return Cow::Borrowed(orig);
    }
    let mut out = String::with_capacity(orig.len());
    let mut upper = false;
    for c in orig.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A field's value under either of its names (the JSON name wins, as in jsonpb); `null` is
/// absent.
fn take(m: &mut Map<String, Value>, orig: &str) -> Option<Value> {
    let by_orig = m.remove(orig);
    let camel = json_name(orig);
    let by_camel = if camel != orig {
        m.remove(&*camel)
    } else {
        None
    };
    by_camel.or(by_orig).filter(|v| !v.is_null())
}

fn into_object(v: Value) -> R<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(cannot(kind(&other), "map[string]json.RawMessage")),
    }
}

macro_rules! name {
    ($f:ident) => {
        stringify!($f)
    };
    ($f:ident $name:literal) => {
        $name
    };
}

macro_rules! write_field {
    ($o:ident, $v:expr, $n:expr) => {
        if !Field::is_default(&$v) {
            Field::write(&$v, $o.key($n));
        }
    };
    ($o:ident, $v:expr, $n:expr, enumeration $t:path) => {
        if $v != 0 {
            write_enum(&$t, $v, $o.key($n));
        }
    };
    ($o:ident, $v:expr, $n:expr, oneof) => {
        if let Some(x) = &$v {
            Oneof::write(x, $o);
        }
    };
}

macro_rules! read_field {
    ($m:ident, $v:expr, $n:expr) => {
        if let Some(x) = take($m, $n) {
            $v = Field::read(x)?;
        }
    };
    ($m:ident, $v:expr, $n:expr, enumeration $t:path) => {
        if let Some(x) = take($m, $n) {
            $v = read_enum(&$t, x)?;
        }
    };
    ($m:ident, $v:expr, $n:expr, oneof) => {
        if let Some(x) = Oneof::read($m)? {
            $v = Some(x);
        }
    };
}

/// Each message's fields in proto order: `rust_name`, `rust_name = "protoName"`, and
/// `=> enumeration ENUM_TYPE` or `=> oneof` for the fields that hold one.
macro_rules! messages {
    ($($t:ident { $($f:ident $(= $name:literal)? $(=> $how:ident $($arg:path)?)?),* $(,)? })*) => {$(
        impl JsonMessage for $t {
            #[allow(unused_variables)]
            fn write_fields(&self, o: &mut Obj) {
                $(write_field!(o, self.$f, name!($f $($name)?) $(, $how $($arg)?)?);)*
            }
            #[allow(unused_variables)]
            fn read_fields(&mut self, m: &mut Map<String, Value>) -> R<()> {
                $(read_field!(m, self.$f, name!($f $($name)?) $(, $how $($arg)?)?);)*
                Ok(())
            }
        }

        impl Field for $t {
            fn is_default(&self) -> bool {
                false
            }
            fn write(&self, out: &mut String) {
                object(out, |o| self.write_fields(o));
            }
            fn read(v: Value) -> R<Self> {
                let mut m = into_object(v)?;
                let mut msg = Self::default();
                msg.read_fields(&mut m)?;
                Ok(msg)
            }
        }
    )*};
}

/// Each oneof's members and their proto names.
macro_rules! oneofs {
    ($($t:path { $($v:ident = $name:literal),* $(,)? })*) => {$(
        impl Oneof for $t {
            fn write(&self, o: &mut Obj) {
                use $t as T;
                match self {
                    $(T::$v(x) => Field::write(x, o.key($name)),)*
                }
            }
            fn read(m: &mut Map<String, Value>) -> R<Option<Self>> {
                use $t as T;
                let mut set = None;
                $(if let Some(x) = take(m, $name) {
                    set = Some(T::$v(Field::read(x)?));
                })*
                Ok(set)
            }
        }
    )*};
}

pub const SORT_ORDER: EnumType = EnumType {
    go: "etcdserverpb.RangeRequest_SortOrder",
    names: &["NONE", "ASCEND", "DESCEND"],
};
pub const SORT_TARGET: EnumType = EnumType {
    go: "etcdserverpb.RangeRequest_SortTarget",
    names: &["KEY", "VERSION", "CREATE", "MOD", "VALUE"],
};
pub const COMPARE_RESULT: EnumType = EnumType {
    go: "etcdserverpb.Compare_CompareResult",
    names: &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"],
};
pub const COMPARE_TARGET: EnumType = EnumType {
    go: "etcdserverpb.Compare_CompareTarget",
    names: &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"],
};
pub const ALARM_ACTION: EnumType = EnumType {
    go: "etcdserverpb.AlarmRequest_AlarmAction",
    names: &["GET", "ACTIVATE", "DEACTIVATE"],
};
pub const ALARM_TYPE: EnumType = EnumType {
    go: "etcdserverpb.AlarmType",
    names: &["NONE", "NOSPACE", "CORRUPT"],
};
pub const EVENT_TYPE: EnumType = EnumType {
    go: "mvccpb.Event_EventType",
    names: &["PUT", "DELETE"],
};

oneofs! {
    request_op::Request {
        RequestRange = "request_range",
        RequestPut = "request_put",
        RequestDeleteRange = "request_delete_range",
        RequestTxn = "request_txn",
    }
    response_op::Response {
        ResponseRange = "response_range",
        ResponsePut = "response_put",
        ResponseDeleteRange = "response_delete_range",
        ResponseTxn = "response_txn",
    }
    compare::TargetUnion {
        Version = "version",
        CreateRevision = "create_revision",
        ModRevision = "mod_revision",
        Value = "value",
        Lease = "lease",
    }
}

messages! {
    ResponseHeader { cluster_id, member_id, revision, raft_term }
    KeyValue { key, create_revision, mod_revision, version, value, lease }
    Event { r#type = "type" => enumeration EVENT_TYPE, kv, prev_kv }
    RangeRequest {
        key, range_end, limit, revision,
        sort_order => enumeration SORT_ORDER,
        sort_target => enumeration SORT_TARGET,
        serializable, keys_only, count_only,
        min_mod_revision, max_mod_revision, min_create_revision, max_create_revision,
    }
    RangeResponse { header, kvs, more, count }
    PutRequest { key, value, lease, prev_kv, ignore_value, ignore_lease }
    PutResponse { header, prev_kv }
    DeleteRangeRequest { key, range_end, prev_kv }
    DeleteRangeResponse { header, deleted, prev_kvs }
    RequestOp { request => oneof }
    ResponseOp { response => oneof }
    Compare {
        result => enumeration COMPARE_RESULT,
        target => enumeration COMPARE_TARGET,
        key,
        target_union => oneof,
        range_end,
    }
    TxnRequest { compare, success, failure }
    TxnResponse { header, succeeded, responses }
    CompactionRequest { revision, physical }
    CompactionResponse { header }
    HashRequest {}
    HashResponse { header, hash }
    HashKvRequest { revision }
    HashKvResponse { header, hash, compact_revision }
    SnapshotRequest {}
    SnapshotResponse { header, remaining_bytes, blob }
    LeaseGrantRequest { ttl = "TTL", id = "ID" }
    LeaseGrantResponse { header, id = "ID", ttl = "TTL", error }
    LeaseRevokeRequest { id = "ID" }
    LeaseRevokeResponse { header }
    LeaseKeepAliveRequest { id = "ID" }
    LeaseKeepAliveResponse { header, id = "ID", ttl = "TTL" }
    LeaseTimeToLiveRequest { id = "ID", keys }
    LeaseTimeToLiveResponse {
        header, id = "ID", ttl = "TTL", granted_ttl = "grantedTTL", keys,
    }
    LeaseLeasesRequest {}
    LeaseStatus { id = "ID" }
    LeaseLeasesResponse { header, leases }
    Member {
        id = "ID", name, peer_urls = "peerURLs", client_urls = "clientURLs",
        is_learner = "isLearner",
    }
    MemberAddRequest { peer_urls = "peerURLs", is_learner = "isLearner" }
    MemberAddResponse { header, member, members }
    MemberRemoveRequest { id = "ID" }
    MemberUpdateRequest { id = "ID", peer_urls = "peerURLs" }
    MemberListRequest { linearizable }
    MemberPromoteRequest { id = "ID" }
    MembersResponse { header, members }
    DefragmentRequest {}
    HeaderResponse { header }
    MoveLeaderRequest { target_id = "targetID" }
    AlarmRequest {
        action => enumeration ALARM_ACTION,
        member_id = "memberID",
        alarm => enumeration ALARM_TYPE,
    }
    AlarmMember { member_id = "memberID", alarm => enumeration ALARM_TYPE }
    AlarmResponse { header, alarms }
    StatusRequest {}
    StatusResponse {
        header, version, db_size = "dbSize", leader, raft_index = "raftIndex",
        raft_term = "raftTerm", raft_applied_index = "raftAppliedIndex", errors,
        db_size_in_use = "dbSizeInUse", is_learner = "isLearner",
    }
}

/// Go's encoder escapes these inside strings (they can appear nowhere else in the output).
fn go_escaped(s: String) -> String {
    if !s.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// A message as the gateway writes it.
pub fn encode<M: JsonMessage>(m: &M) -> String {
    let mut out = String::new();
    object(&mut out, |o| m.write_fields(o));
    go_escaped(out)
}

/// A message from one JSON value.
pub fn from_value<M: JsonMessage>(v: Value) -> R<M> {
    let mut m = into_object(v)?;
    let mut msg = M::default();
    msg.read_fields(&mut m)?;
    Ok(msg)
}

/// The JSON values of a request body one after another, as Go's decoder reads them: an
/// empty body holds none, and reading stops at the first error.
pub fn values(body: &[u8]) -> impl Iterator<Item = R<Value>> + '_ {
    let mut it = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let r = it.next()?.map_err(|e| JsonError(e.to_string()));
        failed = r.is_err();
        Some(r)
    })
}

/// The request message of a unary call's body: its first JSON value (what follows is not
/// read, as the gateway does not); an empty body is the empty message.
pub fn decode<M: JsonMessage>(body: &[u8]) -> R<M> {
    match values(body).next() {
        None => Ok(M::default()),
        Some(v) => from_value(v?),
    }
}

/// The HTTP status etcd's gateway (grpc-gateway 1.9) answers a gRPC code with.
pub fn http_status(code: Code) -> u16 {
    use Code::*;
    match code {
        Ok => 200,
        Canceled => 408,
        InvalidArgument | OutOfRange => 400,
        DeadlineExceeded => 504,
        NotFound => 404,
        AlreadyExists | Aborted => 409,
        PermissionDenied => 403,
        Unauthenticated => 401,
        ResourceExhausted => 429,
        FailedPrecondition => 412,
        Unimplemented => 501,
        Unavailable => 503,
        Unknown | Internal | DataLoss => 500,
    }
}

/// Go's `http.StatusText` of the statuses `http_status` gives.
fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        412 => "Precondition Failed",
        429 => "Too Many Requests",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    }
}

/// A failed call's body: `{"error":M,"message":M,"code":N}`.
pub fn error_body(s: &Status) -> String {
    let mut out = String::new();
    object(&mut out, |o| {
        write_field!(o, s.message, "error");
        write_field!(o, s.message, "message");
        write_field!(o, s.code as i32, "code");
    });
    go_escaped(out)
}

/// One message of a streamed answer: `{"result":{...}}`.
pub fn stream_result<M: JsonMessage>(m: &M) -> String {
    let mut out = String::new();
    object(&mut out, |o| object(o.key("result"), |o| m.write_fields(o)));
    go_escaped(out)
}

/// How a streamed answer ends when the call fails:
/// `{"error":{"grpc_code":N,"http_code":N,"message":"...","http_status":"..."}}`.
pub fn stream_error(s: &Status) -> String {
    let http = http_status(s.code);
    let mut out = String::new();
    object(&mut out, |o| {
        object(o.key("error"), |o| {
            write_field!(o, s.code as i32, "grpc_code");
            write_field!(o, http as i32, "http_code");
            write_field!(o, s.message, "message");
            write_field!(o, status_text(http).to_string(), "http_status");
        })
    });
    go_escaped(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn raw(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    fn enc<M: JsonMessage>(m: &M) -> Value {
        serde_json::from_str(&encode(m)).unwrap()
    }

    #[test]
    fn output_uses_proto_names_strings_for_64_bits_and_base64() {
        let r = RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: u64::MAX,
                member_id: 7,
                revision: 3,
                raft_term: 2,
            }),
            kvs: vec![KeyValue {
                key: b("a"),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                value: raw(b"\x00\xff"),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            encode(&r),
            r#"{"header":{"cluster_id":"18446744073709551615","member_id":"7","revision":"3","raft_term":"2"},"kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"3","version":"2","value":"AP8="}],"count":"1"}"#
        );
        let ttl = LeaseTimeToLiveResponse {
            id: 5,
            ttl: -1,
            granted_ttl: 60,
            keys: vec![b("k"), Bytes::new()],
            ..Default::default()
        };
        assert_eq!(
            encode(&ttl),
            r#"{"ID":"5","TTL":"-1","grantedTTL":"60","keys":["aw==",""]}"#
        );
        let st = StatusResponse {
            version: "3.4.23".into(),
            db_size: 4096,
            raft_applied_index: 9,
            db_size_in_use: 4096,
            is_learner: true,
            ..Default::default()
        };
        assert_eq!(
            enc(&st),
            json!({"version":"3.4.23","dbSize":"4096","raftAppliedIndex":"9",
                   "dbSizeInUse":"4096","isLearner":true})
        );
        let m = MembersResponse {
            header: None,
            members: vec![Member {
                id: 1,
                name: "n<1>&".into(),
                peer_urls: vec!["http://a".into()],
                client_urls: vec![],
                is_learner: false,
            }],
        };
        assert_eq!(
            encode(&m),
            r#"{"members":[{"ID":"1","name":"n\u003c1\u003e\u0026","peerURLs":["http://a"]}]}"#
        );
        // 32-bit integers are numbers.
        assert_eq!(
            encode(&HashResponse {
                header: None,
                hash: 7
            }),
            r#"{"hash":7}"#
        );
    }

    #[test]
    fn defaults_are_left_out_but_set_messages_and_oneof_members_are_not() {
        assert_eq!(encode(&PutResponse::default()), "{}");
        assert_eq!(
            encode(&PutResponse {
                header: Some(ResponseHeader::default()),
                prev_kv: None
            }),
            r#"{"header":{}}"#
        );
        let c = Compare {
            result: 0,
            target: 1,
            key: b("k"),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            range_end: Bytes::new(),
        };
        assert_eq!(
            encode(&c),
            r#"{"target":"CREATE","key":"aw==","create_revision":"0"}"#
        );
        // A value without a name is its number.
        let r = RangeRequest {
            sort_order: 7,
            ..Default::default()
        };
        assert_eq!(encode(&r), r#"{"sort_order":7}"#);
    }

    #[test]
    fn oneofs_are_written_as_their_member() {
        let t = TxnResponse {
            header: None,
            succeeded: true,
            responses: vec![
                ResponseOp {
                    response: Some(response_op::Response::ResponsePut(PutResponse {
                        header: Some(ResponseHeader {
                            revision: 4,
                            ..Default::default()
                        }),
                        prev_kv: None,
                    })),
                },
                ResponseOp {
                    response: Some(response_op::Response::ResponseTxn(TxnResponse::default())),
                },
            ],
        };
        assert_eq!(
            encode(&t),
            r#"{"succeeded":true,"responses":[{"response_put":{"header":{"revision":"4"}}},{"response_txn":{}}]}"#
        );
    }

    #[test]
    fn input_takes_both_spellings_strings_or_numbers_and_enum_names_or_numbers() {
        let a: RangeRequest = decode(
            br#"{"key":"YQ==","rangeEnd":"Yg==","limit":"2","revision":3,
                 "sort_order":"DESCEND","sortTarget":3,"keysOnly":true,
                 "max_create_revision":" 9"}"#,
        )
        .unwrap();
        assert_eq!(
            a,
            RangeRequest {
                key: b("a"),
                range_end: b("b"),
                limit: 2,
                revision: 3,
                sort_order: 2,
                sort_target: 3,
                keys_only: true,
                max_create_revision: 9,
                ..Default::default()
            }
        );
        let g: LeaseGrantRequest = decode(br#"{"TTL":60,"ID":"12"}"#).unwrap();
        assert_eq!((g.ttl, g.id), (60, 12));
        // `ID`'s JSON name is `ID`: lowercase `id` is an unknown field, ignored.
        let g: LeaseGrantRequest = decode(br#"{"ttl":60,"id":12}"#).unwrap();
        assert_eq!((g.ttl, g.id), (0, 0));
        let m: MemberAddRequest =
            decode(br#"{"peerURLs":["http://x:1"],"isLearner":true}"#).unwrap();
        assert_eq!(m.peer_urls, ["http://x:1"]);
        assert!(m.is_learner);
        let al: AlarmRequest =
            decode(br#"{"action":"DEACTIVATE","memberID":"5","alarm":1}"#).unwrap();
        assert_eq!((al.action, al.member_id, al.alarm), (2, 5, 1));
        let mv: MoveLeaderRequest = decode(br#"{"targetID":"9"}"#).unwrap();
        assert_eq!(mv.target_id, 9);
    }

    #[test]
    fn nested_txns_and_oneofs_are_read_under_both_spellings() {
        let t: TxnRequest = decode(
            br#"{"compare":[{"key":"YQ==","result":"NOT_EQUAL","target":"VALUE","value":"MQ=="},
                            {"key":"YQ==","target":"MOD","modRevision":"0"}],
                 "success":[{"request_put":{"key":"Yg==","value":"Mw==","prev_kv":true}},
                            {"requestTxn":{"failure":[{"requestDeleteRange":{"key":"eg=="}}]}}],
                 "failure":[]}"#,
        )
        .unwrap();
        assert_eq!(
            t.compare[0].target_union,
            Some(compare::TargetUnion::Value(b("1")))
        );
        assert_eq!((t.compare[0].result, t.compare[0].target), (3, 3));
        assert_eq!(
            t.compare[1].target_union,
            Some(compare::TargetUnion::ModRevision(0))
        );
        let Some(request_op::Request::RequestPut(p)) = &t.success[0].request else {
            panic!("{t:?}")
        };
        assert!(p.prev_kv);
        let Some(request_op::Request::RequestTxn(n)) = &t.success[1].request else {
            panic!("{t:?}")
        };
        assert!(matches!(
            &n.failure[0].request,
            Some(request_op::Request::RequestDeleteRange(d)) if d.key == "z"
        ));
        assert!(t.failure.is_empty());
    }

    #[test]
    fn input_edge_cases_are_as_etcds() {
        // Empty body: the empty message; null: absent; last duplicate wins; unknown
        // fields and what follows the first value are ignored.
        assert_eq!(
            decode::<RangeRequest>(b"").unwrap(),
            RangeRequest::default()
        );
        assert_eq!(
            decode::<RangeRequest>(b"  \n").unwrap(),
            RangeRequest::default()
        );
        let r: RangeRequest =
            decode(br#"{"key":null,"limit":null,"bogus":[1],"keys_only":null} x"#).unwrap();
        assert_eq!(r, RangeRequest::default());
        let r: RangeRequest = decode(br#"{"key":"YQ==","key":"Yg=="}"#).unwrap();
        assert_eq!(r.key, "b");
        // The JSON name wins over the proto name.
        let r: RangeRequest = decode(br#"{"keysOnly":true,"keys_only":false}"#).unwrap();
        assert!(r.keys_only);
    }

    #[test]
    fn bad_input_is_refused_in_gos_words() {
        let err = |body: &str| decode::<RangeRequest>(body.as_bytes()).unwrap_err().0;
        assert_eq!(
            err(r#"{"key":5}"#),
            "json: cannot unmarshal number into Go value of type []uint8"
        );
        assert_eq!(
            err(r#"{"key":"YQ"}"#),
            "illegal base64 data at input byte 0"
        );
        assert_eq!(
            err(r#"{"key":"Yg-_"}"#),
            "illegal base64 data at input byte 2"
        );
        assert_eq!(
            err(r#"{"limit":"x"}"#),
            "invalid character 'x' looking for beginning of value"
        );
        assert_eq!(
            err(r#"{"limit":1.5}"#),
            "json: cannot unmarshal number 1.5 into Go value of type int64"
        );
        assert_eq!(
            err(r#"{"limit":"99999999999999999999"}"#),
            "json: cannot unmarshal number 99999999999999999999 into Go value of type int64"
        );
        assert_eq!(
            err(r#"{"sort_order":"descend"}"#),
            r#"unknown value "descend" for enum etcdserverpb.RangeRequest_SortOrder"#
        );
        assert_eq!(
            err(r#"{"keys_only":"true"}"#),
            "json: cannot unmarshal string into Go value of type bool"
        );
        assert_eq!(
            err("[1]"),
            "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"
        );
        assert!(err("{").contains("EOF"), "{}", err("{"));
        let m = decode::<MemberAddRequest>(br#"{"peerURLs":"http://x"}"#).unwrap_err();
        assert_eq!(
            m.0,
            "json: cannot unmarshal string into Go value of type []json.RawMessage"
        );
        let u = decode::<MemberRemoveRequest>(br#"{"ID":-1}"#).unwrap_err();
        assert_eq!(
            u.0,
            "json: cannot unmarshal number -1 into Go value of type uint64"
        );
    }

    #[test]
    fn a_body_may_hold_several_values() {
        let v: Vec<R<Value>> = values(br#"{"ID":1} {"ID":"2"}{"#).collect();
        assert_eq!(v.len(), 3);
        let ids: Vec<i64> = v[..2]
            .iter()
            .map(|v| {
                from_value::<LeaseKeepAliveRequest>(v.clone().unwrap())
                    .unwrap()
                    .id
            })
            .collect();
        assert_eq!(ids, [1, 2]);
        assert!(v[2].is_err());
        assert_eq!(values(b" ").count(), 0);
    }

    #[test]
    fn errors_render_as_the_gateways() {
        let s = Status::new(Code::OutOfRange, "etcdserver: mvcc: <compacted>");
        assert_eq!(
            error_body(&s),
            r#"{"error":"etcdserver: mvcc: \u003ccompacted\u003e","message":"etcdserver: mvcc: \u003ccompacted\u003e","code":11}"#
        );
        assert_eq!(http_status(s.code), 400);
        assert_eq!(http_status(Code::FailedPrecondition), 412);
        assert_eq!(http_status(Code::ResourceExhausted), 429);
        assert_eq!(
            stream_error(&Status::new(Code::Unimplemented, "no")),
            r#"{"error":{"grpc_code":12,"http_code":501,"message":"no","http_status":"Not Implemented"}}"#
        );
        let ka = LeaseKeepAliveResponse {
            header: None,
            id: 3,
            ttl: 0,
        };
        assert_eq!(stream_result(&ka), r#"{"result":{"ID":"3"}}"#);
    }
}
