//! Answering a client's requests: which client may make which request (one table), and
//! each request carried out, with blocking work (SQLite, Argon2, `/proc`) on the
//! blocking pool and whatever changes a session told to the supervisor.

use std::sync::Arc;

use wardlock_core::protocol::local::{
    ClientRole, ErrorCode, GuardPolicy, HoldReply, QuitReply, Request, Response, UnlockReply,
};
use wardlock_core::supervision::{ConnectionId, Grant, Input};

use super::{blocking, Approval, Enrollment, Service, ServiceError};
use crate::peer::Peer;

/// Who may make a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Anyone,
    /// Only an admitted guard; anyone else is told this and disconnected.
    GuardOnly {
        refusal: &'static str,
    },
}

/// What a request spends besides the attempt budgets of credential checks (which the
/// service keeps per role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spends {
    Nothing,
    /// One of the connection's events per minute.
    Event,
}

/// One row of the request table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub access: Access,
    pub spends: Spends,
    /// A guard's process is checked again first (code loaded into it since it was
    /// admitted makes it an impostor).
    pub recheck_guard: bool,
}

const fn rule(access: Access, spends: Spends, recheck_guard: bool) -> Rule {
    Rule { access, spends, recheck_guard }
}

const GUARD_ONLY: fn(&'static str) -> Access = |refusal| Access::GuardOnly { refusal };

/// Which client may make which request, and what it costs. `hello` is the connection's
/// own business; `unlock` from a tool is further up to policy (`service.tool_unlock`).
pub fn rule_for(request: &Request) -> Rule {
    use Spends::*;
    match request {
        Request::Hello { .. } | Request::Policy {} | Request::Status {} => {
            rule(Access::Anyone, Nothing, false)
        }
        Request::Unlock(_) | Request::Enroll(_) => rule(Access::Anyone, Nothing, false),
        Request::Heartbeat {} => rule(Access::Anyone, Nothing, true),
        Request::SignOut(_) => rule(GUARD_ONLY("only the guard signs out"), Nothing, false),
        Request::Hold(_) => rule(GUARD_ONLY("only the guard holds"), Nothing, false),
        Request::Quit(_) => rule(GUARD_ONLY("only the guard quits"), Nothing, false),
        Request::Event { .. } => rule(GUARD_ONLY("only the guard reports events"), Event, true),
    }
}

/// An admitted guard's connection and the account it runs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientGuard {
    pub conn: ConnectionId,
}

/// One connected client as the service sees it: the kernel's word on who it is, the
/// role it took (a guard's only once admitted), its enrollment in progress.
#[derive(Debug)]
pub struct Client {
    pub peer: Peer,
    pub guard: Option<ClientGuard>,
    enrollment: Option<Enrollment>,
}

impl Client {
    pub fn tool(peer: Peer) -> Self {
        Self { peer, guard: None, enrollment: None }
    }

    pub fn guard(peer: Peer, conn: ConnectionId) -> Self {
        Self { peer, guard: Some(ClientGuard { conn }), enrollment: None }
    }

    pub fn role(&self) -> ClientRole {
        if self.guard.is_some() {
            ClientRole::Guard
        } else {
            ClientRole::Tool
        }
    }
}

/// What the connection does with an answer.
#[derive(Debug)]
pub enum Answer {
    Reply(Response),
    /// Reply, then order the guard to lock: its session was left behind the lock.
    ReplyThenLock(Response),
    /// Answer with this error and end the connection.
    End {
        code: ErrorCode,
        message: String,
    },
}

impl Service {
    /// Answers one request of `client` as [`rule_for`] allows (what the request spends of
    /// the connection's own budget is the connection's to count). `Err(NotAllowed)` is an
    /// answer the client may learn and stay connected.
    pub async fn answer(
        self: &Arc<Self>,
        client: &mut Client,
        request: Request,
    ) -> Result<Answer, ServiceError> {
        let role = client.role();
        let rule = rule_for(&request);
        if let (Access::GuardOnly { refusal }, None) = (rule.access, client.guard) {
            return Ok(Answer::End { code: ErrorCode::NotAllowed, message: refusal.to_owned() });
        }
        if rule.recheck_guard && client.guard.is_some() {
            let (service, peer) = (self.clone(), client.peer.clone());
            match blocking(move |b| Ok(service.recheck_guard(b, &peer))).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    let message = format!("no longer the installed guard: {why}");
                    return Ok(Answer::End { code: ErrorCode::NotAllowed, message });
                }
                Err(e) => {
                    let message = format!("could not check the guard: {e}");
                    return Ok(Answer::End { code: ErrorCode::Internal, message });
                }
            }
        }
        let service = self.clone();
        let peer = client.peer.clone();
        let account = peer.account.clone();
        Ok(Answer::Reply(match request {
            Request::Hello { .. } => {
                return Ok(Answer::End {
                    code: ErrorCode::BadRequest,
                    message: "hello was already sent".into(),
                })
            }
            Request::Heartbeat {} => Response::Ack,
            Request::Policy {} => {
                let response = Response::Policy { policy: Box::new(GuardPolicy::from(&*self.policy())) };
                if client.guard.is_some() && self.supervisor.view(&account).await?.must_lock {
                    return Ok(Answer::ReplyThenLock(response));
                }
                response
            }
            Request::Status {} => Response::Status(self.status().await?),
            Request::Unlock(unlock) => {
                let clinician = self.clinician_for(client).await?;
                let reply = blocking(move |b| service.unlock(b, unlock, &peer, role, clinician)).await?;
                if let UnlockReply::Granted { user, .. } = &reply {
                    let grant = Grant::Unlock { user: user.clone() };
                    self.supervisor.tell(Input::Granted { role, account, grant }).await;
                }
                Response::Unlock(reply)
            }
            Request::SignOut(request) => {
                let clinician = self.clinician_for(client).await?;
                let reply = blocking(move |b| service.sign_out(b, request, &peer, clinician)).await?;
                if let UnlockReply::Granted { user, .. } = &reply {
                    let grant = Grant::SignOut { user: user.clone() };
                    self.supervisor.tell(Input::Granted { role, account, grant }).await;
                }
                Response::Unlock(reply)
            }
            Request::Hold(request) => {
                let session = self.supervisor.view(&account).await?;
                let reply = blocking(move |b| service.hold(b, request, &peer, &session)).await?;
                if let HoldReply::Granted { user, in_a_row, .. } = &reply {
                    let grant = Grant::Hold { user: user.clone(), in_a_row: *in_a_row };
                    self.supervisor.tell(Input::Granted { role, account, grant }).await;
                }
                Response::Hold(reply)
            }
            Request::Quit(creds) => {
                let admin = creds.user.clone();
                match blocking(move |b| service.approve(b, creds, "quit", &peer, role)).await? {
                    Approval::Granted => {
                        if let Some(guard) = client.guard {
                            self.supervisor.tell(Input::QuitApproved { conn: guard.conn, by: admin }).await;
                        }
                        Response::Quit(QuitReply::Authorized)
                    }
                    Approval::Refused { attempts_left, retry_after_secs } => {
                        Response::Quit(QuitReply::Refused { attempts_left, retry_after_secs })
                    }
                }
            }
            Request::Event { event } => {
                let Some(guard) = client.guard else {
                    let message = "only the guard reports events".to_owned();
                    return Ok(Answer::End { code: ErrorCode::NotAllowed, message });
                };
                self.guard_event(guard.conn, &peer, event).await?;
                Response::Ack
            }
            Request::Enroll(step) => {
                let mut enrollment = client.enrollment.take();
                let (reply, enrollment) = blocking(move |b| {
                    let reply = service.enroll(b, &mut enrollment, step, &peer, role);
                    Ok((reply, enrollment))
                })
                .await?;
                client.enrollment = enrollment;
                Response::Enroll(reply?)
            }
        }))
    }

    /// The clinician a guard's session is attributed to; a tool's check takes over no
    /// session, so it switches from no one.
    async fn clinician_for(&self, client: &Client) -> Result<Option<String>, ServiceError> {
        match client.guard {
            Some(_) => Ok(self.supervisor.view(&client.peer.account).await?.clinician),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use wardlock_core::protocol::local::{AdminCredentials, GuardEvent, UnlockRequest};
    use wardlock_core::secret::SecretString;

    use super::*;

    fn credentials() -> UnlockRequest {
        UnlockRequest {
            user: "n.nurse".into(),
            pin: Some(SecretString::new("730284")),
            totp: None,
            emergency_reason: None,
        }
    }

    #[test]
    fn the_guards_requests_are_the_guards_and_events_cost_and_recheck() {
        let admin = AdminCredentials { user: "it.admin".into(), pin: None, totp: None };
        let guard_only = [
            Request::SignOut(credentials()),
            Request::Hold(credentials()),
            Request::Quit(admin),
            Request::Event { event: GuardEvent::WarningCancelled {} },
        ];
        for request in &guard_only {
            assert!(matches!(rule_for(request).access, Access::GuardOnly { .. }), "{request:?}");
        }
        let anyone =
            [Request::Policy {}, Request::Status {}, Request::Heartbeat {}, Request::Unlock(credentials())];
        for request in &anyone {
            assert_eq!(rule_for(request).access, Access::Anyone, "{request:?}");
        }
        let event = rule_for(&Request::Event { event: GuardEvent::WarningCancelled {} });
        assert_eq!((event.spends, event.recheck_guard), (Spends::Event, true));
        let heartbeat = rule_for(&Request::Heartbeat {});
        assert_eq!((heartbeat.spends, heartbeat.recheck_guard), (Spends::Nothing, true));
        assert!(!rule_for(&Request::Unlock(credentials())).recheck_guard);
    }
}
