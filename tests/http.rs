//! The curl API's parser and router: the seed's requests, pipelining, partial reads, and
//! every refusal (malformed, missing field, oversized, unknown path, wrong method).

use ringkv::net::http::{ApiCall, HttpLimits, Parsed, parse, response};
use ringkv::raft::ReadPolicy;

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

fn call(req: &str) -> Result<ApiCall, (u16, &'static str, String)> {
    match parse(req.as_bytes(), &LIMITS) {
        Parsed::Request { consumed, call, .. } => {
            assert_eq!(consumed, req.len());
            call.map_err(|e| (e.status, e.code, e.message))
        }
        Parsed::Fatal(e) => Err((e.status, e.code, e.message)),
        Parsed::Incomplete => panic!("incomplete: {req}"),
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
    assert!(matches!(call, Ok(ApiCall::Put { .. })));
    assert!(matches!(
        parse(&both.as_bytes()[consumed..], &LIMITS),
        Parsed::Request {
            call: Ok(ApiCall::Get {
                consistency: Some(ReadPolicy::Lease),
                ..
            }),
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
}
