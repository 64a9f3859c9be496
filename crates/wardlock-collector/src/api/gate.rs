//! What any client, known or not, can hold of the collector: a request slot (of all
//! clients' and of its own address's), bounded time to send its body, and, until it has
//! shown a credential the collector knows, none of its body kept in memory.
//!
//! A refusal still reaches a client that is still sending: the body is read to its end
//! (kept when the credential is known, thrown away when not) before anything answers.
//! An HTTP/2 client shown a status before its body ends sees a reset stream instead, and
//! the agent's sync client re-enrolls only on a 401 it can read.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::{Caller, Node};
use super::{ApiError, AppState, DRAIN_AT_MOST, MAX_BODY_BYTES};

/// Largest body of a request that shows no credential before its body (enrollment: the
/// secret is in the body).
pub const MAX_UNAUTHENTICATED_BODY: usize = 64 * 1024;

/// What the gate allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests in flight from all clients; more get 503 with `Retry-After`.
    pub requests: usize,
    /// Requests in flight from one address; more get 429 with `Retry-After` (0: no
    /// limit, for a collector behind a proxy that all requests come through).
    pub requests_per_address: usize,
    /// Longest pause while a body is sent; longer gets 408.
    pub body_stall: Duration,
    /// Longest time to send a whole body; longer gets 408.
    pub body_total: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests: 1024,
            requests_per_address: 64,
            body_stall: Duration::from_secs(15),
            body_total: Duration::from_secs(120),
        }
    }
}

/// The slots of the requests in flight.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    slots: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Gate {
    pub fn new(limits: Limits) -> Self {
        Self { slots: Arc::new(Semaphore::new(limits.requests.max(1))), per_address: Arc::default(), limits }
    }

    /// A slot for one request of `address`, or why not.
    fn admit(&self, address: Option<IpAddr>) -> Result<Admitted, Busy> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return Err(Busy::Collector);
        };
        let address = match (address, self.limits.requests_per_address) {
            (Some(address), limit) if limit > 0 => {
                let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
                let count = counts.entry(address).or_default();
                if *count >= limit {
                    return Err(Busy::Address);
                }
                *count += 1;
                Some(address)
            }
            _ => None,
        };
        Ok(Admitted { _slot: slot, address, per_address: self.per_address.clone() })
    }
}

/// A request's slots, given back when it is answered.
#[derive(Debug)]
struct Admitted {
    _slot: OwnedSemaphorePermit,
    address: Option<IpAddr>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(address) = self.address {
            let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = counts.get_mut(&address) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&address);
                }
            }
        }
    }
}

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    /// Every slot of the collector is taken.
    Collector,
    /// Every slot of this address is taken.
    Address,
}

impl IntoResponse for Busy {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Busy::Collector => {
                (StatusCode::SERVICE_UNAVAILABLE, "the collector is at its limit of requests in flight")
            }
            Busy::Address => (
                StatusCode::TOO_MANY_REQUESTS,
                "this address has as many requests in flight as it may; send again shortly",
            ),
        };
        let mut response = ApiError::new(status, message).into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }
}

/// What the request must show before its body is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    /// Nothing before the body (enrollment); only a small body is taken.
    None,
    /// An enrolled workstation's node key.
    NodeKey,
    /// An API token.
    Token,
}

fn credential_of(method: &Method, path: &str) -> Credential {
    match (method, path) {
        (&Method::POST, "/api/v1/enroll" | "/api/v1/console/session") => Credential::None,
        (_, "/api/v1/audit" | "/api/v1/heartbeat" | "/api/v1/policy" | "/api/v1/directory") => {
            Credential::NodeKey
        }
        _ => Credential::Token,
    }
}

/// Every request passes here first.
pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let _admitted = match state.gate.admit(address) {
        Ok(admitted) => admitted,
        Err(busy) => {
            let _ = drain(request.into_body(), &state.gate.limits, 0).await;
            return busy.into_response();
        }
    };
    let (mut parts, body) = request.into_parts();
    if http_body::Body::size_hint(&body).exact() == Some(0) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let credential = credential_of(&parts.method, parts.uri.path());
    // The handler's own extractor, run here once; what it found is left for the handler.
    let shown = match credential {
        Credential::None => Ok(()),
        Credential::NodeKey => Node::from_request_parts(&mut parts, &state).await.map(|n| {
            parts.extensions.insert(n);
        }),
        Credential::Token => Caller::from_request_parts(&mut parts, &state).await.map(|c| {
            parts.extensions.insert(c);
        }),
    };
    let keep = match shown {
        Ok(()) if credential == Credential::None => MAX_UNAUTHENTICATED_BODY,
        Ok(()) => MAX_BODY_BYTES,
        Err(refusal) => {
            // A stranger's body is read and thrown away, so that the 401 reaches it.
            return match drain(body, &state.gate.limits, 0).await {
                Ok(_) | Err(Drained::TooLarge) => refusal.into_response(),
                Err(refused) => refused.into_response(),
            };
        }
    };
    match drain(body, &state.gate.limits, keep).await {
        Ok(kept) => next.run(Request::from_parts(parts, axum::body::Body::from(kept))).await,
        Err(refused) => refused.into_response(),
    }
}

/// Why a body was not taken.
#[derive(Debug)]
enum Drained {
    TooLarge,
    Stalled,
    TooSlow,
    Broken,
}

impl IntoResponse for Drained {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Drained::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large for this request"),
            Drained::Stalled => (StatusCode::REQUEST_TIMEOUT, "the request body stalled; send it again"),
            Drained::TooSlow => {
                (StatusCode::REQUEST_TIMEOUT, "the request body took too long; send it again")
            }
            Drained::Broken => (StatusCode::BAD_REQUEST, "the request body broke off before its end"),
        };
        ApiError::new(status, message).into_response()
    }
}

/// Reads `body` to its end, keeping up to `keep` bytes (a longer body is read on, up to a
/// bound, and thrown away, so that the 413 reaches the client), within the time limits.
async fn drain(body: axum::body::Body, limits: &Limits, keep: usize) -> Result<Vec<u8>, Drained> {
    let read = async {
        let mut body = body;
        let mut kept = Vec::new();
        let mut received = 0usize;
        loop {
            let frame = match tokio::time::timeout(limits.body_stall, body.frame()).await {
                Err(_) => return Err(Drained::Stalled),
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(Drained::Broken),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else { continue };
            received += data.len();
            if received <= keep {
                kept.extend_from_slice(&data);
            } else if received > DRAIN_AT_MOST {
                break;
            } else {
                kept = Vec::new();
            }
        }
        if received > keep {
            Err(Drained::TooLarge)
        } else {
            Ok(kept)
        }
    };
    tokio::time::timeout(limits.body_total, read).await.unwrap_or(Err(Drained::TooSlow))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_says_what_it_needs_before_its_body() {
        assert_eq!(credential_of(&Method::POST, "/api/v1/enroll"), Credential::None);
        assert_eq!(credential_of(&Method::POST, "/api/v1/audit"), Credential::NodeKey);
        assert_eq!(credential_of(&Method::POST, "/api/v1/heartbeat"), Credential::NodeKey);
        assert_eq!(credential_of(&Method::POST, "/api/v1/admin/users"), Credential::Token);
        assert_eq!(credential_of(&Method::PUT, "/api/v1/admin/policies/icu"), Credential::Token);
        // A path the router does not know needs a token too: nothing unknown gets a body in.
        assert_eq!(credential_of(&Method::POST, "/api/v1/nothing"), Credential::Token);
    }

    #[test]
    fn one_address_cannot_take_every_slot_and_slots_come_back() {
        let gate = Gate::new(Limits { requests: 4, requests_per_address: 2, ..Limits::default() });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = gate.admit(Some(a)).unwrap();
        let _second = gate.admit(Some(a)).unwrap();
        let third = gate.admit(Some(a)).unwrap_err();
        assert_eq!(third, Busy::Address);
        let answer = third.into_response();
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.headers()[header::RETRY_AFTER], "1");
        let _b1 = gate.admit(Some(b)).unwrap();
        let _b2 = gate.admit(Some(b)).unwrap();
        // All four slots taken: anyone else is told the collector is full.
        let full = gate.admit(Some("10.0.0.3".parse().unwrap())).unwrap_err();
        assert_eq!(full.into_response().status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(first);
        assert!(gate.admit(Some(a)).is_ok(), "an answered request gives its slots back");
    }
}
