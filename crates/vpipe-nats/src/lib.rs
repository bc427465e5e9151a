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

/// A client connected to a NATS server, with the runtime that drives it and its
/// JetStream context: what [`Publisher`] and [`JobQueue`] both stand on.
struct Connection {
    runtime: tokio::runtime::Runtime,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    url: String,
}

impl Connection {
    /// Connects to `url` (waiting at most [`CONNECT_TIMEOUT`]).
    fn open(url: &str) -> Result<Self, NatsError> {
        let connect_err = |message: String| NatsError::Connect {
            url: url.into(),
            message,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| connect_err(format!("cannot start the client's runtime: {e}")))?;
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
            jetstream::new(client.clone())
        };
        Ok(Self {
            runtime,
            client,
            jetstream,
            url: url.into(),
        })
    }

    /// Publishes `payload` on `subject` with the de-duplication id `id` and waits at
    /// most `wait` for JetStream's acknowledgement.
    fn publish_acked(
        &self,
        subject: &str,
        id: &str,
        payload: Vec<u8>,
        wait: Duration,
    ) -> Result<(), String> {
        let message = PublishMessage::build()
            .message_id(id)
            .payload(payload.into());
        self.runtime.block_on(async {
            let ack = self
                .jetstream
                .send_publish(subject.to_string(), message)
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(wait, ack)
                .await
                .map_err(|_| "no acknowledgement".to_string())?
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// A connection to a NATS server's JetStream, publishing into one stream.
pub struct Publisher {
    conn: Connection,
    /// Since when the server has not acknowledged anything (after a message's
    /// retries ran out), and when it was last probed.
    away: Option<Instant>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("url", &self.conn.url)
            .finish()
    }
}

impl Publisher {
    /// Connects to `url` and makes sure the JetStream stream `stream` exists, taking
    /// `subjects` (for example `vpipe.results.>`), with its server-side
    /// de-duplication window.
    pub fn connect(url: &str, stream: &str, subjects: &str) -> Result<Self, NatsError> {
        let conn = Connection::open(url)?;
        conn.runtime
            .block_on(
                conn.jetstream
                    .get_or_create_stream(jetstream::stream::Config {
                        name: stream.into(),
                        subjects: vec![subjects.into()],
                        ..Default::default()
                    }),
            )
            .map_err(|e| NatsError::Stream {
                url: url.into(),
                stream: stream.into(),
                message: e.to_string(),
            })?;
        Ok(Self { conn, away: None })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.conn.url
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
            let result = self
                .conn
                .publish_acked(subject, id, payload.clone(), ATTEMPT_TIMEOUT);
            match result {
                Ok(_) => {
                    if self.away.take().is_some() {
                        tracing::info!(url = %self.conn.url, "NATS server back: publishing again");
                    }
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        if self.away.is_none() {
            tracing::warn!(url = %self.conn.url, error = %last, "NATS server not acknowledging: results are counted as undelivered while it is away");
        }
        self.away = Some(Instant::now());
        Err(self.failure(subject, &last))
    }

    fn failure(&self, subject: &str, message: &str) -> NatsError {
        NatsError::Publish {
            url: self.conn.url.clone(),
            subject: subject.into(),
            message: message.into(),
        }
    }
}

/// Jobs on a JetStream work queue: a stream with work-queue retention on
/// `vpipe.jobs.<queue>`, and one durable pull consumer that every worker shares. A job
/// is removed when a worker acknowledges it; one that is not acknowledged within the
/// consumer's ack wait (its worker died) is delivered again, to any worker.
pub struct JobQueue {
    conn: Connection,
    /// The workers' consumer (`None` for a queue opened to submit jobs).
    consumer: Option<jetstream::consumer::PullConsumer>,
    queue: String,
}

/// A job taken from a [`JobQueue`], to acknowledge once its outputs are complete.
pub struct Job {
    message: jetstream::Message,
    /// The job's message body.
    pub payload: Vec<u8>,
    /// How many times it has been delivered (2 or more: a worker before this one did
    /// not finish it).
    pub deliveries: i64,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue")
            .field("url", &self.conn.url)
            .field("queue", &self.queue)
            .finish()
    }
}

impl JobQueue {
    /// Connects to `url` and makes sure the queue `queue` exists: its stream, and with
    /// `ack_wait` (to take jobs) the workers' consumer, which redelivers a job not
    /// acknowledged within it (the worker that makes the consumer sets it).
    pub fn open(url: &str, queue: &str, ack_wait: Option<Duration>) -> Result<Self, NatsError> {
        let conn = Connection::open(url)?;
        let stream_err = |message: String| NatsError::Stream {
            url: url.into(),
            stream: queue.into(),
            message,
        };
        let consumer = conn.runtime.block_on(async {
            let stream = conn
                .jetstream
                .get_or_create_stream(jetstream::stream::Config {
                    name: queue.into(),
                    subjects: vec![Self::subject_of(queue)],
                    retention: jetstream::stream::RetentionPolicy::WorkQueue,
                    ..Default::default()
                })
                .await
                .map_err(|e| stream_err(e.to_string()))?;
            let Some(ack_wait) = ack_wait else {
                return Ok(None);
            };
            stream
                .get_or_create_consumer(
                    "vpipe-workers",
                    jetstream::consumer::pull::Config {
                        durable_name: Some("vpipe-workers".into()),
                        ack_wait,
                        ..Default::default()
                    },
                )
                .await
                .map(Some)
                .map_err(|e| stream_err(e.to_string()))
        })?;
        Ok(Self {
            conn,
            consumer,
            queue: queue.into(),
        })
    }

    /// The subject of queue `queue`'s jobs.
    fn subject_of(queue: &str) -> String {
        format!("vpipe.jobs.{queue}")
    }

    /// Enqueues a job with de-duplication id `id`.
    pub fn submit(&self, id: &str, payload: Vec<u8>) -> Result<(), NatsError> {
        let subject = Self::subject_of(&self.queue);
        self.conn
            .publish_acked(&subject, id, payload, ATTEMPT_TIMEOUT * 4)
            .map_err(|message| NatsError::Publish {
                url: self.conn.url.clone(),
                subject,
                message,
            })
    }

    /// The next job, waiting at most `wait` for one.
    pub fn next(&self, wait: Duration) -> Result<Option<Job>, NatsError> {
        use futures::StreamExt;
        let err = |message: String| NatsError::Publish {
            url: self.conn.url.clone(),
            subject: Self::subject_of(&self.queue),
            message,
        };
        let Some(consumer) = &self.consumer else {
            return Err(err(
                "the queue was opened to submit jobs, not to take them".into()
            ));
        };
        self.conn.runtime.block_on(async {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| err(e.to_string()))?;
            match batch.next().await {
                Some(Ok(message)) => {
                    let deliveries = message.info().map_or(1, |i| i.delivered);
                    Ok(Some(Job {
                        payload: message.payload.to_vec(),
                        message,
                        deliveries,
                    }))
                }
                Some(Err(e)) => Err(err(e.to_string())),
                None => Ok(None),
            }
        })
    }

    /// Acknowledges a job whose outputs are complete: it leaves the queue.
    pub fn done(&self, job: Job) -> Result<(), NatsError> {
        self.reply(job, jetstream::AckKind::Ack)
    }

    /// Gives a job back for another try (now, to any worker).
    pub fn retry(&self, job: Job) -> Result<(), NatsError> {
        self.reply(job, jetstream::AckKind::Nak(None))
    }

    /// Acknowledges a job that cannot be done (a malformed message, an input that
    /// cannot be read) so that it is not delivered again, and publishes why on
    /// `vpipe.jobs.<queue>.failed`.
    pub fn fail(&self, job: Job, reason: &str) -> Result<(), NatsError> {
        let subject = format!("{}.failed", Self::subject_of(&self.queue));
        let body = job.payload.clone();
        let note = format!("{reason}\n{}", String::from_utf8_lossy(&body));
        self.conn
            .runtime
            .block_on(async {
                self.conn
                    .client
                    .publish(subject.clone(), note.into())
                    .await?;
                self.conn
                    .client
                    .flush()
                    .await
                    .map_err(|e| e.to_string().into())
            })
            .map_err(
                |e: Box<dyn std::error::Error + Send + Sync>| NatsError::Publish {
                    url: self.conn.url.clone(),
                    subject,
                    message: e.to_string(),
                },
            )?;
        self.reply(job, jetstream::AckKind::Term)
    }

    fn reply(&self, job: Job, kind: jetstream::AckKind) -> Result<(), NatsError> {
        self.conn
            .runtime
            .block_on(job.message.ack_with(kind))
            .map_err(|e| NatsError::Publish {
                url: self.conn.url.clone(),
                subject: Self::subject_of(&self.queue),
                message: e.to_string(),
            })
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
