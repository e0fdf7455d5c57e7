//! The lease tables in PostgreSQL and the statements on them.
//!
//! Three tables in the state schema, created by the state store's migrations:
//! - `consumer_groups`: a group's partition count, fixed at its first use (checkpoints are kept
//!   per partition, so a group cannot be re-partitioned in place);
//! - `consumer_members`: one row per live process in a group, with the instant its heartbeat
//!   expires;
//! - `consumer_leases`: one row per partition: its holder, an epoch raised at every change of
//!   holder, and the instant the lease expires.
//!
//! Every instant is the **database's** clock (`clock_timestamp()`): processes whose clocks
//! disagree still agree on who holds what. A lease is taken only when it is free or expired,
//! and checked (and extended) by the statement that fences a commit, which locks the lease's
//! row until the commit ends: a takeover waits for a commit in flight and then sees the lease
//! extended, and a commit after a takeover finds the epoch changed and is rolled back.

use tokio_postgres::GenericClient;

use crate::storage::StorageError;
use crate::storage::postgres::error::from_client;

/// The SQL of the migration that creates the lease tables; `{schema}` stands for the schema.
pub(crate) const MIGRATION: &str = r#"
    CREATE TABLE {schema}.consumer_groups (
        consumer_group text COLLATE "C" PRIMARY KEY,
        partitions integer NOT NULL CHECK (partitions >= 1)
    );
    CREATE TABLE {schema}.consumer_members (
        consumer_group text COLLATE "C" NOT NULL,
        member text COLLATE "C" NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (consumer_group, member)
    );
    CREATE TABLE {schema}.consumer_leases (
        consumer_group text COLLATE "C" NOT NULL,
        partition integer NOT NULL CHECK (partition >= 0),
        holder text COLLATE "C" NOT NULL,
        epoch bigint NOT NULL CHECK (epoch >= 1),
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (consumer_group, partition)
    );
"#;

/// The statements on the lease tables of one schema.
#[derive(Debug, Clone)]
pub(crate) struct LeaseTable {
    register: String,
    partitions: String,
    heartbeat: String,
    members: String,
    leave: String,
    acquire: String,
    renew: String,
    release: String,
    leases: String,
}

/// One partition's lease as the lease table has it: what
/// [`StateStore::group_leases`](crate::runtime::state::StateStore::group_leases) lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseStatus {
    /// The partition.
    pub partition: u32,
    /// The member that holds or last held it
    /// ([`GroupMember::member_id`](super::GroupMember::member_id)).
    pub holder: String,
    /// The lease's epoch (raised at every change of holder).
    pub epoch: i64,
    /// Whether it has not expired yet, by the database's clock.
    pub live: bool,
}

/// `now + ttl` in the database's clock; `$n` is the time to live in milliseconds.
fn expiry(n: usize) -> String {
    format!("clock_timestamp() + ${n}::bigint * interval '1 millisecond'")
}

impl LeaseTable {
    pub(crate) fn new(schema: &str) -> Self {
        let groups = format!("{schema}.consumer_groups");
        let members = format!("{schema}.consumer_members");
        let leases = format!("{schema}.consumer_leases");
        LeaseTable {
            register: format!(
                "INSERT INTO {groups} (consumer_group, partitions) VALUES ($1, $2) \
                 ON CONFLICT (consumer_group) DO NOTHING"
            ),
            partitions: format!("SELECT partitions FROM {groups} WHERE consumer_group = $1"),
            heartbeat: format!(
                "INSERT INTO {members} (consumer_group, member, expires_at) \
                 VALUES ($1, $2, {}) \
                 ON CONFLICT (consumer_group, member) DO UPDATE SET expires_at = \
                 EXCLUDED.expires_at",
                expiry(3)
            ),
            members: format!(
                "SELECT member FROM {members} \
                 WHERE consumer_group = $1 AND expires_at > clock_timestamp() ORDER BY member"
            ),
            leave: format!("DELETE FROM {members} WHERE consumer_group = $1 AND member = $2"),
            // Free or expired: taken, with a new epoch. Still held by the asker: extended, same
            // epoch. Held by another: untouched (no row returned).
            acquire: format!(
                "INSERT INTO {leases} AS l (consumer_group, partition, holder, epoch, expires_at) \
                 VALUES ($1, $2, $3, 1, {exp}) \
                 ON CONFLICT (consumer_group, partition) DO UPDATE SET \
                   epoch = CASE WHEN l.holder = EXCLUDED.holder \
                                 AND l.expires_at > clock_timestamp() \
                            THEN l.epoch ELSE l.epoch + 1 END, \
                   holder = EXCLUDED.holder, \
                   expires_at = EXCLUDED.expires_at \
                 WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp() \
                 RETURNING epoch",
                exp = expiry(4)
            ),
            renew: format!(
                "UPDATE {leases} SET expires_at = {} \
                 WHERE consumer_group = $1 AND partition = $2 AND holder = $3 AND epoch = $4 \
                   AND expires_at > clock_timestamp() RETURNING epoch",
                expiry(5)
            ),
            release: format!(
                "UPDATE {leases} SET expires_at = clock_timestamp() \
                 WHERE consumer_group = $1 AND partition = $2 AND holder = $3 AND epoch = $4"
            ),
            leases: format!(
                "SELECT partition, holder, epoch, expires_at > clock_timestamp() FROM {leases} \
                 WHERE consumer_group = $1 ORDER BY partition"
            ),
        }
    }

    /// The statement of [`renew`](Self::renew), which returns a row when the lease is held.
    pub(crate) fn renew_sql(&self) -> &str {
        &self.renew
    }

    /// The partition count of `group`, recording `partitions` if the group is new.
    pub(crate) async fn register(
        &self,
        client: &impl GenericClient,
        group: &str,
        partitions: u32,
    ) -> Result<u32, StorageError> {
        let asked = i32::try_from(partitions).unwrap_or(i32::MAX);
        client
            .execute(&self.register, &[&group, &asked])
            .await
            .map_err(|e| from_client("register a consumer group", e))?;
        let row = client
            .query_one(&self.partitions, &[&group])
            .await
            .map_err(|e| from_client("read a consumer group", e))?;
        let found: i32 = row.get(0);
        Ok(u32::try_from(found).unwrap_or(0))
    }

    /// Records that `member` is alive for `ttl_ms` more, and returns every live member.
    pub(crate) async fn heartbeat(
        &self,
        client: &impl GenericClient,
        group: &str,
        member: &str,
        ttl_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        client
            .execute(&self.heartbeat, &[&group, &member, &ttl_ms])
            .await
            .map_err(|e| from_client("heartbeat in a consumer group", e))?;
        let rows = client
            .query(&self.members, &[&group])
            .await
            .map_err(|e| from_client("list a consumer group's members", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Removes `member` from `group`'s live members.
    pub(crate) async fn leave(
        &self,
        client: &impl GenericClient,
        group: &str,
        member: &str,
    ) -> Result<(), StorageError> {
        client
            .execute(&self.leave, &[&group, &member])
            .await
            .map_err(|e| from_client("leave a consumer group", e))?;
        Ok(())
    }

    /// Takes (or extends) the lease of `partition` for `holder`: its epoch, or `None` when
    /// another holder has it.
    pub(crate) async fn acquire(
        &self,
        client: &impl GenericClient,
        group: &str,
        partition: u32,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>, StorageError> {
        let partition = partition_param(partition);
        let row = client
            .query_opt(&self.acquire, &[&group, &partition, &holder, &ttl_ms])
            .await
            .map_err(|e| from_client("acquire a lease", e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Extends the lease `(partition, holder, epoch)` by `ttl_ms` if it is still held:
    /// whether it was. Run inside a commit's transaction, this is the fence: it locks the
    /// lease's row until the commit ends.
    pub(crate) async fn renew(
        &self,
        client: &impl GenericClient,
        group: &str,
        partition: u32,
        holder: &str,
        epoch: i64,
        ttl_ms: i64,
    ) -> Result<bool, StorageError> {
        let partition = partition_param(partition);
        let updated = client
            .execute(&self.renew, &[&group, &partition, &holder, &epoch, &ttl_ms])
            .await
            .map_err(|e| from_client("renew a lease", e))?;
        Ok(updated == 1)
    }

    /// Gives the lease up now, so that another member can take it without waiting for it to
    /// expire.
    pub(crate) async fn release(
        &self,
        client: &impl GenericClient,
        group: &str,
        partition: u32,
        holder: &str,
        epoch: i64,
    ) -> Result<(), StorageError> {
        let partition = partition_param(partition);
        client
            .execute(&self.release, &[&group, &partition, &holder, &epoch])
            .await
            .map_err(|e| from_client("release a lease", e))?;
        Ok(())
    }

    /// Every lease of `group`, by partition.
    pub(crate) async fn leases(
        &self,
        client: &impl GenericClient,
        group: &str,
    ) -> Result<Vec<LeaseStatus>, StorageError> {
        let rows = client
            .query(&self.leases, &[&group])
            .await
            .map_err(|e| from_client("list a consumer group's leases", e))?;
        Ok(rows
            .iter()
            .map(|r| LeaseStatus {
                partition: u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
                holder: r.get(1),
                epoch: r.get(2),
                live: r.get(3),
            })
            .collect())
    }
}

fn partition_param(partition: u32) -> i32 {
    i32::try_from(partition).unwrap_or(i32::MAX)
}
