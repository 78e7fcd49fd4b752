//! The curl API's parser and router: the seed's requests, pipelining, partial reads, and
//! every refusal (malformed, missing field, oversized, unknown path, wrong method); the
//! admin routes with their token headers and refusals.

use ringkv_raft::ReadPolicy;
use ringkv_server::net::gateway::GatewayCall;
use ringkv_server::net::http::{AdminOp, ApiCall, HttpCall, HttpLimits, Parsed, parse, response};

const LIMITS: HttpLimits = HttpLimits {
    head_bytes_max: 8192,
    body_bytes_max: 4096,
    key_bytes_max: 16,
    value_bytes_max: 1000,
};

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost:9081\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn get(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost:9081\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
    )
}

fn http_call(req: &str) -> Result<HttpCall, (u16, &'static str, String)> {
    match parse(req.as_bytes(), &LIMITS) {
        Parsed::Request { consumed, call, .. } => {
            assert_eq!(consumed, req.len());
            call.map_err(|e| (e.status, e.code, e.message))
        }
        Parsed::Fatal(e) => Err((e.status, e.code, e.message)),
        Parsed::Incomplete => panic!("incomplete: {req}"),
    }
}

fn call(req: &str) -> Result<ApiCall, (u16, &'static str, String)> {
    http_call(req).map(|c| match c {
        HttpCall::Api(c) => c,
        other => panic!("not ringkv's own route: {other:?}"),
    })
}

fn gateway(req: &str) -> GatewayCall {
    match http_call(req) {
        Ok(HttpCall::Gateway(g)) => g,
        other => panic!("not a gateway call: {other:?}"),
    }
}

#[test]
fn the_seeds_requests_parse_into_calls() {
    assert_eq!(
        call(&post(
            "/put",
            r#"{"key": "test-key", "value": "test-value"}"#
        )),
        Ok(ApiCall::Put {
            key: "test-key".into(),
            value: "test-value".into()
        })
    );
    assert_eq!(
        call(&get("/get?key=test-key")),
        Ok(ApiCall::Get {
            key: "test-key".into(),
            consistency: None
        })
    );
    assert_eq!(
        call(&get("/get?key=test-key&consistency=linearizable")),
        Ok(ApiCall::Get {
            key: "test-key".into(),
            consistency: Some(ReadPolicy::Linearizable)
        })
    );
    assert_eq!(
        call(&get("/get?consistency=eventual&key=a%20b")),
        Ok(ApiCall::Get {
            key: "a b".into(),
            consistency: Some(ReadPolicy::Eventual)
        })
    );
    assert_eq!(
        call(&post("/delete", r#"{"key":"k"}"#)),
        Ok(ApiCall::Delete { key: "k".into() })
    );
    assert_eq!(call(&get("/status")), Ok(ApiCall::Status));
}

#[test]
fn pipelined_and_partial_requests() {
    let a = post("/put", r#"{"key":"a","value":"1"}"#);
    let b = get("/get?key=a&consistency=lease");
    let both = format!("{a}{b}");
    let Parsed::Request {
        consumed,
        call,
        keep_alive,
    } = parse(both.as_bytes(), &LIMITS)
    else {
        panic!()
    };
    assert_eq!(consumed, a.len());
    assert!(keep_alive);
    assert!(matches!(call, Ok(HttpCall::Api(ApiCall::Put { .. }))));
    assert!(matches!(
        parse(&both.as_bytes()[consumed..], &LIMITS),
        Parsed::Request {
            call: Ok(HttpCall::Api(ApiCall::Get {
                consistency: Some(ReadPolicy::Lease),
                ..
            })),
            ..
        }
    ));
    for cut in 0..a.len() {
        assert_eq!(
            parse(&a.as_bytes()[..cut], &LIMITS),
            Parsed::Incomplete,
            "cut {cut}"
        );
    }
    let close = "GET /status HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert!(matches!(
        parse(close.as_bytes(), &LIMITS),
        Parsed::Request {
            keep_alive: false,
            ..
        }
    ));
}

#[test]
fn refusals_name_the_problem() {
    let expect = |req: &str, status: u16, code: &str, part: &str| {
        let (s, c, m) = call(req).unwrap_err();
        assert_eq!((s, c), (status, code), "{m}");
        assert!(m.contains(part), "{m:?} lacks {part:?}");
    };
    expect(
        &post("/put", "{not json"),
        400,
        "bad_request",
        "bad JSON body",
    );
    expect(
        &post("/put", r#"{"key":"a"}"#),
        400,
        "bad_request",
        "missing field `value`",
    );
    expect(
        &post("/put", r#"{"key":"a","value":"b","ttl":3}"#),
        400,
        "bad_request",
        "unknown field `ttl`",
    );
    expect(
        &post("/put", r#"{"key":"0123456789abcdefg","value":"b"}"#),
        413,
        "too_large",
        "key_bytes_max",
    );
    expect(
        &post(
            "/put",
            &format!(r#"{{"key":"k","value":"{}"}}"#, "v".repeat(1001)),
        ),
        413,
        "too_large",
        "value_bytes_max",
    );
    expect(
        &post(
            "/put",
            &format!(r#"{{"key":"k","value":"{}"}}"#, "v".repeat(5000)),
        ),
        413,
        "too_large",
        "body of",
    );
    expect(&get("/nope"), 404, "not_found", "no such path");
    expect(&get("/put"), 405, "method_not_allowed", "takes POST");
    expect(
        &get("/get"),
        400,
        "bad_request",
        "missing query parameter key",
    );
    expect(
        &get("/get?key=a&consistency=strong"),
        400,
        "bad_request",
        "not linearizable",
    );
    expect(&get("/get?key=%zz"), 400, "bad_request", "bad %-escape");
    expect(
        "\x16\x03\x01garbage\r\n\r\n",
        400,
        "bad_request",
        "not an HTTP/1.1 request",
    );
    expect(
        "POST /put HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        411,
        "length_required",
        "Content-Length",
    );
    // An endless head is cut off at the limit, not buffered forever.
    let long = format!("GET /status HTTP/1.1\r\nX: {}", "a".repeat(9000));
    assert!(matches!(parse(long.as_bytes(), &LIMITS), Parsed::Fatal(e) if e.status == 431));
}

/// A POST as `curl -X POST URL -d BODY [-H ...]` sends it: form content type.
fn curl_post(path: &str, body: &str, headers: &[&str]) -> String {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost:9081\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n{extra}Content-Length: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n{body}",
        body.len()
    )
}

fn admin(op: AdminOp, token: Option<&str>) -> Result<ApiCall, (u16, &'static str, String)> {
    Ok(ApiCall::Admin {
        op,
        token: token.map(String::from),
    })
}

#[test]
fn admin_routes_parse_into_calls() {
    // The seed's promote, exactly as its curl sends it (form content type, like /put's is
    // not looked at either).
    assert_eq!(
        call(&curl_post("/promote", r#"{"node_id": 4}"#, &[])),
        admin(AdminOp::Promote { node_id: 4 }, None)
    );
    assert_eq!(
        call(&post(
            "/join",
            r#"{"node_id":4,"address":"127.0.0.1:9084"}"#
        )),
        admin(
            AdminOp::Join {
                node_id: 4,
                address: "127.0.0.1:9084".into()
            },
            None
        )
    );
    assert_eq!(
        call(&curl_post(
            "/join",
            r#"{"address": "[::1]:9085", "node_id": 5}"#,
            &[]
        )),
        admin(
            AdminOp::Join {
                node_id: 5,
                address: "[::1]:9085".into()
            },
            None
        )
    );
    assert_eq!(
        call(&post("/remove", r#"{"node_id":2}"#)),
        admin(AdminOp::Remove { node_id: 2 }, None)
    );
    assert_eq!(
        call(&post("/transfer-leader", r#"{"node_id":3}"#)),
        admin(AdminOp::TransferLeader { node_id: 3 }, None)
    );
    // /snapshot: no body, an empty object, or blanks.
    for body in ["", "{}", " { }\n", "\r\n"] {
        assert_eq!(
            call(&curl_post("/snapshot", body, &[])),
            admin(AdminOp::Snapshot, None),
            "{body:?}"
        );
    }
    assert_eq!(
        call("POST /snapshot HTTP/1.1\r\nHost: x\r\n\r\n"),
        admin(AdminOp::Snapshot, None)
    );
}

#[test]
fn admin_tokens_come_from_either_header() {
    let promote = |headers: &[&str]| call(&curl_post("/promote", r#"{"node_id":4}"#, headers));
    let four = |t: Option<&str>| admin(AdminOp::Promote { node_id: 4 }, t);
    assert_eq!(promote(&[]), four(None));
    for h in [
        "X-Ringkv-Token: s3cret",
        "x-ringkv-token: s3cret",
        "X-RINGKV-TOKEN:   s3cret  ",
        "Authorization: Bearer s3cret",
        "authorization: bearer s3cret",
        "AUTHORIZATION: BEARER  s3cret",
    ] {
        assert_eq!(promote(&[h]), four(Some("s3cret")), "{h}");
    }
    // Both headers with the same token are fine.
    assert_eq!(
        promote(&["X-Ringkv-Token: t", "Authorization: Bearer t"]),
        four(Some("t"))
    );
    assert_eq!(
        call(&curl_post("/snapshot", "", &["X-Ringkv-Token: t"])),
        admin(AdminOp::Snapshot, Some("t"))
    );
    let expect = |headers: &[&str], part: &str| {
        let (s, c, m) = promote(headers).unwrap_err();
        assert_eq!((s, c), (400, "bad_request"), "{m}");
        assert!(m.contains(part), "{m:?} lacks {part:?}");
    };
    expect(
        &["X-Ringkv-Token: a", "Authorization: Bearer b"],
        "two different tokens",
    );
    expect(
        &["X-Ringkv-Token: a", "X-Ringkv-Token: b"],
        "two different tokens",
    );
    expect(&["X-Ringkv-Token: "], "X-Ringkv-Token: the token is empty");
    expect(
        &["Authorization: Bearer"],
        "Authorization: the token is empty",
    );
    expect(
        &["Authorization: Bearer   "],
        "Authorization: the token is empty",
    );
    expect(&["Authorization: Basic dTpw"], "is not `Bearer <token>`");
    // Other routes do not look at the token headers.
    assert!(matches!(
        call(&curl_post(
            "/put",
            r#"{"key":"k","value":"v"}"#,
            &["Authorization: Basic dTpw"]
        )),
        Ok(ApiCall::Put { .. })
    ));
}

#[test]
fn admin_refusals_name_the_field() {
    let expect = |req: &str, status: u16, code: &str, part: &str| {
        let (s, c, m) = call(req).unwrap_err();
        assert_eq!((s, c), (status, code), "{m}");
        assert!(m.contains(part), "{m:?} lacks {part:?}");
    };
    for path in [
        "/join",
        "/promote",
        "/remove",
        "/transfer-leader",
        "/snapshot",
    ] {
        expect(&get(path), 405, "method_not_allowed", "takes POST, not GET");
    }
    for path in ["/promote", "/remove", "/transfer-leader"] {
        expect(
            &post(path, "{}"),
            400,
            "bad_request",
            "missing field `node_id`",
        );
        expect(&post(path, ""), 400, "bad_request", "bad JSON body");
        expect(
            &post(path, r#"{"node_id":0}"#),
            400,
            "bad_request",
            "node_id: 0 is reserved",
        );
        expect(
            &post(path, r#"{"node_id":"4"}"#),
            400,
            "bad_request",
            "bad JSON body: node_id: invalid type: string \"4\", expected u64",
        );
        expect(
            &post(path, r#"{"node_id":-1}"#),
            400,
            "bad_request",
            "node_id: invalid value",
        );
        expect(
            &post(path, r#"{"node_id":4,"id":4}"#),
            400,
            "bad_request",
            "unknown field `id`",
        );
        expect(
            &post(path, r#"{"node_id":4} x"#),
            400,
            "bad_request",
            "trailing characters",
        );
    }
    expect(
        &post("/join", r#"{"node_id":4}"#),
        400,
        "bad_request",
        "missing field `address`",
    );
    expect(
        &post("/join", r#"{"address":"127.0.0.1:9084"}"#),
        400,
        "bad_request",
        "missing field `node_id`",
    );
    expect(
        &post("/join", r#"{"node_id":4,"address":"localhost:9084"}"#),
        400,
        "bad_request",
        "address: \"localhost:9084\" is not an address",
    );
    expect(
        &post("/join", r#"{"node_id":4,"address":"127.0.0.1"}"#),
        400,
        "bad_request",
        "address: \"127.0.0.1\" is not an address",
    );
    expect(
        &post("/join", r#"{"node_id":4,"address":9084}"#),
        400,
        "bad_request",
        "address: invalid type",
    );
    expect(
        &post("/join", r#"{"node_id":0,"address":"127.0.0.1:9084"}"#),
        400,
        "bad_request",
        "node_id: 0 is reserved",
    );
    expect(
        &post("/snapshot", r#"{"node_id":1}"#),
        400,
        "bad_request",
        "unknown field `node_id`",
    );
    expect(
        &post("/snapshot", "now"),
        400,
        "bad_request",
        "bad JSON body",
    );
    // Only an object: serde alone would read an array of the fields in order.
    expect(
        &post("/snapshot", "[]"),
        400,
        "bad_request",
        "expected an object",
    );
    expect(
        &post("/promote", "[4]"),
        400,
        "bad_request",
        "expected an object",
    );
    expect(
        &post("/put", r#"["k","v"]"#),
        400,
        "bad_request",
        "expected an object",
    );
    expect(
        &post("/promote/4", "{}"),
        404,
        "not_found",
        "/transfer-leader",
    );
    // Body limits apply as to every route.
    expect(
        &post(
            "/join",
            &format!(r#"{{"node_id":4,"address":"{}"}}"#, "a".repeat(5000)),
        ),
        413,
        "too_large",
        "body of",
    );
}

#[test]
fn responses_are_complete_http() {
    let r = String::from_utf8(response(200, r#"{"index":7}"#, false)).unwrap();
    assert_eq!(
        r,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"index\":7}"
    );
    let r = String::from_utf8(response(503, "{}", true)).unwrap();
    assert!(
        r.starts_with("HTTP/1.1 503 Service Unavailable\r\n")
            && r.contains("connection: close\r\n")
    );
    // Statuses the admin calls may answer with have their reason phrases.
    for (status, reason) in [
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (409, "Conflict"),
        (501, "Not Implemented"),
    ] {
        let r = String::from_utf8(response(status, "{}", false)).unwrap();
        assert!(
            r.starts_with(&format!("HTTP/1.1 {status} {reason}\r\n")),
            "{r}"
        );
    }
}

#[test]
fn v3_paths_are_etcds_gateway() {
    let GatewayCall::Call { method, body } = gateway(&post("/v3/kv/range", r#"{"key":"YQ=="}"#))
    else {
        panic!()
    };
    assert_eq!(method.grpc, "/etcdserverpb.KV/Range");
    assert_eq!(&body[..], br#"{"key":"YQ=="}"#);
    // The lease routes have a second path under /v3/kv/; the query string is not read.
    for (path, grpc) in [
        ("/v3/kv/lease/revoke", "/etcdserverpb.Lease/LeaseRevoke"),
        (
            "/v3/lease/timetolive?x=1",
            "/etcdserverpb.Lease/LeaseTimeToLive",
        ),
        ("/v3/kv/compaction", "/etcdserverpb.KV/Compact"),
        (
            "/v3/maintenance/transfer-leadership",
            "/etcdserverpb.Maintenance/MoveLeader",
        ),
        ("/v3/lease/keepalive", "/etcdserverpb.Lease/LeaseKeepAlive"),
    ] {
        match gateway(&post(path, "")) {
            GatewayCall::Call { method, .. } => assert_eq!(method.grpc, grpc, "{path}"),
            other => panic!("{path}: {other:?}"),
        }
    }
    // etcd's gateway has no HashKV route, and serves POST only.
    assert_eq!(
        gateway(&post("/v3/maintenance/hashkv", "{}")),
        GatewayCall::NotServed { status: 404 }
    );
    assert_eq!(
        gateway(&get("/v3/kv/range")),
        GatewayCall::NotServed { status: 405 }
    );
    // Over the body limit: refused from the head, as every request.
    let big = format!(r#"{{"key":"{}"}}"#, "A".repeat(LIMITS.body_bytes_max));
    assert_eq!(http_call(&post("/v3/kv/put", &big)).unwrap_err().0, 413);
}
