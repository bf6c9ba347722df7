//! The wasm API in a real browser: the shared vectors and the error shape,
//! through the exported functions and their JS values, in headless Chromium
//! (`cargo xtask ci` runs this with wasm-bindgen-test-runner and
//! chromedriver; `webdriver.json` holds Chromium's flags).

#![cfg(target_arch = "wasm32")]

use js_sys::{JSON, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const VECTORS: &str = include_str!("../../core/test_data/vectors.json");

fn get(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &key.into()).expect("an object")
}

fn string(value: &JsValue, key: &str) -> String {
    get(value, key).as_string().unwrap_or_default()
}

#[wasm_bindgen_test]
fn shared_vectors_give_their_expected_outcome_in_the_browser() {
    let document = JSON::parse(VECTORS).expect("vectors parse");
    let jwks = JSON::stringify(&get(&document, "jwks"))
        .expect("jwks")
        .as_string()
        .expect("a string");
    let vectors: js_sys::Array = get(&document, "vectors").dyn_into().expect("an array");
    assert!(vectors.length() >= 13);
    for vector in vectors.iter() {
        let name = string(&vector, "name");
        let options = js_sys::Object::new();
        for key in ["issuers", "audiences", "at"] {
            Reflect::set(&options, &key.into(), &get(&vector, key)).expect("set");
        }
        let outcome = ksa_wasm::verify_token(&string(&vector, "token"), &jwks, options.into());
        match (string(&vector, "expect").as_str(), outcome) {
            ("ok", Ok(verified)) => {
                assert_eq!(string(&verified, "kid"), string(&vector, "kid"), "{name}");
                assert_eq!(get(&verified, "valid"), JsValue::TRUE, "{name}");
            }
            (kind, Err(error)) => {
                assert!(error.is_instance_of::<js_sys::Error>(), "{name}: an Error");
                assert_eq!(string(&error, "kind"), kind, "{name}");
            }
            (kind, Ok(_)) => panic!("{name}: expected {kind}, the token verified"),
        }
    }
}

#[wasm_bindgen_test]
fn status_lines_and_tokens_decode_to_plain_objects() {
    let line = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: False, reason: KSASigningKeyRotationProcessedReason, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[1,2]}"#;
    let status = ksa_wasm::decode_status(line).expect("decodes");
    assert_eq!(get(&status, "keyVersion").as_f64(), Some(2.0));
    assert_eq!(get(&status, "status"), JsValue::FALSE);
    let steps = JSON::stringify(&get(&status, "steps")).expect("json");
    assert_eq!(steps.as_string().as_deref(), Some(r#"["Retire"]"#));

    let issuer_line = r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: True, reason: KSAIssuerRotationCompleted, message:{"tokenIssuer":"https://b.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example"]}"#;
    let status = ksa_wasm::decode_status(issuer_line).expect("decodes");
    assert_eq!(string(&status, "issuer"), "https://b.example");
    assert_eq!(get(&status, "status"), JsValue::TRUE);
    let accepted = JSON::stringify(&get(&status, "acceptedIssuers")).expect("json");
    assert_eq!(
        accepted.as_string().as_deref(),
        Some(r#"["https://b.example"]"#)
    );

    let error = ksa_wasm::decode_status("State of nothing").expect_err("refused");
    assert!(error.is_instance_of::<js_sys::Error>());
    assert_eq!(string(&error, "kind"), "bad_status_line");
    assert!(string(&error, "message").contains("State of KSASigningKeyRotation"));

    let document = JSON::parse(VECTORS).expect("vectors parse");
    let vectors: js_sys::Array = get(&document, "vectors").dyn_into().expect("an array");
    let first = vectors.get(0);
    let decoded = ksa_wasm::decode_token(&string(&first, "token")).expect("decodes");
    assert_eq!(get(&decoded, "verified"), JsValue::FALSE);
    assert!(get(&get(&decoded, "header"), "alg").is_string());

    let bad = ksa_wasm::verify_token("x.y.z", "{}", JSON::parse(r#"{"colour":1}"#).expect("json"))
        .expect_err("refused");
    assert_eq!(string(&bad, "kind"), "bad_options");
}
