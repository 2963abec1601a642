//! A method's parameters, read by position (Kamailio's RPC methods take
//! positional parameters; a JSON object is accepted too, its values taken
//! in the sorted order of its keys, since serde_json's map is sorted).

use crate::{code, RpcError};
use serde_json::Value;

/// The parameters of one call, with readers whose errors (−32602) name the
/// parameter and the value that was wrong.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Vec<Value>);

impl Params {
    /// From the request's `params`: an array, an object (its values in
    /// the sorted order of its keys), or absent/null (none). Anything else is −32602.
    pub fn from_value(v: Value) -> Result<Params, RpcError> {
        match v {
            Value::Null => Ok(Params(Vec::new())),
            Value::Array(a) => Ok(Params(a)),
            Value::Object(o) => Ok(Params(o.into_iter().map(|(_, v)| v).collect())),
            other => Err(RpcError::new(
                code::INVALID_PARAMS,
                format!("\"params\" must be an array or an object, got {other}"),
            )),
        }
    }

    /// From a list of values.
    pub fn new(values: Vec<Value>) -> Params {
        Params(values)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// All of them.
    pub fn all(&self) -> &[Value] {
        &self.0
    }

    /// The raw value at `i`, if given.
    pub fn get(&self, i: usize) -> Option<&Value> {
        self.0.get(i)
    }

    /// A required string at `i`.
    pub fn str(&self, i: usize, what: &str) -> Result<&str, RpcError> {
        match self.0.get(i) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(wrong(i, what, "a string", other)),
            None => Err(missing(i, what)),
        }
    }

    /// An optional string at `i`.
    pub fn opt_str(&self, i: usize, what: &str) -> Result<Option<&str>, RpcError> {
        match self.0.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.str(i, what).map(Some),
        }
    }

    /// A required integer at `i`. A string holding an integer is taken too
    /// (`evapi ctl 's:5'` and Kamailio's own clients send such strings).
    pub fn int(&self, i: usize, what: &str) -> Result<i64, RpcError> {
        match self.0.get(i) {
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "parameter {} ({what}) must be an integer, got {n}",
                    i + 1
                ))
            }),
            Some(Value::String(s)) => s.trim().parse().map_err(|_| {
                RpcError::invalid_params(format!(
                    "parameter {} ({what}) must be an integer, got {s:?}",
                    i + 1
                ))
            }),
            Some(other) => Err(wrong(i, what, "an integer", other)),
            None => Err(missing(i, what)),
        }
    }

    /// An optional integer at `i`.
    pub fn opt_int(&self, i: usize, what: &str) -> Result<Option<i64>, RpcError> {
        match self.0.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.int(i, what).map(Some),
        }
    }

    /// Fail (−32602) when more than `n` parameters were given.
    pub fn no_more(&self, n: usize) -> Result<(), RpcError> {
        if self.0.len() > n {
            return Err(RpcError::invalid_params(format!(
                "too many parameters: at most {n}, got {}",
                self.0.len()
            )));
        }
        Ok(())
    }
}

fn missing(i: usize, what: &str) -> RpcError {
    RpcError::invalid_params(format!("missing parameter {} ({what})", i + 1))
}

fn wrong(i: usize, what: &str, expected: &str, got: &Value) -> RpcError {
    RpcError::invalid_params(format!(
        "parameter {} ({what}) must be {expected}, got {got}",
        i + 1
    ))
}
