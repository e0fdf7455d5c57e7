//! Following other processes' commits: a dedicated connection that `LISTEN`s on the schema's
//! channel and feeds [`StorageAdapter::watch_log`](crate::storage::StorageAdapter::watch_log).
//!
//! Every commit sends `NOTIFY <schema>_log, '<its last position>'` inside its transaction, so
//! the notification is delivered exactly when the commit is visible, and not at all for a
//! rolled-back one. The listener task raises the watched position to the highest number it
//! hears. A connection can drop (a restarted server, a terminated backend, a network fault);
//! the task then reconnects with a growing backoff, `LISTEN`s again, and only then re-reads
//! the head position, so a commit made while it was disconnected is not missed: either it is
//! in the head it reads, or it commits after the `LISTEN` and is notified.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::storage::Position;

/// The first wait before reconnecting; doubled after each failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The notification channel of a schema (validated names need no quoting).
pub(crate) fn channel(schema: &str) -> String {
    format!("{schema}_log")
}

/// Raises the published position to `position`; it never goes backwards.
pub(crate) fn publish(published: &watch::Sender<Position>, position: Position) {
    published.send_if_modified(|current| {
        let higher = position > *current;
        if higher {
            *current = position;
        }
        higher
    });
}

/// The running listener task; dropping this stops it.
#[derive(Debug)]
pub(crate) struct Listener {
    _stop: oneshot::Sender<()>,
}

impl Listener {
    /// Starts listening for the commits of `schema` on the current tokio runtime.
    pub(crate) fn spawn(
        config: tokio_postgres::Config,
        schema: &str,
        published: Arc<watch::Sender<Position>>,
    ) -> Listener {
        let (stop, mut stopped) = oneshot::channel();
        let channel = channel(schema);
        let head_sql = format!("SELECT position FROM {schema}.head");
        tokio::spawn(async move {
            let mut backoff = BACKOFF_MIN;
            loop {
                let session = listen(&config, &channel, &head_sql, &published, &mut backoff);
                tokio::select! {
                    _ = &mut stopped => return,
                    reason = session => tracing::warn!(
                        channel, %reason, retry_in_ms = backoff.as_millis() as u64,
                        "lost the PostgreSQL notification connection; reconnecting"
                    ),
                }
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
        Listener { _stop: stop }
    }
}

/// One listening session: connects, listens, re-reads the head, then publishes notifications
/// until the connection ends. Returns why it ended.
async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
    head_sql: &str,
    published: &watch::Sender<Position>,
    backoff: &mut Duration,
) -> String {
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return format!("connecting: {e}"),
    };
    let (notifications, mut heard) = mpsc::unbounded_channel();
    // The connection must be polled for the client's queries to run and for notifications to
    // arrive; it ends (closing `notifications`) when the server goes away.
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notifications.send(n.payload().to_owned()).is_err() {
                        return "stopped".to_owned();
                    }
                }
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
        "the server closed the connection".to_owned()
    });
    let ready = async {
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        client.query_one(head_sql, &[]).await?.try_get::<_, i64>(0)
    };
    match ready.await {
        Ok(head) => {
            publish(published, u64::try_from(head).unwrap_or(0));
            *backoff = BACKOFF_MIN;
        }
        Err(e) => {
            driver.abort();
            return format!("listening: {e}");
        }
    }
    while let Some(payload) = heard.recv().await {
        // A payload that is not a position (someone else's NOTIFY) still means "look again":
        // re-read the head rather than trust it.
        match payload.parse::<Position>() {
            Ok(position) => publish(published, position),
            Err(_) => match client.query_one(head_sql, &[]).await {
                Ok(row) => {
                    if let Ok(head) = row.try_get::<_, i64>(0) {
                        publish(published, u64::try_from(head).unwrap_or(0));
                    }
                }
                Err(e) => {
                    driver.abort();
                    return format!("reading the head: {e}");
                }
            },
        }
    }
    match driver.await {
        Ok(reason) => reason,
        Err(e) => format!("the connection task failed: {e}"),
    }
}
