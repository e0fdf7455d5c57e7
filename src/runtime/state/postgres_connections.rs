//! The PostgreSQL state store's connections, usable from synchronous code anywhere.
//!
//! The runtime calls its state synchronously (a queue enqueue, a view handler's reads and
//! writes inside its transaction), from plain threads, blocking tasks, and async tasks of
//! any Tokio runtime, a single-threaded one included. tokio-postgres splits a connection in
//! two: the `Connection` future does the I/O and must be driven by a Tokio runtime, while the
//! `Client`'s query futures only exchange messages with it and run on any executor. So the
//! store owns one thread running a small Tokio runtime of its own that drives every one of
//! its connections (and its notification listener), and each operation blocks the calling
//! thread on its client future (`futures::executor::block_on`). The caller's runtime is never
//! needed to make progress, so blocking it cannot deadlock.
//!

use std::future::Future;

use futures::channel::oneshot;
use tokio_postgres::{Client, NoTls};

use crate::storage::StorageError;
use crate::storage::postgres::from_state_client;

/// The connections of one state store, and the thread that drives them.
pub(crate) struct Connections {
    config: tokio_postgres::Config,
    runtime: tokio::runtime::Handle,
    /// Dropping it ends the driving thread's runtime, closing every connection.
    _stop: oneshot::Sender<()>,
}

impl Connections {
    /// Starts the driving thread for connections made with `config`.
    pub(crate) fn start(config: tokio_postgres::Config) -> Result<Connections, StorageError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| {
                StorageError::io(
                    "start the PostgreSQL state store's runtime",
                    std::path::PathBuf::new(),
                    source,
                )
            })?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("annals-pg-state".to_owned())
            .spawn(move || {
                // Runs the spawned connections until the store is dropped.
                let _ = runtime.block_on(stopped);
            })
            .map_err(|source| {
                StorageError::io(
                    "start the PostgreSQL state store's thread",
                    std::path::PathBuf::new(),
                    source,
                )
            })?;
        Ok(Connections {
            config,
            runtime: handle,
            _stop: stop,
        })
    }

    /// The settings connections are made with.
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Runs `future` on the driving thread's runtime; the returned receiver (executor-agnostic)
    /// gets its output.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (sender, receiver) = oneshot::channel();
        self.runtime.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver
    }

    /// A new connection, its I/O driven on the store's thread.
    pub(crate) async fn connect(&self) -> Result<Client, StorageError> {
        const OP: &str = "connect the PostgreSQL state store";
        let config = self.config.clone();
        let runtime = self.runtime.clone();
        let connected = self.spawn(async move {
            let (client, connection) = config.connect(NoTls).await?;
            runtime.spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        });
        match connected.await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(from_state_client(OP, e)),
            Err(_) => Err(StorageError::Closed),
        }
    }
}
