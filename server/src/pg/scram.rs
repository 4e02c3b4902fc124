//! Password login: SCRAM-SHA-256 (RFC 5802, RFC 7677) checked against the stored and server
//! keys of the users file, as PostgreSQL does, and SCRAM-SHA-256-PLUS (channel binding
//! `tls-server-end-point`, RFC 5929) on TLS connections.
//!
//! pgwire's own SCRAM handler needs the salted password, from which anyone can log in, so the
//! exchange is ours; pgwire still frames the messages and finishes the startup.

use std::fmt::Debug;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use datafusion_postgres::pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionHandle, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, METADATA_USER,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::Authentication;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::{Sink, SinkExt};
use parking_lot::Mutex;
use ring::{digest, hmac};
use subtle::ConstantTimeEq;

use super::auth::{Users, Verifier};
use super::errors;

const SCRAM: &str = "SCRAM-SHA-256";
const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";
const END_POINT: &str = "tls-server-end-point";

/// Backend keys for every connection of the process (one counter, so process ids differ).
static BACKEND_KEYS: LazyLock<RandomPidSecretKeyGenerator> =
    LazyLock::new(RandomPidSecretKeyGenerator::default);

/// One connection's login.
pub(super) struct ScramStartup {
    users: Arc<Users>,
    connections: Arc<ConnectionManager>,
    /// `tls-server-end-point` binding data: the hash of the server's certificate, when the
    /// server has TLS and the certificate's signature names a hash.
    end_point: Option<Arc<[u8]>>,
    parameters: DefaultServerParameterProvider,
    state: Mutex<State>,
}

enum State {
    Start,
    SentServerFirst(Box<Exchange>),
    Done,
}

impl ScramStartup {
    pub(super) fn new(
        users: Arc<Users>,
        connections: Arc<ConnectionManager>,
        end_point: Option<Arc<[u8]>>,
    ) -> Self {
        Self {
            users,
            connections,
            end_point,
            parameters: DefaultServerParameterProvider::default(),
            state: Mutex::new(State::Start),
        }
    }

    /// The binding data offered to this client: only over TLS.
    fn end_point(&self, secure: bool) -> Option<&[u8]> {
        self.end_point.as_deref().filter(|_| secure)
    }
}

#[async_trait]
impl StartupHandler for ScramStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let message = match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let mut mechanisms = vec![SCRAM.to_owned()];
                if self.end_point(client.is_secure()).is_some() {
                    mechanisms.insert(0, SCRAM_PLUS.to_owned());
                }
                let request = Authentication::SASL(mechanisms);
                client
                    .send(PgWireBackendMessage::Authentication(request))
                    .await?;
                return Ok(());
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => message,
            _ => return Ok(()),
        };
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        let state = std::mem::replace(&mut *self.state.lock(), State::Done);
        match state {
            State::Start => {
                let initial = message.into_sasl_initial_response()?;
                let verifier = self.users.verifier(&user);
                let data = initial.data.as_deref().unwrap_or_default();
                let (reply, exchange) = Exchange::start(
                    &initial.auth_method,
                    text(data)?,
                    verifier,
                    &BASE64.encode(rand::random::<[u8; 18]>()),
                    self.end_point(client.is_secure()),
                )
                .map_err(|refusal| refusal.into_error(&user))?;
                *self.state.lock() = State::SentServerFirst(Box::new(exchange));
                let reply = Authentication::SASLContinue(reply.into_bytes().into());
                client
                    .send(PgWireBackendMessage::Authentication(reply))
                    .await?;
            }
            State::SentServerFirst(exchange) => {
                let response = message.into_sasl_response()?;
                let reply = exchange
                    .finish(text(&response.data)?)
                    .map_err(|refusal| refusal.into_error(&user))?;
                let reply = Authentication::SASLFinal(reply.into_bytes().into());
                client
                    .feed(PgWireBackendMessage::Authentication(reply))
                    .await?;
                let (pid, secret) = BACKEND_KEYS.generate(client);
                client.set_pid_and_secret_key(pid, secret.clone());
                // What datafusion-postgres looks for to cancel this connection's statements.
                let (handle, guard) = self.connections.register(pid, secret);
                client
                    .session_extensions()
                    .insert::<Arc<ConnectionHandle>>(handle);
                client.session_extensions().insert(guard);
                finish_authentication(client, &self.parameters).await?;
            }
            State::Done => {
                return Err(errors::fatal(
                    PROTOCOL_VIOLATION,
                    "unexpected password message after the SCRAM exchange ended",
                ))
            }
        }
        Ok(())
    }
}

const PROTOCOL_VIOLATION: &str = "08P01";

fn text(data: &[u8]) -> PgWireResult<&str> {
    std::str::from_utf8(data).map_err(|_| Refusal::Malformed("not UTF-8").into_error(""))
}

/// Why a login is refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// A message that does not follow the protocol.
    Malformed(&'static str),
    /// The client and the server disagree on channel binding.
    Binding(&'static str),
    /// A wrong password or an unknown user (the client cannot tell which).
    Failed,
}

impl Refusal {
    fn into_error(self, user: &str) -> PgWireError {
        match self {
            Refusal::Malformed(why) => errors::fatal(
                PROTOCOL_VIOLATION,
                format!("malformed SCRAM message: {why}"),
            ),
            Refusal::Binding(why) => {
                errors::fatal(PROTOCOL_VIOLATION, format!("SCRAM channel binding: {why}"))
            }
            Refusal::Failed => errors::fatal(
                "28P01",
                format!("password authentication failed for user \"{user}\""),
            ),
        }
    }
}

/// An exchange after the server's first message, waiting for the client's proof.
struct Exchange {
    verifier: Verifier,
    /// `client-first-message-bare,server-first-message,`: the start of the AuthMessage.
    auth_start: String,
    nonce: String,
    /// What the client's `c=` must decode to: its GS2 header, then the binding data if any.
    binding_input: Vec<u8>,
}

impl Exchange {
    /// Reads the client's first message and answers with the server's (nonce, salt, iterations).
    fn start(
        mechanism: &str,
        client_first: &str,
        verifier: Verifier,
        server_nonce: &str,
        end_point: Option<&[u8]>,
    ) -> Result<(String, Exchange), Refusal> {
        let (flag, rest) = client_first
            .split_once(',')
            .ok_or(Refusal::Malformed("no GS2 header"))?;
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(Refusal::Malformed("no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(Refusal::Malformed(
                "authorization identities are not supported",
            ));
        }
        let gs2_header = &client_first[..client_first.len() - bare.len()];
        let binding_data: &[u8] = match (mechanism, flag) {
            (SCRAM_PLUS, _) if end_point.is_none() => {
                return Err(Refusal::Binding(
                    "SCRAM-SHA-256-PLUS is offered only over TLS",
                ))
            }
            (SCRAM_PLUS, flag) if flag == format!("p={END_POINT}") => end_point.unwrap_or(&[]),
            (SCRAM_PLUS, _) => {
                return Err(Refusal::Binding(
                    "SCRAM-SHA-256-PLUS needs the binding type tls-server-end-point",
                ))
            }
            (SCRAM, "n") => &[],
            (SCRAM, "y") if end_point.is_some() => {
                // The client could bind but believes this server cannot: someone in between
                // removed SCRAM-SHA-256-PLUS from the offer.
                return Err(Refusal::Binding(
                    "the client supports channel binding and thinks the server does not, \
                     but this server offered it",
                ));
            }
            (SCRAM, "y") => &[],
            (SCRAM, flag) if flag.starts_with("p=") => {
                return Err(Refusal::Binding(
                    "the client asked for channel binding without SCRAM-SHA-256-PLUS",
                ))
            }
            (SCRAM, _) => return Err(Refusal::Malformed("unknown channel binding flag")),
            _ => return Err(Refusal::Malformed("unsupported SASL mechanism")),
        };
        let mut fields = bare.split(',');
        match fields.next() {
            Some(user) if user.starts_with("n=") => {}
            Some(extension) if extension.starts_with("m=") => {
                return Err(Refusal::Malformed("mandatory extensions are not supported"))
            }
            _ => return Err(Refusal::Malformed("no user name attribute")),
        }
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            .ok_or(Refusal::Malformed("no valid nonce"))?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&verifier.salt),
            verifier.iterations
        );
        let mut binding_input = gs2_header.as_bytes().to_vec();
        binding_input.extend_from_slice(binding_data);
        let exchange = Exchange {
            auth_start: format!("{bare},{server_first},"),
            verifier,
            nonce,
            binding_input,
        };
        Ok((server_first, exchange))
    }

    /// Checks the client's final message and answers with the server's signature.
    fn finish(&self, client_final: &str) -> Result<String, Refusal> {
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(Refusal::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .and_then(|c| BASE64.decode(c).ok())
            .ok_or(Refusal::Malformed("no channel binding attribute"))?;
        if binding != self.binding_input {
            return Err(Refusal::Binding("the binding data do not match"));
        }
        if fields.next().and_then(|f| f.strip_prefix("r=")) != Some(self.nonce.as_str()) {
            return Err(Refusal::Malformed("the nonce does not match"));
        }
        let proof = BASE64
            .decode(proof)
            .ok()
            .filter(|p| p.len() == 32)
            .ok_or(Refusal::Malformed("the proof is not 32 bytes of base64"))?;

        let auth_message = format!("{}{without_proof}", self.auth_start);
        let stored = hmac::Key::new(hmac::HMAC_SHA256, &self.verifier.stored_key);
        let signature = hmac::sign(&stored, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        let computed = digest::digest(&digest::SHA256, &client_key);
        if !bool::from(computed.as_ref().ct_eq(&self.verifier.stored_key)) {
            return Err(Refusal::Failed);
        }
        let server = hmac::Key::new(hmac::HMAC_SHA256, &self.verifier.server_key);
        let verifier = hmac::sign(&server, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(verifier)))
    }
}

#[cfg(test)]
mod tests {
    use datafusion_postgres::pgwire::api::auth::sasl::scram::gen_salted_password;

    use super::*;

    /// RFC 7677's example: user "user", password "pencil".
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

    fn verifier(password: &str) -> Verifier {
        let salt = BASE64.decode(SALT).unwrap();
        let salted = gen_salted_password(password, &salt, 4096);
        Verifier::from_salted_password(4096, salt, &salted)
    }

    /// The client's proof for `password` over `auth_message`, as a client computes it.
    fn proof(password: &str, auth_message: &str) -> String {
        let salted = gen_salted_password(password, &BASE64.decode(SALT).unwrap(), 4096);
        let client_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salted), b"Client Key");
        let stored = digest::digest(&digest::SHA256, client_key.as_ref());
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        BASE64.encode(proof)
    }

    #[test]
    fn rfc_7677_example() {
        let (server_first, exchange) =
            Exchange::start(SCRAM, CLIENT_FIRST, verifier("pencil"), SERVER_NONCE, None).unwrap();
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        assert_eq!(
            exchange.finish(CLIENT_FINAL).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let (_, wrong) =
            Exchange::start(SCRAM, CLIENT_FIRST, verifier("pen"), SERVER_NONCE, None).unwrap();
        assert_eq!(wrong.finish(CLIENT_FINAL), Err(Refusal::Failed));
    }

    #[test]
    fn channel_binding_with_the_certificate_hash() {
        let end_point = [9u8; 32];
        let first = "p=tls-server-end-point,,n=,r=abc";
        let (server_first, exchange) = Exchange::start(
            SCRAM_PLUS,
            first,
            verifier("pencil"),
            "def",
            Some(&end_point),
        )
        .unwrap();
        let mut input = b"p=tls-server-end-point,,".to_vec();
        input.extend_from_slice(&end_point);
        let without_proof = format!("c={},r=abcdef", BASE64.encode(&input));
        let auth_message = format!("n=,r=abc,{server_first},{without_proof}");
        let good = format!("{without_proof},p={}", proof("pencil", &auth_message));
        assert!(exchange.finish(&good).unwrap().starts_with("v="));

        // The same exchange bound to another certificate (a man in the middle's) fails.
        let other = format!(
            "c={},r=abcdef",
            BASE64.encode(b"p=tls-server-end-point,,xx")
        );
        let forged = format!("{other},p={}", proof("pencil", &auth_message));
        assert_eq!(
            exchange.finish(&forged),
            Err(Refusal::Binding("the binding data do not match"))
        );
    }

    #[test]
    fn negotiation_and_crafted_messages_are_refused() {
        let cert = Some(&[1u8; 32][..]);
        let start = |mechanism, message, end_point| {
            Exchange::start(mechanism, message, verifier("x"), "s", end_point)
                .err()
                .unwrap()
        };
        for (mechanism, message, end_point, expected) in [
            (
                SCRAM_PLUS,
                "p=tls-server-end-point,,n=,r=a",
                None,
                "offered only over TLS",
            ),
            (
                SCRAM_PLUS,
                "p=tls-unique,,n=,r=a",
                cert,
                "needs the binding type",
            ),
            (SCRAM, "y,,n=,r=a", cert, "thinks the server does not"),
            (
                SCRAM,
                "p=tls-server-end-point,,n=,r=a",
                cert,
                "without SCRAM-SHA-256-PLUS",
            ),
            (SCRAM, "n,a=admin,n=,r=a", None, "authorization identities"),
            (SCRAM, "n,,m=ext,n=,r=a", None, "mandatory extensions"),
            (SCRAM, "n,,n=,r=", None, "no valid nonce"),
            (SCRAM, "n,,n=,r=a\u{7f}", None, "no valid nonce"),
            (SCRAM, "n", None, "no GS2 header"),
            (SCRAM, "x,,n=,r=a", None, "unknown channel binding flag"),
            ("PLAIN", "n,,n=,r=a", None, "unsupported SASL mechanism"),
        ] {
            let refusal = start(mechanism, message, end_point);
            let why = match refusal {
                Refusal::Malformed(why) | Refusal::Binding(why) => why,
                Refusal::Failed => "failed",
            };
            assert!(why.contains(expected), "{mechanism} {message}: {why}");
        }
        // A client that can bind talks to a server without TLS: allowed, unbound.
        assert!(Exchange::start(SCRAM, "y,,n=,r=a", verifier("x"), "s", None).is_ok());

        let (_, exchange) =
            Exchange::start(SCRAM, CLIENT_FIRST, verifier("pencil"), SERVER_NONCE, None).unwrap();
        for (message, expected) in [
            (
                "c=biws,r=rOprNGfwEbeRWgbNEkqO",
                Refusal::Malformed("no proof"),
            ),
            (
                "c=biws,r=rOprNGfwEbeRWgbNEkqOother,p=AAAA",
                Refusal::Malformed("the nonce does not match"),
            ),
            (
                "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
                Refusal::Binding("the binding data do not match"),
            ),
            (
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
                Refusal::Malformed("the proof is not 32 bytes of base64"),
            ),
        ] {
            assert_eq!(exchange.finish(message), Err(expected), "{message}");
        }
    }
}
