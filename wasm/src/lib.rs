//! `ksa-wasm`: `ksa-core` for browsers, through wasm-bindgen.
//!
//! Exports `decodeStatus(text)`, `decodeToken(jwt)` and
//! `verifyToken(jwt, jwksJson, options)`, returning plain JS objects. Every
//! error becomes a JS `Error` with a `kind` field, in [`to_js`] alone.
//! Nothing signs in the browser: only the pure-Rust verifier is built in.
//!
//! The logic lives in [`api`] and is tested natively with the shared vectors;
//! the in-browser tests, the inspector page and the `cargo xtask wasm` build
//! are still to come (issue #7).

pub mod api;

use wasm_bindgen::prelude::*;

/// The one conversion of results to JS values and errors.
fn to_js(result: Result<serde_json::Value, api::ApiError>) -> Result<JsValue, JsValue> {
    match result {
        Ok(value) => {
            let serializer = serde_wasm_bindgen::Serializer::json_compatible();
            serde::Serialize::serialize(&value, &serializer)
                .map_err(|e| JsValue::from(e.to_string()))
        }
        Err(error) => {
            let js = js_sys::Error::new(&error.message);
            // Setting a field on a fresh Error object cannot fail.
            let _ = js_sys::Reflect::set(&js, &"kind".into(), &error.kind.into());
            Err(js.into())
        }
    }
}

#[wasm_bindgen(js_name = decodeStatus)]
pub fn decode_status(text: &str) -> Result<JsValue, JsValue> {
    to_js(api::decode_status(text))
}

#[wasm_bindgen(js_name = decodeToken)]
pub fn decode_token(jwt: &str) -> Result<JsValue, JsValue> {
    to_js(api::decode_token(jwt))
}

/// `options`: `{ issuers?: string[], audiences?: string[], at?: number }`
/// (`at` in seconds since the epoch; default now).
#[wasm_bindgen(js_name = verifyToken)]
pub fn verify_token(jwt: &str, jwks_json: &str, options: JsValue) -> Result<JsValue, JsValue> {
    let options = if options.is_undefined() || options.is_null() {
        Ok(api::VerifyOptions::default())
    } else {
        serde_wasm_bindgen::from_value(options).map_err(|e| api::ApiError {
            kind: "bad_options",
            message: format!("bad options: {e}; expected {{issuers?, audiences?, at?}}"),
        })
    };
    let now = (js_sys::Date::now() / 1000.0) as i64;
    to_js(options.and_then(|options| api::verify_token(jwt, jwks_json, options, now)))
}
