//! What ringmq checks in a WebSocket upgrade request once tungstenite has found it a valid one
//! (GET, HTTP/1.1, `Upgrade: websocket`, version 13, a key): the path, the origin and the MQTT
//! subprotocol, in that order, each refused with its own HTTP status and a one-line body.

use async_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

use super::WsSettings;

/// The subprotocols MQTT clients offer, in the order we prefer them: `mqtt` (MQTT 3.1.1 and
/// 5.0, section 6) and `mqttv3.1` (MQTT 3.1 clients, e.g. older Paho JavaScript).
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The check of one request, as tungstenite's handshake callback.
pub(super) struct Check<'a> {
    settings: &'a WsSettings,
}

impl<'a> Check<'a> {
    pub(super) fn new(settings: &'a WsSettings) -> Check<'a> {
        Check { settings }
    }
}

impl Callback for Check<'_> {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        answer(self.settings, request, response)
    }
}

/// The response to `request`: tungstenite's 101 with the subprotocol chosen, or an HTTP error.
pub(super) fn answer(
    settings: &WsSettings,
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if let Some(path) = &settings.path
        && request.uri().path() != path
    {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("MQTT over WebSocket is served at {path}\n"),
        ));
    }
    if let Some(origin) = request.headers().get("origin")
        && !origin_allowed(&settings.allowed_origins, origin)
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            String::from("this origin may not connect\n"),
        ));
    }
    let Some(chosen) = subprotocol(request) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            String::from(
                "MQTT over WebSocket needs the subprotocol mqtt (Sec-WebSocket-Protocol)\n",
            ),
        ));
    };
    response
        .headers_mut()
        .insert("sec-websocket-protocol", chosen);
    Ok(response)
}

/// Browsers always send `Origin`; other clients may not, and are not checked.
fn origin_allowed(allowed: &[String], origin: &HeaderValue) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    allowed
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(origin))
}

/// The first of our subprotocols the client offers (in any of its `Sec-WebSocket-Protocol`
/// headers), spelled as the client spelled it.
fn subprotocol(request: &Request) -> Option<HeaderValue> {
    let offered: Vec<&str> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    SUBPROTOCOLS.iter().find_map(|ours| {
        offered
            .iter()
            .find(|theirs| theirs.eq_ignore_ascii_case(ours))
            .and_then(|theirs| HeaderValue::from_str(theirs).ok())
    })
}

fn refuse(status: StatusCode, body: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(None);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    headers.insert("connection", HeaderValue::from_static("close"));
    headers.insert("content-length", HeaderValue::from(body.len()));
    *response.body_mut() = Some(body);
    response
}
