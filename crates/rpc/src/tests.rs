use super::*;

fn reg() -> Arc<Registry> {
    let r = Registry::new();
    r.register("t.add", "Add two integers.", |p| {
        let (a, b) = (p.int(0, "a")?, p.int(1, "b")?);
        p.no_more(2)?;
        Ok(json!(a + b))
    });
    r.register("t.fail", "Always fails.", |_| {
        Err(RpcError::not_found("no such thing \"x\""))
    });
    r
}

fn answer(r: &Registry, body: &str) -> Value {
    serde_json::from_str(&r.handle(body.as_bytes()).expect("an answer")).unwrap()
}

#[test]
fn single_request_gets_its_result_and_id() {
    let v = answer(
        &reg(),
        r#"{"jsonrpc":"2.0","method":"t.add","params":[2,"3"],"id":7}"#,
    );
    assert_eq!(v, json!({"jsonrpc":"2.0","result":5,"id":7}));
}

#[test]
fn each_kind_of_bad_input_has_its_code_and_names_the_problem() {
    let r = reg();
    let v = answer(&r, "{not json");
    assert_eq!(v["error"]["code"], -32700);
    assert_eq!(v["id"], Value::Null);
    let v = answer(&r, "42");
    assert_eq!(v["error"]["code"], -32600);
    assert!(v["error"]["message"].as_str().unwrap().contains("a number"));
    let v = answer(&r, r#"{"method":"nope","id":1}"#);
    assert_eq!(v["error"]["code"], -32601);
    assert!(v["error"]["message"].as_str().unwrap().contains("nope"));
    let v = answer(&r, r#"{"method":"t.add","params":[1],"id":1}"#);
    assert_eq!(v["error"]["code"], -32602);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("missing parameter 2 (b)"));
    let v = answer(&r, r#"{"method":"t.add","params":[1,"x"],"id":1}"#);
    assert!(v["error"]["message"].as_str().unwrap().contains("\"x\""));
    let v = answer(&r, r#"{"method":"t.add","params":[1,2,3],"id":1}"#);
    assert_eq!(v["error"]["code"], -32602);
    let v = answer(&r, r#"{"method":"t.fail","id":"a"}"#);
    assert_eq!(
        v,
        json!({"jsonrpc":"2.0","error":{"code":404,"message":"no such thing \"x\""},"id":"a"})
    );
    let v = answer(&r, r#"{"jsonrpc":"1.0","method":"t.add","id":1}"#);
    assert_eq!(v["error"]["code"], -32600);
    let v = answer(&r, r#"{"method":"t.add","id":[1]}"#);
    assert_eq!(v["error"]["code"], -32600);
    let v = answer(&r, "[]");
    assert_eq!(v["error"]["code"], -32600);
}

#[test]
fn batches_answer_each_request_and_skip_notifications() {
    let r = reg();
    let v = answer(
        &r,
        r#"[{"method":"t.add","params":[1,1],"id":1},
            {"method":"t.add","params":[5,5]},
            7,
            {"method":"t.fail","id":2}]"#,
    );
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a[0]["result"], 2);
    assert_eq!(a[1]["error"]["code"], -32600);
    assert_eq!(a[2]["error"]["code"], 404);
    assert!(r
        .handle(br#"[{"method":"t.add","params":[1,1]}]"#)
        .is_none());
    assert!(r.handle(br#"{"method":"t.add","params":[1,1]}"#).is_none());
}

#[test]
fn list_methods_and_help_come_from_the_table() {
    let r = reg();
    let v = r.call("system.listMethods", Value::Null).unwrap();
    assert_eq!(
        v,
        json!(["system.listMethods", "system.methodHelp", "t.add", "t.fail"])
    );
    assert_eq!(
        r.call("system.methodHelp", json!(["t.add"])).unwrap(),
        json!("Add two integers.")
    );
    assert_eq!(
        r.call("system.methodHelp", json!(["t.nope"]))
            .unwrap_err()
            .code,
        404
    );
}

#[test]
fn named_params_are_read_in_order() {
    let r = reg();
    assert_eq!(r.call("t.add", json!({"a": 4, "b": 6})).unwrap(), json!(10));
    assert_eq!(r.call("t.add", json!("x")).unwrap_err().code, -32602);
}
