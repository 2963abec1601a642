//! `evapi ctl`: call one admin RPC method on a running server, the way
//! `kamcmd` does for Kamailio.

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;

/// Largest answer read, in bytes.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Options of `evapi ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The method, e.g. core.uptime; `system.listMethods` lists them all.
    method: String,
    /// Its parameters, in order. A value written as a JSON number (5, -2,
    /// 1.5, 1e3) is sent as a number, anything else as a string; `s:` in
    /// front sends the rest as a string (s:5). Put a string that starts
    /// with '-' after `--`.
    #[arg(allow_negative_numbers = true)]
    params: Vec<String>,
    /// Print the result as JSON on one line, for scripts (default: readable
    /// text, like kamcmd).
    #[arg(long)]
    json: bool,
    /// The server's RPC address ([http] listen, path /RPC); plain http://.
    #[arg(
        long,
        value_name = "URL",
        env = "EVAPI_URL",
        default_value = "http://127.0.0.1:9060/RPC"
    )]
    url: String,
    /// The server's [http] token, sent as `Authorization: Bearer` (also
    /// read from the environment variable EVAPI_HTTP_TOKEN, which keeps it
    /// out of the process list).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "EVAPI_HTTP_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
}

/// Call the method and print its result; an RPC error is the error.
pub fn ctl(args: CtlArgs) -> anyhow::Result<()> {
    let params: Vec<Value> = args.params.iter().map(|p| param(p)).collect();
    let request = json!({"jsonrpc": "2.0", "method": args.method, "params": params, "id": 1});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    let (status, body) = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(args.timeout),
            post(&args.url, args.token.as_deref(), request.to_string()),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "no answer from {} within {} s (--timeout)",
                args.url,
                args.timeout
            )
        })?
    })?;
    let result = answer(&args.url, &args.method, status, &body)?;
    if args.json {
        println!("{result}");
    } else {
        print!("{}", pretty(&result));
    }
    Ok(())
}

/// One command-line parameter as a JSON value: a JSON number is a number,
/// `s:` forces a string, anything else is a string.
fn param(text: &str) -> Value {
    if let Some(s) = text.strip_prefix("s:") {
        return Value::String(s.to_string());
    }
    match serde_json::from_str::<serde_json::Number>(text) {
        Ok(n) => Value::Number(n),
        Err(_) => Value::String(text.to_string()),
    }
}

/// POST `body` to `url`; the status and the answer's bytes.
async fn post(url: &str, token: Option<&str>, body: String) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("--url {url:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!(
            "--url {url:?}: {other}:// is not supported: the admin listener speaks plain http://"
        ),
        None => bail!("--url {url:?}: write it whole, e.g. http://127.0.0.1:9060/RPC"),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("--url {url:?} has no host"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let path = match uri.path() {
        "" | "/" => "/RPC",
        p => p,
    };
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| {
            format!(
                "cannot connect to {url}: is evapi running? (its [http] listen address, \
                 or --url / EVAPI_URL for another one)"
            )
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("cannot talk HTTP to {url}"))?;
    tokio::spawn(conn);
    let mut req = Request::post(path)
        .header(HOST, authority.as_str())
        .header(CONTENT_TYPE, "application/json");
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .context("cannot build the request (is the token printable ASCII?)")?;
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("no answer from {url}"))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| anyhow!("cannot read the answer from {url}: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// The result of a JSON-RPC answer, or an error that says what went wrong.
fn answer(url: &str, method: &str, status: StatusCode, body: &[u8]) -> anyhow::Result<Value> {
    let text = String::from_utf8_lossy(body);
    match status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => bail!(
            "{url} needs its [http] token: give it with --token or EVAPI_HTTP_TOKEN \
             (the server said: {})",
            text.trim()
        ),
        other => bail!("{url} answered {other}: {}", text.trim()),
    }
    let v: Value = serde_json::from_slice(body)
        .with_context(|| format!("{url} answered something that is not JSON: {text}"))?;
    if let Some(e) = v.get("error") {
        let code = e.get("code").cloned().unwrap_or(Value::Null);
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        bail!("{method}: error {code}: {message}");
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| anyhow!("{url} answered JSON without a result or an error: {text}"))
}

/// A result as kamcmd shows one: a list one item a line, an object as
/// `{` then `key: value` lines indented by a tab per level, then `}`;
/// strings without quotes. Null shows nothing.
fn pretty(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                write_value(&mut out, item, 0);
                out.push('\n');
            }
        }
        other => {
            write_value(&mut out, other, 0);
            out.push('\n');
        }
    }
    out
}

fn write_value(out: &mut String, v: &Value, depth: usize) {
    let pad = |out: &mut String, d: usize| out.extend(std::iter::repeat_n('\t', d));
    match v {
        Value::String(s) => out.push_str(s),
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push_str("{\n");
            for (k, item) in map {
                pad(out, depth + 1);
                let _ = write!(out, "{k}: ");
                write_value(out, item, depth + 1);
                out.push('\n');
            }
            pad(out, depth);
            out.push('}');
        }
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push_str("[\n");
            for item in items {
                pad(out, depth + 1);
                write_value(out, item, depth + 1);
                out.push('\n');
            }
            pad(out, depth);
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_as_kamcmd_sends_them() {
        assert_eq!(param("5"), json!(5));
        assert_eq!(param("-5"), json!(-5));
        assert_eq!(param("1.5"), json!(1.5));
        assert_eq!(param("1e3"), json!(1000.0));
        assert_eq!(param("s:5"), json!("5"));
        assert_eq!(param("s:"), json!(""));
        assert_eq!(param("abc"), json!("abc"));
        assert_eq!(param("0x10"), json!("0x10"));
        assert_eq!(param("1.2.3.4"), json!("1.2.3.4"));
        assert_eq!(param("tm:"), json!("tm:"));
        assert_eq!(param("true"), json!("true"));
        assert_eq!(param(""), json!(""));
    }

    #[test]
    fn readable_output() {
        assert_eq!(pretty(&json!("kamailio 5.6.3")), "kamailio 5.6.3\n");
        assert_eq!(pretty(&json!(["a", 2])), "a\n2\n");
        assert_eq!(pretty(&Value::Null), "");
        assert_eq!(
            pretty(&json!({"now": "Tue", "uptime": 4, "sock": {"proto": "udp", "ports": [1, 2]}, "e": [], "o": {}})),
            "{\n\te: []\n\tnow: Tue\n\to: {}\n\tsock: {\n\t\tports: [\n\t\t\t1\n\t\t\t2\n\t\t]\n\t\tproto: udp\n\t}\n\tuptime: 4\n}\n"
        );
        assert_eq!(
            pretty(&json!([{"IDX": 0}, {"IDX": 1}])),
            "{\n\tIDX: 0\n}\n{\n\tIDX: 1\n}\n"
        );
    }

    #[test]
    fn answers() {
        let url = "http://x/RPC";
        let ok = answer(
            url,
            "m",
            StatusCode::OK,
            br#"{"jsonrpc":"2.0","result":[1],"id":1}"#,
        );
        assert_eq!(ok.unwrap(), json!([1]));
        let e = answer(
            url,
            "core.nosuch",
            StatusCode::OK,
            br#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"method not found: \"core.nosuch\""},"id":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "core.nosuch: error -32601: method not found: \"core.nosuch\""
        );
        let e = answer(url, "m", StatusCode::UNAUTHORIZED, b"401 no")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--token or EVAPI_HTTP_TOKEN"), "{e}");
        let e = answer(url, "m", StatusCode::PAYLOAD_TOO_LARGE, b"big")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "http://x/RPC answered 413 Payload Too Large: big");
    }
}
