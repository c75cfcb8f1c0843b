use std::time::Duration;

use async_tungstenite::tungstenite::handshake::server::{Request, Response};

use super::WsSettings;
use super::handshake::answer;

fn settings(path: Option<&str>, origins: &[&str]) -> WsSettings {
    WsSettings {
        path: path.map(str::to_owned),
        allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        frame_bytes_max: 1024,
        message_bytes_max: 1024,
        handshake_bytes_max: 4096,
        handshake_timeout: Duration::from_secs(1),
    }
}

/// The status the request to `uri` with `headers` gets, and the subprotocol echoed.
fn check(settings: &WsSettings, uri: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let mut request = Request::builder().uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(()).unwrap();
    let response = Response::builder().status(101).body(()).unwrap();
    match answer(settings, &request, response) {
        Ok(response) => (
            response.status().as_u16(),
            response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned()),
        ),
        Err(refusal) => {
            let body = refusal.body().clone().unwrap();
            let length = refusal.headers()["content-length"].to_str().unwrap();
            assert_eq!(length, body.len().to_string());
            (refusal.status().as_u16(), None)
        }
    }
}

#[test]
fn subprotocols() {
    let any = settings(None, &[]);
    let echoed = |offer: &str| check(&any, "/", &[("sec-websocket-protocol", offer)]);
    assert_eq!(echoed("mqtt"), (101, Some("mqtt".into())));
    assert_eq!(echoed("mqttv3.1"), (101, Some("mqttv3.1".into())));
    assert_eq!(echoed("mqttv3.1, mqtt"), (101, Some("mqtt".into())));
    assert_eq!(echoed("MQTT"), (101, Some("MQTT".into())));
    assert_eq!(echoed("wamp, chat"), (400, None));
    assert_eq!(check(&any, "/", &[]), (400, None));
    let two_headers = [
        ("sec-websocket-protocol", "chat"),
        ("sec-websocket-protocol", "mqtt"),
    ];
    assert_eq!(check(&any, "/", &two_headers), (101, Some("mqtt".into())));
}

#[test]
fn paths_and_origins() {
    let mqtt = ("sec-websocket-protocol", "mqtt");
    let any = settings(None, &[]);
    assert_eq!(check(&any, "/anything?x=1", &[mqtt]).0, 101);
    let strict = settings(Some("/mqtt"), &["https://app.example"]);
    assert_eq!(check(&strict, "/mqtt", &[mqtt]).0, 101);
    assert_eq!(check(&strict, "/mqtt?token=1", &[mqtt]).0, 101);
    assert_eq!(check(&strict, "/mqtt/", &[mqtt]).0, 404);
    assert_eq!(check(&strict, "/", &[mqtt]).0, 404);
    // A wrong path is refused before anything else is looked at.
    assert_eq!(check(&strict, "/", &[]).0, 404);
    let origin = |value| check(&strict, "/mqtt", &[mqtt, ("origin", value)]).0;
    assert_eq!(origin("https://app.example"), 101);
    assert_eq!(origin("HTTPS://APP.EXAMPLE"), 101);
    assert_eq!(origin("https://app.example.evil"), 403);
    assert_eq!(origin("null"), 403);
    // Clients other than browsers send no Origin.
    assert_eq!(check(&strict, "/mqtt", &[mqtt]).0, 101);
}
