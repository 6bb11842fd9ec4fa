//! The Redis backend: key layout, commands, the Lua script, and the reconnecting pub/sub task.
//!
//! Commands go through one `ConnectionManager` (a multiplexed connection that pipelines concurrent
//! callers and reconnects by itself); every subscription holds its own pub/sub connection. A
//! subscription notices an outage when Redis closes the connection (a restart, a crash, a killed
//! process); a half-open connection with no traffic is not detected, since there is no keepalive ping.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::{Client, RedisError, RedisResult, Script};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Forward, KvError, forward, millis};

/// How long the first connection (and the first subscription) may take before giving up.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Each single TCP connect attempt times out after this.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// A command without an answer after this fails; a healthy Redis answers in well under 1 ms.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound for one operation including its reconnect attempts, so callers never hang.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect attempts the `ConnectionManager` makes per failed connection before a command fails
/// with `Unavailable`; kept low so commands fail fast while Redis is away (the next command starts
/// another round).
const COMMAND_RECONNECT_RETRIES: usize = 2;
/// First delay between the `ConnectionManager`'s reconnect attempts.
const COMMAND_RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// Longest delay between the `ConnectionManager`'s reconnect attempts.
const COMMAND_RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
/// First delay before a subscription reconnects; doubles per failed attempt.
const SUBSCRIBE_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest delay between a subscription's reconnect attempts.
const SUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Deletes every session listed in the account's set (KEYS[1]) and the set itself; ARGV[1] is the
/// session key prefix. Returns the token hashes whose session key still existed. The session keys are
/// built inside the script, which is fine on one Redis but would need hash tags on a cluster.
const DELETE_ALL_SESSIONS_LUA: &str = r"
local token_hashes = redis.call('SMEMBERS', KEYS[1])
local deleted = {}
for _, token_hash in ipairs(token_hashes) do
  if redis.call('DEL', ARGV[1] .. token_hash) == 1 then
    table.insert(deleted, token_hash)
  end
end
redis.call('DEL', KEYS[1])
return deleted
";

/// A Redis connection plus the key prefix.
pub(crate) struct RedisBackend {
    client: Client,
    connection: ConnectionManager,
    prefix: String,
    delete_all_sessions: Script,
}

fn unavailable(error: RedisError) -> KvError {
    KvError::Unavailable(error.to_string())
}

impl RedisBackend {
    pub(crate) async fn connect(url: &str, key_prefix: &str) -> Result<RedisBackend, KvError> {
        let client = Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(COMMAND_RECONNECT_RETRIES)
            .set_min_delay(COMMAND_RECONNECT_MIN_DELAY)
            .set_max_delay(COMMAND_RECONNECT_MAX_DELAY)
            .set_connection_timeout(Some(CONNECT_ATTEMPT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connection = tokio::time::timeout(
            FIRST_CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| {
            KvError::Unavailable(format!(
                "no connection to Redis within {} s",
                FIRST_CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(unavailable)?;
        Ok(RedisBackend {
            client,
            connection,
            prefix: key_prefix.to_owned(),
            delete_all_sessions: Script::new(DELETE_ALL_SESSIONS_LUA),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn session_key(&self, token_hash: &str) -> String {
        format!("{}session:{token_hash}", self.prefix)
    }

    fn account_sessions_key(&self, account_id: &str) -> String {
        format!("{}account-sessions:{account_id}", self.prefix)
    }

    fn counter_key(&self, key: &str) -> String {
        format!("{}counter:{key}", self.prefix)
    }

    fn channel_name(&self, channel: &str) -> String {
        format!("{}{channel}", self.prefix)
    }

    /// Runs `operation` on the shared connection with an overall timeout.
    ///
    /// A refused connection means the command was never sent, so it is retried once: the failure has
    /// just started a fresh reconnect, and that makes the first command after Redis comes back succeed
    /// instead of reporting the outage that already ended. Other failures are not retried, since the
    /// command may have run.
    async fn run<T, F, Fut>(&self, mut operation: F) -> Result<T, KvError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempts = async {
            match operation(self.connection.clone()).await {
                Err(error) if error.is_connection_refusal() => operation(self.connection.clone()).await,
                result => result,
            }
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, attempts).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(KvError::Unavailable(format!(
                "no answer from Redis within {} s",
                OPERATION_TIMEOUT.as_secs()
            ))),
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), KvError> {
        let command = redis::cmd("PING");
        let command = &command;
        self.run(|mut connection| async move { command.query_async::<String>(&mut connection).await })
            .await
            .map(drop)
    }

    pub(crate) async fn session_put(
        &self,
        token_hash: &str,
        account_id: &str,
        record: &[u8],
        idle_ttl: Duration,
        index_ttl: Duration,
    ) -> Result<(), KvError> {
        let session_key = self.session_key(token_hash);
        let index_key = self.account_sessions_key(account_id);
        let index_ms = millis(index_ttl);
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("SET")
            .arg(&session_key)
            .arg(record)
            .arg("PX")
            .arg(millis(idle_ttl))
            .ignore()
            .cmd("SADD")
            .arg(&index_key)
            .arg(token_hash)
            .ignore()
            // NX sets the TTL of a new set; GT then only ever raises an existing one.
            .cmd("PEXPIRE")
            .arg(&index_key)
            .arg(index_ms)
            .arg("NX")
            .ignore()
            .cmd("PEXPIRE")
            .arg(&index_key)
            .arg(index_ms)
            .arg("GT")
            .ignore();
        let pipeline = &pipeline;
        self.run(|mut connection| async move { pipeline.query_async::<()>(&mut connection).await }).await
    }

    pub(crate) async fn session_get_touch(
        &self,
        token_hash: &str,
        idle_ttl: Duration,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let mut command = redis::cmd("GETEX");
        command.arg(self.session_key(token_hash)).arg("PX").arg(millis(idle_ttl));
        let command = &command;
        self.run(|mut connection| async move { command.query_async(&mut connection).await }).await
    }

    pub(crate) async fn session_delete(&self, token_hash: &str, account_id: &str) -> Result<bool, KvError> {
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("DEL")
            .arg(self.session_key(token_hash))
            .cmd("SREM")
            .arg(self.account_sessions_key(account_id))
            .arg(token_hash)
            .ignore();
        let pipeline = &pipeline;
        let (n_deleted,): (u64,) =
            self.run(|mut connection| async move { pipeline.query_async(&mut connection).await }).await?;
        Ok(n_deleted > 0)
    }

    pub(crate) async fn sessions_delete_all(&self, account_id: &str) -> Result<Vec<String>, KvError> {
        let mut invocation = self.delete_all_sessions.prepare_invoke();
        invocation.key(self.account_sessions_key(account_id)).arg(self.session_key(""));
        let invocation = &invocation;
        self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await }).await
    }

    pub(crate) async fn counter_hit(&self, key: &str, window: Duration) -> Result<u64, KvError> {
        let counter_key = self.counter_key(key);
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("INCR")
            .arg(&counter_key)
            // NX: only a counter this INCR created (no TTL yet) gets the window.
            .cmd("PEXPIRE")
            .arg(&counter_key)
            .arg(millis(window))
            .arg("NX")
            .ignore();
        let pipeline = &pipeline;
        let (count,): (u64,) =
            self.run(|mut connection| async move { pipeline.query_async(&mut connection).await }).await?;
        Ok(count)
    }

    pub(crate) async fn counter_get(&self, key: &str) -> Result<u64, KvError> {
        let mut command = redis::cmd("GET");
        command.arg(self.counter_key(key));
        let command = &command;
        let count: Option<u64> =
            self.run(|mut connection| async move { command.query_async(&mut connection).await }).await?;
        Ok(count.unwrap_or(0))
    }

    pub(crate) async fn counter_reset(&self, key: &str) -> Result<(), KvError> {
        let mut command = redis::cmd("DEL");
        command.arg(self.counter_key(key));
        let command = &command;
        self.run(|mut connection| async move { command.query_async::<()>(&mut connection).await }).await
    }

    pub(crate) async fn publish(&self, channel: &str, payload: &[u8]) -> Result<u64, KvError> {
        let mut command = redis::cmd("PUBLISH");
        command.arg(self.channel_name(channel)).arg(payload);
        let command = &command;
        self.run(|mut connection| async move { command.query_async(&mut connection).await }).await
    }

    /// Makes the first subscription here (so the caller knows it is confirmed), then hands the
    /// connection to a spawned task that forwards and reconnects.
    pub(crate) async fn subscribe(
        &self,
        channel: &str,
        sender: mpsc::Sender<Vec<u8>>,
        shutdown: CancellationToken,
    ) -> Result<(), KvError> {
        let channel = self.channel_name(channel);
        let pubsub = tokio::time::timeout(FIRST_CONNECT_TIMEOUT, open_pubsub(&self.client, &channel))
            .await
            .map_err(|_| {
                KvError::Unavailable(format!(
                    "no subscription to Redis within {} s",
                    FIRST_CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(unavailable)?;
        let span = tracing::info_span!("kv_subscription", %channel);
        tokio::spawn(
            run_subscription(self.client.clone(), channel, pubsub, sender, shutdown).instrument(span),
        );
        Ok(())
    }
}

/// Opens a dedicated pub/sub connection and subscribes; resolves once Redis confirmed.
async fn open_pubsub(client: &Client, channel: &str) -> RedisResult<PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Forwards messages until shutdown or until the subscription is dropped, reconnecting whenever the
/// connection ends.
async fn run_subscription(
    client: Client,
    channel: String,
    mut pubsub: PubSub,
    sender: mpsc::Sender<Vec<u8>>,
    shutdown: CancellationToken,
) {
    loop {
        if forward_until_disconnected(&mut pubsub, &sender, &shutdown).await == Ended::Stop {
            return;
        }
        tracing::warn!(
            "pub/sub connection to Redis lost; reconnecting (messages published meanwhile are lost)"
        );
        match reconnect(&client, &channel, &sender, &shutdown).await {
            Some(fresh) => {
                tracing::info!("pub/sub connection to Redis restored");
                pubsub = fresh;
            }
            None => return,
        }
    }
}

/// Why [`forward_until_disconnected`] returned.
#[derive(PartialEq, Eq)]
enum Ended {
    /// Shutdown, or the subscription was dropped: the task ends.
    Stop,
    /// The connection ended: reconnect.
    Disconnected,
}

async fn forward_until_disconnected(
    pubsub: &mut PubSub,
    sender: &mpsc::Sender<Vec<u8>>,
    shutdown: &CancellationToken,
) -> Ended {
    let mut messages = pubsub.on_message();
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ended::Stop,
            () = sender.closed() => return Ended::Stop,
            message = messages.next() => match message {
                Some(message) => message,
                None => return Ended::Disconnected,
            },
        };
        match forward(sender, message.get_payload_bytes().to_vec()) {
            Forward::Sent => {}
            Forward::Dropped => tracing::warn!("subscription buffer full; message dropped"),
            Forward::Closed => return Ended::Stop,
        }
    }
}

/// Tries to subscribe again with backoff until it works (`Some`) or the task should stop (`None`).
async fn reconnect(
    client: &Client,
    channel: &str,
    sender: &mpsc::Sender<Vec<u8>>,
    shutdown: &CancellationToken,
) -> Option<PubSub> {
    let mut delay = SUBSCRIBE_BACKOFF_MIN;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = sender.closed() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        let attempt = tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, open_pubsub(client, channel));
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = sender.closed() => return None,
            result = attempt => match result {
                Ok(Ok(pubsub)) => return Some(pubsub),
                Ok(Err(error)) => tracing::debug!(%error, "pub/sub reconnect attempt failed"),
                Err(_) => tracing::debug!("pub/sub reconnect attempt timed out"),
            },
        }
        delay = (delay * 2).min(SUBSCRIBE_BACKOFF_MAX);
    }
}
