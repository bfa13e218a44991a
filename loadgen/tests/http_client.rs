//! The VU's HTTP/1.1 client against a raw TCP server that answers exactly
//! the bytes each test scripts: body framings, connection reuse, a server
//! closing an idle kept-alive connection, and the bytes counted.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use loadgen::http::{BaseUrl, Client, FailureKind};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod common;
use common::read_request;

/// A server answering the n-th request of each connection with
/// `answers[connection][n]`, then closing that connection. Reports each
/// request it read, with the index of its connection.
async fn scripted(
    answers: Vec<Vec<&'static [u8]>>,
) -> (Arc<BaseUrl>, mpsc::UnboundedReceiver<(usize, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = BaseUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for (index, script) in answers.into_iter().enumerate() {
            let (mut stream, _) = listener.accept().await.unwrap();
            for answer in script {
                let Some(request) = read_request(&mut stream).await else {
                    break;
                };
                let _ = tx.send((index, request));
                stream.write_all(answer).await.unwrap();
            }
        }
    });
    (Arc::new(base), rx)
}

async fn post(client: &mut Client, body: &str) -> loadgen::http::Response {
    client
        .send(
            Method::POST,
            "/api/x",
            Some(body.as_bytes()),
            &[("Cookie", "token=t")],
            Duration::from_secs(5),
        )
        .await
}

#[tokio::test]
async fn framings_reuse_and_exact_byte_counts() {
    const LENGTH: &[u8] =
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nSet-Cookie: a=1; Path=/\r\n\r\n{}";
    const CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
    const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx";
    const UNTIL_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nto the end";
    let (base, mut requests) =
        scripted(vec![vec![LENGTH, CHUNKED, CLOSE], vec![UNTIL_CLOSE]]).await;
    let mut client = Client::new(base, false);

    let r = post(&mut client, "{\"p\":1}").await;
    assert_eq!((r.status, &r.body[..], r.failure), (202, &b"{}"[..], None));
    assert_eq!(r.header_values("set-cookie"), vec!["a=1; Path=/"]);
    assert_eq!(r.bytes_received, LENGTH.len() as u64);
    let (connection, request) = requests.recv().await.unwrap();
    assert_eq!(connection, 0);
    assert_eq!(r.bytes_sent, request.len() as u64);
    let text = String::from_utf8(request).unwrap();
    assert!(text.starts_with("POST /api/x HTTP/1.1\r\n"), "{text}");
    assert!(
        text.contains("\r\nContent-Length: 7\r\n") && text.ends_with("\r\n\r\n{\"p\":1}"),
        "{text}"
    );

    let r = post(&mut client, "{}").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"{\"a\":1}"[..]));
    assert_eq!(r.bytes_received, CHUNKED.len() as u64);
    assert_eq!(requests.recv().await.unwrap().0, 0, "kept alive");
    assert_eq!(r.timings.connecting, Duration::ZERO, "no new connection");

    let r = post(&mut client, "{}").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"x"[..]));
    assert_eq!(requests.recv().await.unwrap().0, 0);

    // `Connection: close` made the client drop the connection: a new one.
    let r = post(&mut client, "{}").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"to the end"[..]));
    assert_eq!(requests.recv().await.unwrap().0, 1);
}

#[tokio::test]
async fn a_kept_alive_connection_closed_while_idle_is_replaced_once() {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // The first connection serves one request, then the server closes it
    // (the script ends) while the client thinks it is kept alive.
    let (base, mut requests) = scripted(vec![vec![OK], vec![OK]]).await;
    let mut client = Client::new(base, false);
    assert_eq!(post(&mut client, "{}").await.status, 200);
    assert_eq!(requests.recv().await.unwrap().0, 0);
    let r = post(&mut client, "{}").await;
    assert_eq!((r.status, r.failure), (200, None));
    assert_eq!(
        requests.recv().await.unwrap().0,
        1,
        "resent on a new connection"
    );
}

#[tokio::test]
async fn a_fresh_connection_that_closes_is_a_failure_not_a_retry() {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = BaseUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    // Every request's first line, with its connection's index. The first
    // connection is closed after its request, unanswered.
    let (tx, mut requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut index = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            let request = read_request(&mut stream).await.unwrap_or_default();
            let line = String::from_utf8_lossy(&request)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let _ = tx.send((index, line));
            if index > 0 {
                let _ = stream.write_all(OK).await;
            }
            index += 1;
        }
    });
    let mut client = Client::new(Arc::new(base), false);
    let r = post(&mut client, "{}").await;
    assert_eq!(
        (r.status, r.failure),
        (0, Some(FailureKind::ConnectionReset))
    );
    // The next request proves the client moved on: a resent POST would
    // reach the server before it.
    let r = client
        .send(Method::GET, "/marker", None, &[], Duration::from_secs(5))
        .await;
    assert_eq!(r.status, 200);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let next = tokio::time::timeout(Duration::from_secs(10), requests.recv())
            .await
            .expect("the server reports each request");
        seen.push(next.expect("the server runs"));
    }
    assert_eq!(
        seen,
        vec![
            (0, "POST /api/x HTTP/1.1".to_string()),
            (1, "GET /marker HTTP/1.1".to_string()),
        ],
        "a POST is not resent on a fresh connection"
    );
}

#[tokio::test]
async fn malformed_answers_and_header_injection_fail_the_request() {
    let (base, _requests) = scripted(vec![vec![b"NOT HTTP\r\n\r\n"]]).await;
    let mut client = Client::new(base.clone(), false);
    let r = post(&mut client, "{}").await;
    assert_eq!((r.status, r.failure), (0, Some(FailureKind::Other)));
    let r = client
        .send(
            Method::GET,
            "/",
            None,
            &[("Cookie", "token=a\r\nX-Injected: 1")],
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(
        (r.status, r.failure, r.bytes_sent),
        (0, Some(FailureKind::Other), 0)
    );
}
