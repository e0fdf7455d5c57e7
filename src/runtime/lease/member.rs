//! One process's membership in a consumer group: the task that heartbeats, computes which
//! partitions this process should hold, and takes, renews and releases their leases.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use super::GroupOptions;
use super::fence::Fence;
use super::grant::{Held, Lease};
use super::partition::assigned;
use super::table::{LeaseStatus, LeaseTable};
use crate::storage::StorageError;
use crate::storage::postgres::error::from_client;

/// This process's membership in a consumer group: see the [module docs](super).
///
/// Joining starts a task (on the current Tokio runtime, with a connection of its own) that every
/// [`renew_interval`](GroupOptions::renew_interval) heartbeats, takes the leases of the
/// partitions assigned to this process and renews them, and releases those no longer assigned.
/// [`held`](Self::held) and [`watch`](Self::watch) tell which partitions are held. Dropping the
/// handle stops the task without releasing anything (as a crash would: the leases expire after
/// their time to live); [`leave`](Self::leave) releases them at once.
#[derive(Debug)]
pub struct GroupMember {
    group: Arc<str>,
    member: Arc<str>,
    partitions: u32,
    table: LeaseTable,
    ttl_ms: i64,
    held: watch::Receiver<Held>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl GroupMember {
    /// Joins consumer group `group` of the state schema `schema` on the server `config` names,
    /// as a new member with a fresh identity. Fails with
    /// [`StorageError::InvalidConfiguration`] when the group exists with another partition
    /// count, or the options are invalid; with the connection's error when the server cannot be
    /// reached.
    pub async fn join(
        config: &tokio_postgres::Config,
        schema: &str,
        group: &str,
        options: GroupOptions,
    ) -> Result<GroupMember, StorageError> {
        options.check()?;
        let table = LeaseTable::new(schema);
        let client = connect(config).await?;
        let partitions = table.register(&client, group, options.partitions).await?;
        if partitions != options.partitions {
            return Err(StorageError::InvalidConfiguration {
                reason: format!(
                    "consumer group {group:?} has {partitions} partitions, not {}: a group \
                     keeps its checkpoints per partition, so its partition count cannot change",
                    options.partitions
                ),
            });
        }
        let member: Arc<str> = Arc::from(member_id());
        let group: Arc<str> = Arc::from(group);
        let (held_tx, held) = watch::channel(Held::new());
        let (stop, stopped) = watch::channel(false);
        let task = Coordinator {
            table: table.clone(),
            config: config.clone(),
            client: Some(client),
            group: group.clone(),
            member: member.clone(),
            options,
            held: held_tx,
        };
        let task = tokio::spawn(task.run(stopped));
        Ok(GroupMember {
            group,
            member,
            partitions,
            table,
            ttl_ms: options.ttl_millis(),
            held,
            stop,
            task: Some(task),
        })
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// This member's identity (host, process id and start time): the holder the lease table
    /// shows.
    pub fn member_id(&self) -> &str {
        &self.member
    }

    /// The group's partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partitions held now, with their leases.
    pub fn held(&self) -> Held {
        self.held.borrow().clone()
    }

    /// A receiver that sees every change of the held partitions.
    pub fn watch(&self) -> watch::Receiver<Held> {
        self.held.clone()
    }

    /// The fence of the lease this member holds on `partition` now, if it holds one: what a
    /// consumer working on the partition carries.
    pub(crate) fn fence(&self, partition: u32) -> Option<Fence> {
        let epoch = self.held.borrow().get(&partition)?.epoch;
        Some(Fence {
            table: self.table.clone(),
            group: self.group.clone(),
            holder: self.member.clone(),
            partition,
            epoch,
            ttl_ms: self.ttl_ms,
            held: self.held.clone(),
        })
    }

    /// Leaves the group: stops the task, releases every lease held (so other members take
    /// them over at their next round, without waiting for them to expire) and removes this
    /// member from the live members.
    pub async fn leave(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The leases of consumer group `group` of the state schema `schema`, by partition (see
/// [`StateStore::group_leases`](crate::runtime::state::StateStore::group_leases)).
pub(crate) async fn leases(
    config: &tokio_postgres::Config,
    schema: &str,
    group: &str,
) -> Result<Vec<LeaseStatus>, StorageError> {
    let client = connect(config).await?;
    LeaseTable::new(schema).leases(&client, group).await
}

/// A member identity unique across hosts, processes and restarts.
fn member_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{host}:{}:{started:x}:{n}", std::process::id())
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, StorageError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| from_client("connect", e))?;
    tokio::spawn(connection);
    Ok(client)
}

struct Coordinator {
    table: LeaseTable,
    config: tokio_postgres::Config,
    client: Option<Client>,
    group: Arc<str>,
    member: Arc<str>,
    options: GroupOptions,
    held: watch::Sender<Held>,
}

impl Coordinator {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(error) = self.round().await {
                tracing::warn!(
                    group = &*self.group,
                    %error,
                    "consumer group round failed; retrying"
                );
                // A connection that failed is replaced at the next round.
                self.client = None;
                self.drop_expired();
            }
            tokio::select! {
                () = tokio::time::sleep(self.options.renew_interval) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        self.leave().await;
    }

    /// One round: heartbeat, then renew, take and release leases to match the assignment.
    async fn round(&mut self) -> Result<(), StorageError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(connect(&self.config).await?);
        }
        let Some(client) = self.client.as_ref() else {
            return Ok(());
        };
        let ttl = self.options.ttl_millis();
        let sent = Instant::now();
        let members = self
            .table
            .heartbeat(client, &self.group, &self.member, ttl)
            .await?;
        let wanted = assigned(self.options.partitions, &members, &self.member);
        let mut held = self.held.borrow().clone();
        // Not ours any more: stop acting on it first (runners watch `held`), then release.
        let unwanted: Vec<Lease> = held
            .values()
            .filter(|l| !wanted.contains(&l.partition))
            .copied()
            .collect();
        for lease in &unwanted {
            held.remove(&lease.partition);
        }
        if !unwanted.is_empty() {
            self.held.send_replace(held.clone());
        }
        for lease in unwanted {
            self.table
                .release(
                    client,
                    &self.group,
                    lease.partition,
                    &self.member,
                    lease.epoch,
                )
                .await?;
        }
        for partition in wanted {
            let renewed = match held.get(&partition) {
                Some(lease) => self
                    .table
                    .renew(
                        client,
                        &self.group,
                        partition,
                        &self.member,
                        lease.epoch,
                        ttl,
                    )
                    .await?
                    .then_some(lease.epoch),
                None => {
                    self.table
                        .acquire(client, &self.group, partition, &self.member, ttl)
                        .await?
                }
            };
            match renewed {
                Some(epoch) => {
                    held.insert(
                        partition,
                        Lease {
                            partition,
                            epoch,
                            valid_until: sent + self.options.lease_ttl,
                        },
                    );
                }
                None => {
                    held.remove(&partition);
                }
            }
        }
        self.held.send_replace(held);
        Ok(())
    }

    /// Forgets the leases whose validity ran out while the database could not be reached.
    fn drop_expired(&mut self) {
        self.held.send_if_modified(|held| {
            let before = held.len();
            held.retain(|_, lease| lease.is_valid());
            held.len() != before
        });
    }

    async fn leave(&mut self) {
        let held = self.held.send_replace(Held::new());
        let Some(client) = self.client.as_ref().filter(|c| !c.is_closed()) else {
            return;
        };
        for lease in held.values() {
            let _ = self
                .table
                .release(
                    client,
                    &self.group,
                    lease.partition,
                    &self.member,
                    lease.epoch,
                )
                .await;
        }
        let _ = self.table.leave(client, &self.group, &self.member).await;
    }
}
