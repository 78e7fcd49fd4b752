//! `ringkv txn`'s input: etcdctl's interactive txn syntax, read from standard input.
//!
//! Three blocks separated by an empty line: compares, then the ops of the success branch,
//! then those of the failure branch (etcdctl prompts for them in that order):
//!
//! ```text
//! mod("key1") > "0"
//! value("key2") = "some value"
//!
//! put key1 "overwrote-key1"
//! get key2
//!
//! del key3 --prefix
//! ```
//!
//! A compare is `TARGET("KEY") OP "VALUE"` with TARGET one of `value`, `version`,
//! `create`, `mod`, `lease` and OP one of `=`, `!=`, `<`, `>` (etcdctl's set); an op is
//! `put KEY VALUE [--lease=ID] [--prev-kv]`, `get KEY [--prefix|--from-key] [--limit=N]
//! [--rev=N]`, or `del KEY [--prefix|--from-key] [--prev-kv]`. Words may be quoted with
//! double quotes (backslash escapes `\"`, `\\`, `\n`, `\t`). Pure parsing: no I/O.

use ringkv_store::bytes::Bytes;
use ringkv_store::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, prefix_end,
};

/// Parses etcdctl's txn text (see the module doc); errors name the line.
pub fn parse(text: &str) -> Result<TxnRequest, String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut blocks: Vec<Vec<(usize, &str)>> = vec![Vec::new()];
    for (i, l) in lines.iter().enumerate() {
        if l.is_empty() {
            if blocks.len() < 3 {
                blocks.push(Vec::new());
            }
            continue;
        }
        blocks.last_mut().expect("a block").push((i + 1, l));
    }
    blocks.resize(3, Vec::new());
    let mut t = TxnRequest::default();
    for &(n, l) in &blocks[0] {
        t.compare
            .push(compare(l).map_err(|e| format!("line {n}: {e}"))?);
    }
    for (b, branch) in [(1, &mut t.success), (2, &mut t.failure)] {
        for &(n, l) in &blocks[b] {
            branch.push(op(l).map_err(|e| format!("line {n}: {e}"))?);
        }
    }
    Ok(t)
}

/// Splits a line into words, honouring double quotes and their escapes.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err("a quote is not closed".into()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => cur.push('\n'),
                            Some('t') => cur.push('\t'),
                            Some(e @ ('"' | '\\')) => cur.push(e),
                            Some(e) => return Err(format!("unknown escape \\{e}")),
                            None => return Err("a quote is not closed".into()),
                        },
                        Some(x) => cur.push(x),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn compare(line: &str) -> Result<Compare, String> {
    let open = line
        .find('(')
        .ok_or("a compare looks like mod(\"key\") > \"0\"")?;
    let close = line
        .rfind(')')
        .ok_or("a compare's key is not closed with )")?;
    let target = line[..open].trim();
    let key = words(&line[open + 1..close])?;
    let [key] = key.as_slice() else {
        return Err("a compare names one key".into());
    };
    let rest = words(&line[close + 1..])?;
    let [op, value] = rest.as_slice() else {
        return Err("a compare is TARGET(\"KEY\") OP \"VALUE\"".into());
    };
    let result = match op.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        o => return Err(format!("compare operator {o:?} is not one of = != < >")),
    };
    let int = |what: &str| -> Result<i64, String> {
        value
            .parse()
            .map_err(|_| format!("{what} {value:?} is not a number"))
    };
    let target = match target {
        "value" | "val" => CompareTarget::Value(Bytes::from(value.clone().into_bytes())),
        "version" | "ver" => CompareTarget::Version(int("version")?),
        "create" | "c" => CompareTarget::Create(int("create revision")?),
        "mod" | "m" => CompareTarget::Mod(int("mod revision")?),
        "lease" => CompareTarget::Lease(parse_lease(value)?),
        t => {
            return Err(format!(
                "compare target {t:?} is not one of value, version, create, mod, lease"
            ));
        }
    };
    Ok(Compare {
        result,
        target,
        key: Bytes::from(key.clone().into_bytes()),
        range_end: Bytes::new(),
    })
}

/// A lease id as etcdctl takes it (hexadecimal), or decimal, or `0x`-prefixed hex.
pub fn parse_lease(s: &str) -> Result<i64, String> {
    let bad = || format!("lease id {s:?} is neither decimal nor 0x-prefixed hexadecimal");
    match s.strip_prefix("0x") {
        Some(h) => i64::from_str_radix(h, 16).map_err(|_| bad()),
        None => s.parse().map_err(|_| bad()),
    }
}

/// Options after an op's positional words: `--name=value` or `--flag`.
fn options(ws: &[String]) -> Result<Vec<(String, Option<String>)>, String> {
    ws.iter()
        .map(|w| {
            let w = w
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected word {w:?}"))?;
            Ok(match w.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (w.to_string(), None),
            })
        })
        .collect()
}

fn op(line: &str) -> Result<RequestOp, String> {
    let ws = words(line)?;
    let (name, rest) = ws.split_first().ok_or("an empty op")?;
    let key = |rest: &[String]| -> Result<Bytes, String> {
        let k = rest.first().ok_or(format!("{name} needs a key"))?;
        Ok(Bytes::from(k.clone().into_bytes()))
    };
    let num = |k: &str, v: &Option<String>| -> Result<i64, String> {
        v.as_deref()
            .ok_or(format!("--{k} needs a value"))?
            .parse()
            .map_err(|_| format!("--{k} is not a number"))
    };
    match name.as_str() {
        "put" => {
            let [k, v, opts @ ..] = rest else {
                return Err("put is: put KEY VALUE [--lease=ID] [--prev-kv]".into());
            };
            let mut p = PutRequest {
                key: Bytes::from(k.clone().into_bytes()),
                value: Bytes::from(v.clone().into_bytes()),
                ..Default::default()
            };
            for (o, v) in options(opts)? {
                match o.as_str() {
                    "lease" => p.lease = parse_lease(v.as_deref().ok_or("--lease needs an id")?)?,
                    "prev-kv" => p.prev_kv = true,
                    o => return Err(format!("put has no option --{o}")),
                }
            }
            Ok(RequestOp::Put(p))
        }
        "get" => {
            let k = key(rest)?;
            let mut r = RangeRequest {
                key: k.clone(),
                ..Default::default()
            };
            for (o, v) in options(&rest[1..])? {
                match o.as_str() {
                    "prefix" => r.range_end = prefix_end(&k),
                    "from-key" => r.range_end = Bytes::from_static(&[0]),
                    "limit" => r.limit = num("limit", &v)?,
                    "rev" => r.revision = num("rev", &v)?,
                    "keys-only" => r.keys_only = true,
                    "count-only" => r.count_only = true,
                    o => return Err(format!("get has no option --{o}")),
                }
            }
            Ok(RequestOp::Range(r))
        }
        "del" | "delete" => {
            let k = key(rest)?;
            let mut d = DeleteRangeRequest {
                key: k.clone(),
                ..Default::default()
            };
            for (o, _) in options(&rest[1..])? {
                match o.as_str() {
                    "prefix" => d.range_end = prefix_end(&k),
                    "from-key" => d.range_end = Bytes::from_static(&[0]),
                    "prev-kv" => d.prev_kv = true,
                    o => return Err(format!("del has no option --{o}")),
                }
            }
            Ok(RequestOp::DeleteRange(d))
        }
        n => Err(format!("op {n:?} is not one of put, get, del")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn etcdctl_txn_text_parses_into_compares_and_both_branches() {
        let t = parse(
            "mod(\"key1\") > \"0\"\nvalue(\"key2\") = \"a b\"\n\nput key1 \"overwrote\\n\" --prev-kv\nget k --prefix --limit=2\n\ndel key3 --prefix\n",
        )
        .unwrap();
        assert_eq!(t.compare.len(), 2);
        assert_eq!(t.compare[0].target, CompareTarget::Mod(0));
        assert_eq!(t.compare[0].result, CompareResult::Greater);
        assert_eq!(t.compare[1].target, CompareTarget::Value(b("a b")));
        assert_eq!(
            t.success[0],
            RequestOp::Put(PutRequest {
                key: b("key1"),
                value: b("overwrote\n"),
                prev_kv: true,
                ..Default::default()
            })
        );
        assert_eq!(
            t.success[1],
            RequestOp::Range(RangeRequest {
                key: b("k"),
                range_end: b("l"),
                limit: 2,
                ..Default::default()
            })
        );
        assert_eq!(
            t.failure[0],
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b("key3"),
                range_end: b("key4"),
                prev_kv: false,
            })
        );
        // No compares, only a success branch.
        let t = parse("\nput a 1\n").unwrap();
        assert!(t.compare.is_empty() && t.failure.is_empty());
        assert_eq!(t.success.len(), 1);
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        for (text, want) in [
            ("mod(\"k\") >> \"1\"", "line 1: compare operator"),
            ("size(\"k\") = \"1\"", "line 1: compare target"),
            ("version(\"k\") = \"x\"", "line 1: version"),
            ("\nput k", "line 2: put is"),
            ("\n\nfrob k", "line 3: op \"frob\""),
            ("\nget k --wat", "line 2: get has no option --wat"),
            ("\nput \"k v", "line 2: a quote is not closed"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        assert_eq!(parse_lease("0x1f"), Ok(31));
        assert_eq!(parse_lease("42"), Ok(42));
        assert!(parse_lease("zz").is_err());
    }
}
