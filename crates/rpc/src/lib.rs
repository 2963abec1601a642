//! The admin RPC registry: one table of named methods, reached three ways
//! (`POST /RPC` on the HTTP listener, `evapi ctl`, and `KSR.jsonrpcs.exec`
//! from a script), all through [`Registry::handle`], which speaks
//! JSON-RPC 2.0 (single requests and batches).
//!
//! A method is one function registered in one place: each crate that owns
//! some state has an `rpc.rs` with a `register` function that adds its
//! methods (`tm.*` in `sip`, `evapi.*` in `evapi`, `htable.*` in `script`),
//! and the binary calls those at start. Methods use Kamailio's names,
//! parameters and result shapes where Kamailio has the command.
//!
//! Methods run on the caller's thread and must not wait on a socket: the
//! HTTP listener calls them off its I/O threads, a script calls them from
//! its route. This crate depends on nothing of ours.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

mod params;
pub use params::Params;

/// The standard JSON-RPC 2.0 error codes, and the one Kamailio uses for a
/// method that failed.
pub mod code {
    /// The body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a request object (or a batch of them).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No method by that name.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The parameters are missing, extra, or of the wrong type.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The method itself failed (Kamailio answers such failures with
    /// HTTP-like codes: 500, 404 for "not found"...; see [`crate::RpcError::new`]).
    pub const INTERNAL_ERROR: i64 = -32603;
}

/// Why a call failed: a code and a message that names the bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// JSON-RPC error code ([`code`]) or, for a method's own failure, a
    /// Kamailio-style code such as 404 or 500.
    pub code: i64,
    /// What went wrong, naming the value.
    pub message: String,
}

impl RpcError {
    /// A failure with its code.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
    /// Bad parameters (−32602).
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, message)
    }
    /// Something named does not exist (404, as Kamailio's methods answer).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    /// The method could not do its work (500).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// What a method returns.
pub type RpcResult = Result<Value, RpcError>;

type Handler = Arc<dyn Fn(&Params) -> RpcResult + Send + Sync>;

struct Method {
    help: &'static str,
    handler: Handler,
}

/// The table of methods. Shared (`Arc`) between the HTTP listener, the
/// script engine and the parts that register methods; registering after
/// start is allowed (a part built later adds its own).
#[derive(Default)]
pub struct Registry {
    methods: RwLock<BTreeMap<String, Method>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("methods", &self.names())
            .finish()
    }
}

impl Registry {
    /// An empty registry, with `system.listMethods` and
    /// `system.methodHelp` (which answer from the table itself).
    pub fn new() -> Arc<Registry> {
        let registry = Arc::new(Registry::default());
        let weak = Arc::downgrade(&registry);
        registry.register(
            "system.listMethods",
            "The names of all methods.",
            move |p| {
                p.no_more(0)?;
                let names = weak.upgrade().map(|r| r.names()).unwrap_or_default();
                Ok(json!(names))
            },
        );
        let weak = Arc::downgrade(&registry);
        registry.register(
            "system.methodHelp",
            "The help text of one method: system.methodHelp NAME.",
            move |p| {
                let name = p.str(0, "method name")?;
                p.no_more(1)?;
                let r = weak
                    .upgrade()
                    .ok_or_else(|| RpcError::failed("shutting down"))?;
                r.help(name)
                    .map(|h| json!(h))
                    .ok_or_else(|| RpcError::not_found(format!("no method {name:?}")))
            },
        );
        registry
    }

    /// Add (or replace) a method. `help` is one or two sentences: what it
    /// does and its parameters.
    pub fn register<F>(&self, name: &str, help: &'static str, handler: F)
    where
        F: Fn(&Params) -> RpcResult + Send + Sync + 'static,
    {
        self.methods
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                name.to_string(),
                Method {
                    help,
                    handler: Arc::new(handler),
                },
            );
    }

    /// The method names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.methods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// A method's help text.
    pub fn help(&self, name: &str) -> Option<&'static str> {
        self.methods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|m| m.help)
    }

    /// Call one method with its parameters (a JSON array, an object, or
    /// nothing).
    pub fn call(&self, method: &str, params: Value) -> RpcResult {
        let handler = self
            .methods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(method)
            .map(|m| m.handler.clone())
            .ok_or_else(|| {
                RpcError::new(
                    code::METHOD_NOT_FOUND,
                    format!("method not found: {method:?}"),
                )
            })?;
        let params = Params::from_value(params)?;
        // The lock is not held while the method runs: a method may call
        // back into the registry (system.listMethods does).
        handler(&params)
    }

    /// Answer a JSON-RPC 2.0 body: a request or a batch. `None` when there
    /// is nothing to answer (only notifications); otherwise the response
    /// text. Malformed JSON gives −32700, a value that is not a request
    /// −32600, an empty batch −32600.
    pub fn handle(&self, body: &[u8]) -> Option<String> {
        let parsed: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Some(
                    error_response(
                        Value::Null,
                        &RpcError::new(code::PARSE_ERROR, format!("parse error: {e}")),
                    )
                    .to_string(),
                )
            }
        };
        match parsed {
            Value::Array(batch) if batch.is_empty() => Some(
                error_response(
                    Value::Null,
                    &RpcError::new(code::INVALID_REQUEST, "invalid request: empty batch"),
                )
                .to_string(),
            ),
            Value::Array(batch) => {
                let answers: Vec<Value> = batch
                    .into_iter()
                    .filter_map(|one| self.handle_one(one))
                    .collect();
                (!answers.is_empty()).then(|| Value::Array(answers).to_string())
            }
            one => self.handle_one(one).map(|v| v.to_string()),
        }
    }

    /// One request object: its response, or `None` for a notification.
    fn handle_one(&self, request: Value) -> Option<Value> {
        let Value::Object(mut obj) = request else {
            return Some(error_response(
                Value::Null,
                &RpcError::new(
                    code::INVALID_REQUEST,
                    format!(
                        "invalid request: expected an object, got {}",
                        kind(&request)
                    ),
                ),
            ));
        };
        // An id that is not a string, number or null is itself invalid;
        // answer with null as the spec says.
        let id = obj.remove("id");
        let id_ok = matches!(
            id,
            None | Some(Value::Null | Value::String(_) | Value::Number(_))
        );
        let reply_id = if id_ok {
            id.clone().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let invalid = |why: String| {
            Some(error_response(
                reply_id.clone(),
                &RpcError::new(code::INVALID_REQUEST, format!("invalid request: {why}")),
            ))
        };
        if !id_ok {
            return invalid("\"id\" must be a string, a number or null".into());
        }
        // Kamailio accepts requests without "jsonrpc"; we do too, but a
        // wrong version is refused.
        match obj.get("jsonrpc") {
            None => {}
            Some(Value::String(v)) if v == "2.0" => {}
            Some(other) => return invalid(format!("\"jsonrpc\" must be \"2.0\", got {other}")),
        }
        let method = match obj.remove("method") {
            Some(Value::String(m)) => m,
            Some(other) => return invalid(format!("\"method\" must be a string, got {other}")),
            None => return invalid("no \"method\"".into()),
        };
        let params = obj.remove("params").unwrap_or(Value::Null);
        let result = self.call(&method, params);
        // A request without an id is a notification: run, answer nothing.
        let id = id?;
        Some(match result {
            Ok(value) => json!({"jsonrpc": "2.0", "result": value, "id": id}),
            Err(e) => error_response(id, &e),
        })
    }
}

fn error_response(id: Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "error": {"code": e.code, "message": e.message}, "id": id})
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Build a JSON object from pairs (for results shaped as Kamailio's).
pub fn object<I, K>(pairs: I) -> Value
where
    I: IntoIterator<Item = (K, Value)>,
    K: Into<String>,
{
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v))
            .collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
mod tests;
