//! `--jwks URL` against hostile servers on 127.0.0.1: a server that never
//! answers, one that redirects elsewhere, one that sends too much. Each is
//! refused with the could-not-check exit code (4), within the timeout.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{ksa, run};

const DEADLINE: Duration = Duration::from_secs(60);
const CANNOT_CHECK: Option<i32> = Some(4);

fn vectors() -> serde_json::Value {
    let path = format!(
        "{}/../core/test_data/vectors.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json")
}

fn valid_token() -> String {
    vectors()["vectors"][0]["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

fn jwks() -> String {
    vectors()["jwks"].to_string()
}

/// A server answering each request with `respond(path)`; counts requests.
struct Server {
    port: u16,
    requests: Arc<AtomicUsize>,
}

fn serve(respond: impl Fn(&str) -> Option<String> + Send + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            answer(stream, &respond);
        }
    });
    Server { port, requests }
}

fn answer(stream: TcpStream, respond: &impl Fn(&str) -> Option<String>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request_line = String::new();
    let _ = reader.read_line(&mut request_line);
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    match respond(&path) {
        Some(response) => {
            let mut stream = stream;
            let _ = stream.write_all(response.as_bytes());
        }
        // Never answer: hold the connection open for the rest of the test.
        None => std::thread::sleep(Duration::from_secs(600)),
    }
}

fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn redirect(location: &str) -> String {
    format!(
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

fn verify(url: &str) -> common::Run {
    let token = valid_token();
    let mut command = ksa(&[
        "token",
        "verify",
        &token,
        "--jwks",
        url,
        "--at",
        "1800000000",
    ]);
    // Shorter than the default 30 s, for the test only.
    command.env("KSA_HTTP_TIMEOUT_SECONDS", "3");
    run(&mut command, DEADLINE)
}

#[test]
fn a_server_that_never_answers_times_out() {
    let server = serve(|_| None);
    let out = verify(&format!("http://127.0.0.1:{}/jwks", server.port));
    assert_eq!(out.code, CANNOT_CHECK, "{out:?}");
    assert!(out.took < Duration::from_secs(20), "{out:?}");
    assert!(out.stderr.contains("could not fetch the JWKS"), "{out:?}");
}

#[test]
fn a_redirect_to_another_port_is_refused() {
    let elsewhere = serve(|_| Some(ok(&jwks())));
    let target = format!("http://127.0.0.1:{}/jwks", elsewhere.port);
    let server = serve(move |_| Some(redirect(&target)));
    let out = verify(&format!("http://127.0.0.1:{}/jwks", server.port));
    assert_eq!(out.code, CANNOT_CHECK, "{out:?}");
    assert!(out.stderr.contains("another origin"), "{out:?}");
    assert_eq!(elsewhere.requests.load(Ordering::SeqCst), 0, "not followed");
}

#[test]
fn a_redirect_to_another_host_is_refused() {
    let server = serve(|_| Some(redirect("http://localhost.invalid/jwks")));
    let out = verify(&format!("http://127.0.0.1:{}/jwks", server.port));
    assert_eq!(out.code, CANNOT_CHECK, "{out:?}");
    assert!(out.stderr.contains("another origin"), "{out:?}");
}

#[test]
fn a_redirect_within_the_origin_is_followed() {
    let jwks = jwks();
    let server = serve(move |path| {
        Some(match path {
            "/old" => redirect("/openid/v1/jwks"),
            _ => ok(&jwks),
        })
    });
    let out = verify(&format!("http://127.0.0.1:{}/old", server.port));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}

#[test]
fn endless_redirects_stop() {
    let server = serve(|_| Some(redirect("/again")));
    let out = verify(&format!("http://127.0.0.1:{}/jwks", server.port));
    assert_eq!(out.code, CANNOT_CHECK, "{out:?}");
    assert!(out.stderr.contains("redirects"), "{out:?}");
}

#[test]
fn an_oversize_body_is_refused() {
    let huge = format!(r#"{{"keys":[],"pad":"{}"}}"#, "a".repeat(2 * 1024 * 1024));
    let server = serve(move |_| Some(ok(&huge)));
    let out = verify(&format!("http://127.0.0.1:{}/jwks", server.port));
    assert_eq!(out.code, CANNOT_CHECK, "{out:?}");
    assert!(out.stderr.contains("1048576"), "{out:?}");
}

#[test]
fn an_unreachable_url_is_not_an_invalid_token() {
    // Bind then drop: nothing listens on the port.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let out = verify(&format!("http://127.0.0.1:{port}/jwks"));
    assert_eq!(out.code, CANNOT_CHECK, "{out:?}");
}
