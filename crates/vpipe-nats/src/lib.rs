//! Publishing to NATS JetStream from vpipe's (synchronous) stages.
//!
//! A [`Publisher`] owns a connection and a small Tokio runtime of its own, makes sure
//! the stream exists, and publishes each message with a de-duplication id (JetStream's
//! `Nats-Msg-Id`), waiting for the server's acknowledgement. A message that is not
//! acknowledged is retried with back-off; when the server stays away, the publisher
//! stops waiting for it (so a run never hangs) and probes it again every few seconds,
//! and the caller counts what could not be delivered.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};

/// Errors of the NATS publisher.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to the NATS server at {url}: {message}")]
    Connect {
        /// The server's URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The JetStream stream could not be found or made.
    #[error("NATS server at {url}: JetStream stream '{stream}': {message}")]
    Stream {
        /// The server's URL.
        url: String,
        /// The stream.
        stream: String,
        /// Why (JetStream off, subjects taken by another stream, ...).
        message: String,
    },
    /// A message was not acknowledged after its retries.
    #[error("NATS server at {url}: '{subject}' not acknowledged: {message}")]
    Publish {
        /// The server's URL.
        url: String,
        /// The subject.
        subject: String,
        /// The last failure.
        message: String,
    },
}

/// How long one attempt waits for the acknowledgement.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Waits between attempts, doubling.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Attempts per message while the server answers.
const ATTEMPTS: u32 = 5;
/// While the server is away, one message every this long probes it.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to a NATS server's JetStream, publishing into one stream.
pub struct Publisher {
    runtime: tokio::runtime::Runtime,
    jetstream: jetstream::Context,
    url: String,
    /// Since when the server has not acknowledged anything (after a message's
    /// retries ran out), and when it was last probed.
    away: Option<Instant>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("url", &self.url).finish()
    }
}

impl Publisher {
    /// Connects to `url` and makes sure the JetStream stream `stream` exists, taking
    /// `subjects` (for example `vpipe.results.>`), with its server-side
    /// de-duplication window.
    pub fn connect(url: &str, stream: &str, subjects: &str) -> Result<Self, NatsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NatsError::Connect {
                url: url.into(),
                message: format!("cannot start the client's runtime: {e}"),
            })?;
        let connect_err = |message: String| NatsError::Connect {
            url: url.into(),
            message,
        };
        let client = runtime.block_on(async {
            let options = async_nats::ConnectOptions::new()
                .connection_timeout(CONNECT_TIMEOUT)
                .name("vpipe");
            tokio::time::timeout(CONNECT_TIMEOUT, options.connect(url))
                .await
                .map_err(|_| connect_err("no answer".into()))?
                .map_err(|e| connect_err(e.to_string()))
        })?;
        // The context spawns a task of its own on the runtime.
        let jetstream = {
            let _entered = runtime.enter();
            jetstream::new(client)
        };
        runtime
            .block_on(jetstream.get_or_create_stream(jetstream::stream::Config {
                name: stream.into(),
                subjects: vec![subjects.into()],
                ..Default::default()
            }))
            .map_err(|e| NatsError::Stream {
                url: url.into(),
                stream: stream.into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            runtime,
            jetstream,
            url: url.into(),
            away: None,
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Publishes `payload` on `subject` with the de-duplication id `id`, waiting for
    /// the acknowledgement (a message the stream already holds under `id` is
    /// acknowledged as a duplicate and not stored again). Retries with back-off; while
    /// the server is away, only a probe every few seconds is sent.
    pub fn publish(&mut self, subject: &str, id: &str, payload: Vec<u8>) -> Result<(), NatsError> {
        let attempts = match self.away {
            Some(since) if since.elapsed() < PROBE_EVERY => {
                return Err(self.failure(subject, "the server is away (retrying every 5 s)"));
            }
            Some(_) => 1,
            None => ATTEMPTS,
        };
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                std::thread::sleep(backoff);
                backoff *= 2;
            }
            let message = PublishMessage::build()
                .message_id(id)
                .payload(payload.clone().into());
            let js = &self.jetstream;
            let result = self.runtime.block_on(async {
                let ack = js
                    .send_publish(subject.to_string(), message)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::time::timeout(ATTEMPT_TIMEOUT, ack)
                    .await
                    .map_err(|_| "no acknowledgement".to_string())?
                    .map_err(|e| e.to_string())
            });
            match result {
                Ok(_) => {
                    if self.away.take().is_some() {
                        tracing::info!(url = %self.url, "NATS server back: publishing again");
                    }
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        if self.away.is_none() {
            tracing::warn!(url = %self.url, error = %last, "NATS server not acknowledging: results are counted as undelivered while it is away");
        }
        self.away = Some(Instant::now());
        Err(self.failure(subject, &last))
    }

    fn failure(&self, subject: &str, message: &str) -> NatsError {
        NatsError::Publish {
            url: self.url.clone(),
            subject: subject.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_is_a_clear_error() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = format!("nats://127.0.0.1:{port}");
        let e = Publisher::connect(&url, "S", "s.>")
            .unwrap_err()
            .to_string();
        assert!(e.contains(&url) && e.contains("cannot connect"), "{e}");
    }
}
